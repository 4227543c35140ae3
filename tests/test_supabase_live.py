"""Opt-in: docutrain against a real Supabase project.

Runs only when SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are set in the
environment (and `-m live` is not excluded). The project must have the schema
from `docutrain schema` applied, rendered for the offline embedder (384
dimensions) unless DOCUTRAIN_EMBEDDER/OPENAI_API_KEY say otherwise, e.g.:

    docutrain schema | psql "$SUPABASE_DB_URL"        # or paste into the SQL editor
    SUPABASE_URL=https://<ref>.supabase.co SUPABASE_SERVICE_ROLE_KEY=... \\
        .venv/bin/python -m pytest -m live tests/test_supabase_live.py

The storage bucket (storage_bucket, default "documents") must exist. The
test creates one user_documents row and one object under
docutrain-live-test/ in that bucket, and deletes both again.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from docutrain_cli.config import load_settings
from docutrain_cli.cli.doctor import run_checks
from docutrain_cli.status.outbox import Outbox
from docutrain_cli.pipeline.models import vector_dimensions
from docutrain_cli.supabase.chunks import SupabaseChunks
from docutrain_cli.supabase.client import make_client
from docutrain_cli.status.supabase import SupabaseStatusDelivery
from docutrain_cli.supabase.storage import download
from docutrain_cli.store.local import ChunkRow

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not (os.environ.get("SUPABASE_URL") and os.environ.get("SUPABASE_SERVICE_ROLE_KEY")),
        reason="set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY to run against a real Supabase project",
    ),
]


def test_live_round_trip(tmp_path):
    settings = load_settings({"store": str(tmp_path / "docutrain.db")})
    failed = [c for c in run_checks(settings) if not c.ok]
    assert not failed, failed
    client = make_client(settings)
    sink = SupabaseChunks(settings, client)
    table = client.table(settings.documents_table)
    doc = table.insert({"status": "pending", "storage_path": "docutrain-live-test/none.pdf"}).execute().data[0]["id"]
    try:
        dims = vector_dimensions(settings)
        rows = [ChunkRow(i, 1, 1, 3, f"live chunk {i}", [1.0 if j == i else 0.0 for j in range(dims)]) for i in range(3)]
        assert sink.replace_chunks(doc, None, rows) == 3
        assert sink.replace_chunks(doc, None, rows[:2]) == 2
        assert [r["chunk_index"] for r in sink.chunk_rows(doc)] == [0, 1]
        hits = client.rpc(
            "match_document_chunks",
            {"query_embedding": rows[1].embedding, "match_count": 1, "filter_document_id": doc},
        ).execute().data
        assert hits[0]["chunk_index"] == 1

        outbox = Outbox(tmp_path / "live.outbox")
        outbox.record(doc, "processing")
        outbox.record(doc, "ready", page_count=1, chunk_count=2)
        assert outbox.flush(SupabaseStatusDelivery(settings)).delivered == 1
        row = table.select("status,chunk_count").eq("id", doc).execute().data[0]
        assert row == {"status": "ready", "chunk_count": 2}

        bucket = settings.storage_bucket
        name = f"docutrain-live-test/{uuid.uuid4()}.txt"
        storage = client.storage.from_(bucket)
        storage.upload(name, b"docutrain live test " + str(time.time()).encode())
        try:
            assert download(client, name, bucket=bucket, dest_dir=tmp_path).read_bytes().startswith(b"docutrain live test")
        finally:
            storage.remove([name])
    finally:
        table.delete().eq("id", doc).execute()

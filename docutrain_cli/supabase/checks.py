"""`docutrain doctor`'s checks of a Supabase project: reachable, tables and
columns, the match function, the vector size, the storage bucket. Each takes
the settings and one client and returns a Check; cli/doctor.py runs them (and
uses the same Check for its own checks of the settings and of OpenAI).
"""

from __future__ import annotations

import dataclasses
import json

from docutrain_cli.config import Settings
from docutrain_cli.errors import PermanentError
from docutrain_cli.pipeline.models import vector_dimensions
from docutrain_cli.supabase.client import SCHEMA_FIX, classify

DOCUMENT_COLUMNS = (
    "id", "user_id", "status", "storage_path", "error_message",
    "page_count", "chunk_count", "processed_at", "updated_at",
)
CHUNK_COLUMNS = (
    "id", "user_document_id", "user_id", "chunk_index", "content",
    "page_start", "page_end", "token_count", "embedding",
)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _select(client, table: str, columns: str):
    try:
        return client.table(table).select(columns).limit(0).execute()
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, f"select from {table}") from None


def reachable(settings: Settings, client) -> Check:
    try:
        _select(client, settings.documents_table, "id")
    except PermanentError as exc:
        if "does not exist" not in str(exc):
            raise
        # Reached it: the table question is the next check's to answer.
    return Check("Supabase reachable", True, f"{settings.supabase_url} answers")


def columns(settings: Settings, client, table: str, expected: tuple[str, ...]) -> Check:
    name = f"table {table}"
    try:
        _select(client, table, ",".join(expected))
        return Check(name, True, f"has {', '.join(expected)}")
    except PermanentError as exc:
        if "table does not exist" in str(exc):
            return Check(name, False, f"table {table} does not exist", SCHEMA_FIX)
        if "column does not exist" not in str(exc):
            raise
    missing = []
    for column in expected:  # one at a time, to name each missing one
        try:
            _select(client, table, column)
        except PermanentError as exc:
            if "does not exist" not in str(exc):
                raise
            missing.append(column)
    return Check(name, False, f"missing column(s): {', '.join(missing)}", SCHEMA_FIX)


def match_function(settings: Settings, client) -> Check:
    name = "function match_document_chunks"
    params = {"query_embedding": [0.0] * vector_dimensions(settings), "match_count": 0}
    try:
        client.rpc("match_document_chunks", params).execute()
    except Exception as exc:  # noqa: BLE001
        error = classify(exc, "call match_document_chunks")
        if "does not exist" in str(error):
            return Check(name, False, "function match_document_chunks does not exist", SCHEMA_FIX)
        raise error from None
    return Check(name, True, "callable")


def vector_size(settings: Settings, client) -> Check:

    want = vector_dimensions(settings)
    table = settings.chunks_table
    try:
        rows = client.table(table).select("embedding").limit(1).execute().data
    except Exception as exc:  # noqa: BLE001
        error = classify(exc, f"select from {table}")
        if "does not exist" in str(error):
            return Check("vector size", False, f"cannot read {table}.embedding", SCHEMA_FIX)
        raise error from None
    if not rows:
        return Check("vector size", True, f"expecting {want}; {table} has no rows yet to compare")
    value = rows[0].get("embedding")
    have = len(json.loads(value) if isinstance(value, str) else value or [])
    if have != want:
        return Check(
            "vector size", False,
            f"{table}.embedding holds {have}-dimension vectors, this configuration makes {want}",
            "use the embedding model the table was made for, or re-create the column with `docutrain schema`'s size",
        )
    return Check("vector size", True, f"{want} dimensions, matches {table}")


def bucket(settings: Settings, client) -> Check:
    name = f"storage bucket {settings.storage_bucket}"
    try:
        client.storage.get_bucket(settings.storage_bucket)
    except Exception as exc:  # noqa: BLE001
        error = classify(exc, f"get storage bucket {settings.storage_bucket!r}")
        if isinstance(error, PermanentError) and ("404" in str(error) or "not found" in str(error).lower()):
            return Check(
                name, False, f"bucket {settings.storage_bucket!r} does not exist",
                "create it in Supabase Storage, or set storage_bucket (DOCUTRAIN_STORAGE_BUCKET) to the bucket uploads go to",
            )
        raise error from None
    return Check(name, True, "exists")

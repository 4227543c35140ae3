"""Supabase status delivery, chunk rows and Storage downloads, through the
real `supabase` client against the local PostgREST/Storage stand-in.
Assertions are on the rows the server ends with and on the requests it
received. (Pull: test_supabase_pull.py; doctor: test_doctor.py.)"""

from __future__ import annotations

import time

import pytest

from docutrain_cli.errors import PermanentError, TransientError
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.status.outbox import StatusChange
from docutrain_cli.status.recorder import StatusRecorder
from docutrain_cli.store.local import ChunkRow, LocalStore
from docutrain_cli.supabase import chunks as chunks_module
from docutrain_cli.supabase.chunks import SupabaseChunks
from docutrain_cli.supabase.client import make_client
from docutrain_cli.status.supabase import SupabaseStatusDelivery
from docutrain_cli.supabase.storage import download


def chunks_table(settings, timeout: float = 15.0) -> SupabaseChunks:
    return SupabaseChunks(settings, make_client(settings, timeout))


def chunks(n: int, dims: int = 4, tag: str = "v1") -> list[ChunkRow]:
    return [
        ChunkRow(i, i + 1, i + 1, 10 + i, f"{tag} chunk {i}", [float(i + 1), 0.5, 0.25, 0.125][:dims])
        for i in range(n)
    ]


def test_status_flow_pending_processing_ready_lands(supabase_standin, supabase_settings):
    project = supabase_standin.project
    doc = project.add_document("pending", storage_path="u1/a.pdf")
    job = Job(id=1, source="supabase://documents/u1/a.pdf", document_id=doc, user_id=project.document(doc)["user_id"])
    recorder = StatusRecorder(supabase_settings)

    recorder.processing(job)
    assert project.document(doc)["status"] == "pending"  # outbox first, Supabase on flush
    assert recorder.flush() == 1
    assert project.document(doc)["status"] == "processing"

    recorder.ready(job, JobResult(pages=3, chunks=7))
    assert recorder.backlog() == 1
    assert recorder.flush() == 1
    row = project.document(doc)
    assert (row["status"], row["page_count"], row["chunk_count"], row["error_message"]) == ("ready", 3, 7, None)
    assert row["processed_at"] is not None
    assert recorder.backlog() == 0 and recorder.last_error() is None
    local = LocalStore(supabase_settings.store).get_document(doc)
    assert (local["status"], local["page_count"], local["chunk_count"]) == ("ready", 3, 7)

    # Every request carried the key the way Supabase wants it.
    for request in supabase_standin.requests("PATCH", "/rest/v1/user_documents"):
        assert request.headers["apikey"] == supabase_standin.key
        assert request.headers["authorization"] == f"Bearer {supabase_standin.key}"
    recorder.close()


def test_error_status_carries_the_message_and_clears_it_on_a_later_success(supabase_standin, supabase_settings):
    project = supabase_standin.project
    doc = project.add_document("pending")
    job = Job(id=1, source="x.pdf", document_id=doc)
    recorder = StatusRecorder(supabase_settings)
    recorder.error(job, "x.pdf: encrypted PDF, no password given")
    recorder.flush()
    assert project.document(doc)["status"] == "error"
    assert project.document(doc)["error_message"] == "x.pdf: encrypted PDF, no password given"
    recorder.ready(job, JobResult(pages=1, chunks=1))
    recorder.flush()
    assert project.document(doc)["status"] == "ready"
    assert project.document(doc)["error_message"] is None
    recorder.close()


def test_jobs_without_a_document_id_stay_local(supabase_standin, supabase_settings):
    recorder = StatusRecorder(supabase_settings)
    job = Job(id=1, source="/tmp/local.pdf")
    recorder.processing(job)
    recorder.ready(job, JobResult(pages=1, chunks=2))
    assert recorder.backlog() == 0
    assert recorder.flush() == 0
    assert supabase_standin.count() == 0
    assert LocalStore(supabase_settings.store).get_document("/tmp/local.pdf")["status"] == "ready"
    recorder.close()


def test_chunk_replace_is_idempotent_batched_and_a_shorter_rerun_removes_the_tail(
    supabase_standin, supabase_settings, monkeypatch
):
    monkeypatch.setattr(chunks_module, "CHUNK_BATCH_ROWS", 4)
    project = supabase_standin.project
    doc, other = project.add_document("processing"), project.add_document("processing")
    sink = chunks_table(supabase_settings)
    sink.replace_chunks(other, None, chunks(3, tag="other"))

    assert sink.replace_chunks(doc, "6f1b3a8e-3c2d-4e5f-8a9b-0c1d2e3f4a5b", chunks(10)) == 10
    posts = supabase_standin.count("POST", "/rest/v1/document_chunks")
    assert posts == 1 + 3  # 10 rows in batches of at most 4
    assert sink.replace_chunks(doc, "6f1b3a8e-3c2d-4e5f-8a9b-0c1d2e3f4a5b", chunks(10)) == 10  # duplicate delivery
    rows = sink.chunk_rows(doc)
    assert [r["chunk_index"] for r in rows] == list(range(10))
    assert len(project.rows("document_chunks")) == 13  # one set each, nothing doubled

    assert sink.replace_chunks(doc, None, chunks(4, tag="v2")) == 4  # shorter re-run
    rows = sink.chunk_rows(doc)
    assert [(r["chunk_index"], r["content"]) for r in rows] == [(i, f"v2 chunk {i}") for i in range(4)]
    assert [r["content"] for r in sink.chunk_rows(other)] == [f"other chunk {i}" for i in range(3)]
    stored = next(r for r in project.rows("document_chunks") if r["user_document_id"] == doc)
    assert stored["embedding"] == [1.0, 0.5, 0.25, 0.125]

    assert sink.replace_chunks(doc, None, []) == 0  # nothing left of an empty re-run
    assert sink.chunk_rows(doc) == []


def test_500_on_chunk_upload_is_transient_and_names_the_table(supabase_standin, supabase_settings):
    doc = supabase_standin.project.add_document("processing")
    supabase_standin.fail("POST", "/rest/v1/document_chunks", 500, times=1)
    with pytest.raises(TransientError, match="document_chunks"):
        chunks_table(supabase_settings).replace_chunks(doc, None, chunks(2))
    supabase_standin.fail("POST", "/rest/v1/document_chunks", 429, times=1)
    with pytest.raises(TransientError):
        chunks_table(supabase_settings).replace_chunks(doc, None, chunks(2))
    assert chunks_table(supabase_settings).replace_chunks(doc, None, chunks(2)) == 2


def test_schema_errors_are_permanent_and_name_table_and_column(supabase_standin, supabase_settings):
    project = supabase_standin.project
    doc = project.add_document("processing")
    project.tables["document_chunks"].columns.pop("token_count")
    with pytest.raises(PermanentError, match="token_count.*document_chunks.*docutrain schema"):
        chunks_table(supabase_settings).replace_chunks(doc, None, chunks(1))
    with pytest.raises(PermanentError, match="table does not exist.*nope"):
        chunks_table(supabase_settings.replace(chunks_table="nope")).replace_chunks(doc, None, chunks(1))


def test_a_wrong_key_is_permanent_and_never_echoed(supabase_standin, supabase_settings):
    settings = supabase_settings.replace(supabase_service_role_key="wrong-key-that-must-not-leak")
    with pytest.raises(PermanentError) as info:
        SupabaseStatusDelivery(settings).deliver(StatusChange(supabase_standin.project.add_document(), "ready", time.time()))
    assert "Invalid API key" in str(info.value)
    assert "wrong-key" not in str(info.value)


def test_unreachable_supabase_is_transient(supabase_standin, supabase_settings):
    supabase_standin.down()
    with pytest.raises(TransientError, match="cannot connect"):
        chunks_table(supabase_settings).replace_chunks("0f8fad5b-d9cb-469f-a165-70867728950e", None, chunks(1))


def test_download_streams_the_object_and_a_missing_one_is_permanent(supabase_standin, supabase_settings, tmp_path):
    supabase_standin.project.put_object("documents", "u1/deep/file name.pdf", b"%PDF-1.7 body" * 1000)
    client = make_client(supabase_settings)
    path = download(client, "u1/deep/file name.pdf", bucket="documents", dest_dir=tmp_path)
    assert path.read_bytes() == b"%PDF-1.7 body" * 1000
    with pytest.raises(PermanentError, match="not found in storage bucket 'documents'"):
        download(client, "u1/missing.pdf", bucket="documents", dest_dir=tmp_path)
    with pytest.raises(PermanentError, match="too large"):
        download(client, "u1/deep/file name.pdf", bucket="documents", dest_dir=tmp_path, max_bytes=100)
    supabase_standin.fail("GET", "/storage/v1/object", 503, times=1)
    with pytest.raises(TransientError):
        download(client, "u1/deep/file name.pdf", bucket="documents", dest_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # failures leave no temp files


def test_processing_never_takes_a_finished_row_back(supabase_standin, supabase_settings):
    """A document run again after it finished (at-least-once delivery, or a
    pull that saw the row `pending` while its `ready` waited in the outbox):
    the app never sees ready/error go back to processing."""
    project = supabase_standin.project
    recorder = StatusRecorder(supabase_settings)
    for finished in ("ready", "error"):
        doc = project.add_document(finished)
        recorder.processing(Job(id=1, source="supabase://documents/x.pdf", document_id=doc))
        recorder.flush()
        assert project.document(doc)["status"] == finished
        assert recorder.backlog() == 0  # delivered as "matched no row", not kept
    doc = project.add_document("pending")
    recorder.processing(Job(id=2, source="supabase://documents/y.pdf", document_id=doc))
    recorder.flush()
    assert project.document(doc)["status"] == "processing"
    recorder.close()

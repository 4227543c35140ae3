"""The Supabase sink, pull and doctor, through the real `supabase` client
against the local PostgREST/Storage stand-in. Assertions are on the rows the
server ends with and on the requests it received."""

from __future__ import annotations

import time

import pytest

from docutrain_cli.doctor import run_checks
from docutrain_cli.errors import PermanentError, TransientError
from docutrain_cli.jobs import Job
from docutrain_cli.pull import pending_documents, pending_jobs
from docutrain_cli.sinks import supabase as sink_module
from docutrain_cli.sinks.supabase import StatusChange, SupabaseSink, parse_source
from docutrain_cli.status import StatusRecorder
from docutrain_cli.store import ChunkRow, LocalStore


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

    recorder.ready(job, {"pages": 3, "chunks": 7})
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
    recorder.ready(job, {"pages": 1, "chunks": 1})
    recorder.flush()
    assert project.document(doc)["status"] == "ready"
    assert project.document(doc)["error_message"] is None
    recorder.close()


def test_jobs_without_a_document_id_stay_local(supabase_standin, supabase_settings):
    recorder = StatusRecorder(supabase_settings)
    job = Job(id=1, source="/tmp/local.pdf")
    recorder.processing(job)
    recorder.ready(job, {"pages": 1, "chunks": 2})
    assert recorder.backlog() == 0
    assert recorder.flush() == 0
    assert supabase_standin.count() == 0
    assert LocalStore(supabase_settings.store).get_document("/tmp/local.pdf")["status"] == "ready"
    recorder.close()


def test_chunk_replace_is_idempotent_batched_and_a_shorter_rerun_removes_the_tail(
    supabase_standin, supabase_settings, monkeypatch
):
    monkeypatch.setattr(sink_module, "CHUNK_BATCH_ROWS", 4)
    project = supabase_standin.project
    doc, other = project.add_document("processing"), project.add_document("processing")
    sink = SupabaseSink(supabase_settings)
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
        SupabaseSink(supabase_settings).replace_chunks(doc, None, chunks(2))
    supabase_standin.fail("POST", "/rest/v1/document_chunks", 429, times=1)
    with pytest.raises(TransientError):
        SupabaseSink(supabase_settings).replace_chunks(doc, None, chunks(2))
    assert SupabaseSink(supabase_settings).replace_chunks(doc, None, chunks(2)) == 2


def test_schema_errors_are_permanent_and_name_table_and_column(supabase_standin, supabase_settings):
    project = supabase_standin.project
    doc = project.add_document("processing")
    project.tables["document_chunks"].columns.pop("token_count")
    with pytest.raises(PermanentError, match="token_count.*document_chunks.*docutrain schema"):
        SupabaseSink(supabase_settings).replace_chunks(doc, None, chunks(1))
    with pytest.raises(PermanentError, match="table does not exist.*nope"):
        SupabaseSink(supabase_settings.replace(chunks_table="nope")).replace_chunks(doc, None, chunks(1))


def test_a_wrong_key_is_permanent_and_never_echoed(supabase_standin, supabase_settings):
    settings = supabase_settings.replace(supabase_service_role_key="wrong-key-that-must-not-leak")
    with pytest.raises(PermanentError) as info:
        SupabaseSink(settings).push_status(StatusChange(supabase_standin.project.add_document(), "ready", time.time()))
    assert "Invalid API key" in str(info.value)
    assert "wrong-key" not in str(info.value)


def test_unreachable_supabase_is_transient(supabase_standin, supabase_settings):
    supabase_standin.down()
    with pytest.raises(TransientError, match="cannot connect"):
        SupabaseSink(supabase_settings).replace_chunks("0f8fad5b-d9cb-469f-a165-70867728950e", None, chunks(1))


def test_slow_supabase_times_out_as_transient(supabase_standin, supabase_settings):
    supabase_standin.slow(2.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        SupabaseSink(supabase_settings, timeout=0.5).pending_documents()
    assert time.monotonic() - started < 1.9


def test_download_streams_the_object_and_a_missing_one_is_permanent(supabase_standin, supabase_settings, tmp_path):
    supabase_standin.project.put_object("documents", "u1/deep/file name.pdf", b"%PDF-1.7 body" * 1000)
    sink = SupabaseSink(supabase_settings)
    path = sink.download("u1/deep/file name.pdf", dest_dir=tmp_path)
    assert path.read_bytes() == b"%PDF-1.7 body" * 1000
    with pytest.raises(PermanentError, match="not found in storage bucket 'documents'"):
        sink.download("u1/missing.pdf", dest_dir=tmp_path)
    with pytest.raises(PermanentError, match="too large"):
        sink.download("u1/deep/file name.pdf", dest_dir=tmp_path, max_bytes=100)
    supabase_standin.fail("GET", "/storage/v1/object", 503, times=1)
    with pytest.raises(TransientError):
        sink.download("u1/deep/file name.pdf", dest_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # failures leave no temp files


def test_pull_returns_only_pending_rows_and_jobs_for_them(supabase_standin, supabase_settings):
    project = supabase_standin.project
    pending = {project.add_document("pending", storage_path=f"u/{i}.pdf") for i in range(5)}
    for status in ("processing", "ready", "error"):
        project.add_document(status, storage_path="u/other.pdf")
    no_file = project.add_document("pending", storage_path=None)

    rows = pending_documents(supabase_settings)
    assert {r["id"] for r in rows} == pending | {no_file}
    assert set(rows[0]) == {"id", "user_id", "storage_path"}
    assert len(pending_documents(supabase_settings, limit=2)) == 2

    jobs = pending_jobs(supabase_settings)
    assert {j.document_id for j in jobs} == pending  # nothing to download: skipped
    job = next(j for j in jobs)
    assert parse_source(job.source) == ("documents", project.document(job.document_id)["storage_path"])
    assert job.user_id == project.document(job.document_id)["user_id"]


def test_pull_pages_through_many_rows(supabase_standin, supabase_settings):
    for i in range(25):
        supabase_standin.project.add_document("pending", storage_path=f"u/{i}.pdf")
    rows = SupabaseSink(supabase_settings).pending_documents(page_size=10)
    assert len({r["id"] for r in rows}) == 25
    assert supabase_standin.count("GET", "/rest/v1/user_documents") == 3


def test_doctor_passes_on_a_complete_project(supabase_standin, supabase_settings):
    checks = run_checks(supabase_settings)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert supabase_standin.key not in repr(checks)


def test_doctor_reports_a_missing_table_column_function_and_bucket_with_fixes(supabase_standin, supabase_settings):
    project = supabase_standin.project
    del project.tables["document_chunks"]
    project.tables["user_documents"].columns.pop("chunk_count")
    project.functions.clear()
    checks = {c.name: c for c in run_checks(supabase_settings.replace(storage_bucket="uploads"))}
    assert checks["Supabase reachable"].ok
    table = checks["table document_chunks"]
    assert not table.ok and "does not exist" in table.detail and "docutrain schema" in table.fix
    assert not checks["table user_documents"].ok and "chunk_count" in checks["table user_documents"].detail
    assert not checks["function match_document_chunks"].ok
    assert not checks["storage bucket uploads"].ok and "create it" in checks["storage bucket uploads"].fix


def test_doctor_says_when_supabase_is_unreachable_or_the_key_is_the_anon_one(supabase_standin, supabase_settings):
    supabase_standin.down()
    checks = {c.name: c for c in run_checks(supabase_settings, timeout=2)}
    assert not checks["Supabase reachable"].ok and "cannot connect" in checks["Supabase reachable"].detail
    anon = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl"  # {"role":"anon"}
    checks = {c.name: c for c in run_checks(supabase_settings.replace(supabase_service_role_key=anon), timeout=2)}
    assert not checks["Supabase settings"].ok and "anon" in checks["Supabase settings"].detail
    assert anon not in repr(checks)


def test_doctor_finds_a_vector_size_mismatch(supabase_standin, supabase_settings):
    doc = supabase_standin.project.add_document("ready")
    SupabaseSink(supabase_settings).replace_chunks(doc, None, chunks(1))  # 4-d vectors
    check = {c.name: c for c in run_checks(supabase_settings)}["vector size"]
    assert not check.ok and "4-dimension" in check.detail and "384" in check.detail


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

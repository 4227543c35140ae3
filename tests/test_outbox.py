"""The status outbox: nothing lost, nothing out of order, through outages,
refusals and a killed process. Real SQLite files, the real supabase client,
the PostgREST stand-in."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

from harness import ROOT, child_env
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.paths import outbox_path
from docutrain_cli.status.outbox import Outbox
from docutrain_cli.status.supabase import SupabaseStatusDelivery
from docutrain_cli.status.recorder import StatusRecorder
from docutrain_cli.status.reports import sync



def statuses_sent(standin, doc: str) -> list[str]:
    """The status of every PATCH the server received for one document, in order."""
    return [
        r.json()["status"]
        for r in standin.requests("PATCH", "/rest/v1/user_documents")
        if f"id=eq.{doc}" in r.query
    ]


def processing(project, settings, count: int) -> tuple[list[str], Outbox]:
    """`count` pending documents and an outbox holding a `processing` change for each."""
    docs = [project.add_document("pending") for _ in range(count)]
    outbox = Outbox.for_store(settings.store)
    for doc in docs:
        outbox.record(doc, "processing")
    return docs, outbox


def test_coalesces_to_the_newest_change_per_document(supabase_standin, supabase_settings):
    project = supabase_standin.project
    docs, outbox = processing(project, supabase_settings, 3)
    outbox.record(docs[0], "error", error_message="attempt 1 failed")
    outbox.record(docs[0], "processing")
    outbox.record(docs[0], "ready", page_count=2, chunk_count=5)
    assert outbox.backlog() == 3 and outbox.pending_changes() == 6

    result = outbox.flush(SupabaseStatusDelivery(supabase_settings))
    assert (result.delivered, result.error) == (3, None)
    assert statuses_sent(supabase_standin, docs[0]) == ["ready"]
    assert [project.document(d)["status"] for d in docs] == ["ready", "processing", "processing"]
    assert outbox.backlog() == 0 and outbox.pending_changes() == 0


def test_supabase_down_for_a_whole_run_then_back_loses_nothing_and_regresses_nothing(
    supabase_standin, supabase_settings
):
    project = supabase_standin.project
    docs = [project.add_document("pending") for _ in range(20)]
    jobs = [Job(id=i, source=f"/u/{i}.pdf", document_id=d) for i, d in enumerate(docs)]
    recorder = StatusRecorder(supabase_settings)

    # The first few statuses get out before the outage.
    for job in jobs[:5]:
        recorder.processing(job)
    assert recorder.flush() == 5
    supabase_standin.down()

    expected = {}
    for i, job in enumerate(jobs):
        if i >= 5:
            recorder.processing(job)
        assert recorder.flush(deadline_seconds=1, force=True) == 0  # never raises
        if i % 4 == 3:
            recorder.error(job, f"/u/{i}.pdf: not a PDF")
            expected[job.document_id] = "error"
        else:
            recorder.ready(job, JobResult(pages=i + 1, chunks=2 * i + 1))
            expected[job.document_id] = "ready"
    assert recorder.backlog() == 20
    message, at = recorder.last_error()
    assert "cannot connect" in message and time.time() - at < 60
    # A non-forced flush right after a failure backs off without a request.
    supabase_standin.up()
    before = supabase_standin.count()
    assert recorder.flush() == 0 and supabase_standin.count() == before
    assert recorder.last_result.skipped.startswith("backing off")

    assert recorder.flush(force=True) == 20
    assert recorder.backlog() == 0 and recorder.last_error() is None
    for i, doc in enumerate(docs):
        row = project.document(doc)
        assert row["status"] == expected[doc]
        sent = statuses_sent(supabase_standin, doc)
        # Once a final state went out, nothing older followed it.
        assert sent[-1] == expected[doc] and "processing" not in sent[sent.index(expected[doc]) :]
        if expected[doc] == "ready":
            assert (row["page_count"], row["chunk_count"]) == (i + 1, 2 * i + 1)
        else:
            assert row["error_message"] == f"/u/{i}.pdf: not a PDF"
    recorder.close()


def test_a_5xx_in_the_middle_of_a_batch_keeps_the_rest_in_order(supabase_standin, supabase_settings):
    project = supabase_standin.project
    docs, outbox = processing(project, supabase_settings, 6)
    delivery = SupabaseStatusDelivery(supabase_settings)
    # Let three through, then answer 503 to everything.
    original = delivery.deliver
    calls = []

    def push(change):
        calls.append(change.document_id)
        if len(calls) == 4:
            supabase_standin.fail("PATCH", "/rest/v1/user_documents", 503)
        return original(change)

    delivery.deliver = push
    result = outbox.flush(delivery)
    assert result.delivered == 3 and "503" in result.error
    assert outbox.backlog() == 3
    for doc in docs[3:]:
        outbox.record(doc, "ready", page_count=1, chunk_count=1)
    supabase_standin.heal()
    result = outbox.flush(SupabaseStatusDelivery(supabase_settings), force=True)
    assert result.delivered == 3 and result.error is None
    assert [project.document(d)["status"] for d in docs] == ["processing"] * 3 + ["ready"] * 3
    # The one that failed was tried again with its newest state; the flush
    # stopped at the failure, so the rest only ever saw their newest.
    assert statuses_sent(supabase_standin, docs[3]) == ["processing", "ready"]
    for doc in docs[4:]:
        assert statuses_sent(supabase_standin, doc) == ["ready"]


def test_a_stale_processing_from_another_machine_does_not_overwrite_ready(supabase_standin, supabase_settings, tmp_path):
    project = supabase_standin.project
    doc = project.add_document("pending")
    machine_a = Outbox(tmp_path / "a.outbox")
    machine_b = Outbox(tmp_path / "b.outbox")
    started_on_a = time.time() - 30  # A began, lost its lease and its network
    machine_b.record(doc, "processing", at=started_on_a + 5)
    machine_b.record(doc, "ready", page_count=1, chunk_count=3, at=started_on_a + 20)
    assert machine_b.flush(SupabaseStatusDelivery(supabase_settings)).delivered == 1
    machine_a.record(doc, "processing", at=started_on_a)
    result = machine_a.flush(SupabaseStatusDelivery(supabase_settings))
    assert (result.delivered, result.dropped) == (0, 1)
    assert project.document(doc)["status"] == "ready"
    assert machine_a.backlog() == 0  # superseded: nothing left to retry
    # A later run of the finished document (at-least-once) leaves it ready too.
    machine_a.record(doc, "processing")
    assert machine_a.flush(SupabaseStatusDelivery(supabase_settings)).dropped == 1
    assert project.document(doc)["status"] == "ready"
    # A genuinely new attempt (the app set the row back to pending) goes through.
    with project.lock:
        next(r for r in project.tables["user_documents"].rows if r["id"] == doc)["status"] = "pending"
    machine_a.record(doc, "processing")
    assert machine_a.flush(SupabaseStatusDelivery(supabase_settings)).delivered == 1
    assert project.document(doc)["status"] == "processing"


def test_a_refused_change_is_kept_and_delivered_once_the_schema_is_fixed(supabase_standin, supabase_settings):
    project = supabase_standin.project
    ok_doc, doc = project.add_document("pending"), project.add_document("pending")
    column = project.tables["user_documents"].columns.pop("error_message")
    outbox = Outbox.for_store(supabase_settings.store)
    outbox.record(doc, "error", error_message="bad file")
    result = outbox.flush(SupabaseStatusDelivery(supabase_settings))
    assert result.refused == 1 and outbox.backlog() == 1
    assert "error_message" in outbox.info()["last_error"]
    outbox.record(ok_doc, "processing")  # other documents still flow
    # error_message is part of every body, so this one is refused too, and kept.
    assert outbox.flush(SupabaseStatusDelivery(supabase_settings)).refused == 1
    assert outbox.backlog() == 2

    project.tables["user_documents"].columns["error_message"] = column
    before = supabase_standin.count("PATCH")
    outbox.flush(SupabaseStatusDelivery(supabase_settings))  # refused rows wait (backoff)...
    assert supabase_standin.count("PATCH") == before
    result = outbox.flush(SupabaseStatusDelivery(supabase_settings), force=True)  # ...`docutrain sync` does not
    assert result.delivered == 2 and outbox.backlog() == 0
    assert project.document(doc)["error_message"] == "bad file"


def test_a_deleted_row_is_dropped_not_retried_forever(supabase_standin, supabase_settings):
    outbox = Outbox.for_store(supabase_settings.store)
    outbox.record("0f8fad5b-d9cb-469f-a165-70867728950e", "ready", page_count=1, chunk_count=1)
    result = outbox.flush(SupabaseStatusDelivery(supabase_settings))
    assert (result.delivered, result.dropped, outbox.backlog()) == (0, 1, 0)


def test_changes_survive_a_killed_process(supabase_standin, supabase_settings):
    docs = [supabase_standin.project.add_document("pending") for _ in range(5)]
    script = (
        "import os, signal, sys\n"
        "from docutrain_cli.status.outbox import Outbox\n"
        "box = Outbox(sys.argv[1])\n"
        "for doc in sys.argv[2:]:\n"
        "    box.record(doc, 'processing')\n"
        "    box.record(doc, 'ready', page_count=1, chunk_count=4)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    path = outbox_path(supabase_settings.store)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path), *docs], cwd=ROOT, env=child_env()
    )
    assert proc.returncode == -9
    report = sync(supabase_settings)
    assert report["delivered"] == 5 and report["backlog"] == 0
    assert {supabase_standin.project.document(d)["status"] for d in docs} == {"ready"}


def test_one_flusher_at_a_time(supabase_standin, supabase_settings):
    doc = supabase_standin.project.add_document("pending")
    outbox = Outbox.for_store(supabase_settings.store)
    outbox.record(doc, "ready")
    lock_path = outbox.path.with_name(outbox.path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = outbox.flush(SupabaseStatusDelivery(supabase_settings), force=True)
        assert result.sent == 0 and "another process" in result.skipped
        assert supabase_standin.count() == 0
    finally:
        os.close(fd)
    assert outbox.flush(SupabaseStatusDelivery(supabase_settings)).delivered == 1


def test_info_for_docutrain_status(supabase_standin, supabase_settings):
    supabase_standin.down()
    outbox = Outbox.for_store(supabase_settings.store)
    outbox.record("0f8fad5b-d9cb-469f-a165-70867728950e", "processing", at=time.time() - 90)
    outbox.flush(SupabaseStatusDelivery(supabase_settings, timeout=2))
    info = outbox.info()
    assert info["backlog"] == 1 and info["pending_changes"] == 1
    assert info["oldest_change_age_seconds"] >= 89
    assert "cannot connect" in info["last_error"] and info["last_error_at"] and info["retry_after"] > time.time()
    assert supabase_standin.key not in repr(info)

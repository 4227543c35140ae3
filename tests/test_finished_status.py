"""A document that ends reaches Supabase at once, not at the runner's next
periodic flush (issue 24, bench row 8d: the 2 s flush was 0.8 s of a 1.3 s
upload). Here the periodic flush never comes (an hour apart), so every
status Supabase receives was pushed because its document ended; `processing`
is left for the periodic flush."""

from __future__ import annotations

import gc
import threading
import uuid

import pytest

from harness import wait_for

from docutrain_cli.config import Settings
from docutrain_cli.jobs import Job
from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.run import runner as runner_module
from docutrain_cli.run.runner import Runner


# persist-queue's __del__ closes its connections again from whichever thread
# collects the queue; collected at the end of the test, as in test_periodic.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ready_goes_to_supabase_when_the_job_ends_busy_or_idle(supabase_standin, tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "FLUSH_EVERY", 3600.0)
    monkeypatch.setenv("DOCUTRAIN_TEST_OUTPUT", str(tmp_path / "output.db"))
    project = supabase_standin.project
    settings = Settings(
        queue=str(tmp_path / "queue.db"), store=str(tmp_path / "docutrain.db"), workers=2,
        processor="tests.processors:by_name", poll_interval=0.1, embedder="offline",
        supabase_url=supabase_standin.url, supabase_service_role_key=supabase_standin.key,
    )
    made: list[Runner] = []

    def serve() -> None:  # a service (no --drain); SQLite connections stay in this thread
        with LocalQueue(settings.queue) as queue:
            made.append(Runner(settings, queue))
            made[0].run()
            made[0].queue = None
        gc.collect()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    # The service's reconcile (at start) looks for pending rows: let it find none.
    wait_for(lambda: supabase_standin.count("GET", "/rest/v1/user_documents"), what="the runner's reconcile")

    quick, waiting = tmp_path / "quick.txt", tmp_path / "wait-b.txt"
    quick.write_text("ends at once")
    waiting.write_text("ends when wait-b.go exists")
    docs = {path: project.add_document("pending", storage_path=f"{uuid.uuid4()}/{path.name}")
            for path in (quick, waiting)}
    with LocalQueue(settings.queue) as producer:  # wakes the runner
        producer.enqueue([Job(id=0, source=str(path), document_id=doc) for path, doc in docs.items()])

    wait_for(lambda: project.document(docs[quick])["status"] == "ready", what="quick.txt ready in Supabase")
    # Its `processing` went with it, coalesced: one PATCH, `ready`.
    sent = [r.json()["status"] for r in supabase_standin.requests("PATCH", "/rest/v1/user_documents")
            if f"id=eq.{docs[quick]}" in r.query]
    assert sent == ["ready"]
    # The running one's `processing` waits for the periodic flush.
    assert made[0].in_flight and project.document(docs[waiting])["status"] == "pending"

    waiting.with_suffix(".go").write_text("")
    wait_for(lambda: project.document(docs[waiting])["status"] == "ready", what="wait-b.txt ready, runner idle")
    assert not made[0].in_flight

    made[0].request_stop("terminated")
    thread.join(60)
    assert not thread.is_alive()
    assert made[0].summary.done == 2
    assert supabase_standin.count("PATCH", "/rest/v1/user_documents") == 2  # nothing sent twice

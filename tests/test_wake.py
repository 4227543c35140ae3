"""No polling delay, nothing missed: a service runner starts a job queued over
HTTP at once (woken through the queue's wake-up socket, or LISTEN/NOTIFY on
pgmq), and reconciles Supabase rows no webhook announced.

The runners poll only every 60 s here, so a job that starts within a few
seconds can only have been started by the wake-up (or, for reconcile, by the
reconcile timer): the tests check the mechanism, not a speed.
"""

from __future__ import annotations

import datetime
import time

import httpx
import pytest
from conftest import wait_for
from serving import TOKEN, start_serve_process

from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.paths import wake_path

SLOW_POLL = dict(DOCUTRAIN_POLL_INTERVAL="60s", DOCUTRAIN_PROCESSOR="tests.processors:record", DOCUTRAIN_WORKERS="1")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except Exception:  # noqa: BLE001
        proc.kill()
        proc.wait()


def done_documents(docutrain) -> set[str]:
    return {document for document, _ in docutrain.output_rows()}


def test_a_service_runner_starts_a_job_posted_over_http_at_once(docutrain):
    runner = docutrain.start("run", **SLOW_POLL)
    # The same settings as the runner (its processor takes Storage paths without Supabase).
    serve, url = start_serve_process(docutrain, DOCUTRAIN_SERVE_TOKEN=TOKEN, **SLOW_POLL)
    try:
        # The runner listens once it holds the queue; a wake-up sent after
        # that waits in the socket even if the runner is busy for a moment.
        wait_for(lambda: wake_path(docutrain.queue).exists(), 60, "the runner's wake-up socket")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            for i in range(3):
                before = time.time()
                job_id = client.post("/v1/documents", json={
                    "user_document_id": f"d{i}", "user_id": "u", "storage_path": f"u/{i}.pdf"}).json()["job_id"]
                job = wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["state"] == "done" and j,
                               20, f"job {job_id} done (the runner polls only every 60 s)")
                assert datetime.datetime.fromisoformat(job["started_at"]).timestamp() - before < 10
    finally:
        stop(serve)
        stop(runner)
    assert not wake_path(docutrain.queue).exists()  # the runner removed its socket
    assert sorted(doc for doc, _ in docutrain.output_rows()) == ["d0", "d1", "d2"]


def test_a_socket_left_by_a_killed_runner_is_replaced(docutrain):
    first = docutrain.start("run", **SLOW_POLL)
    wait_for(lambda: wake_path(docutrain.queue).exists(), 60, "the first runner's socket")
    first.kill()
    first.wait()
    assert wake_path(docutrain.queue).exists()  # stale: nobody listens
    runner = docutrain.start("run", **SLOW_POLL)
    try:
        wait_for(lambda: _wake_listens(docutrain.queue), 30, "a live wake-up socket")
        assert docutrain("enqueue", str(_file(docutrain)), "--document-id", "late").returncode == 0
        wait_for(lambda: done_documents(docutrain), 20, "the job done (the runner polls only every 60 s)")
    finally:
        stop(runner)


def _file(docutrain):
    path = docutrain.workdir / "late.txt"
    path.write_text("late")
    return path


def _wake_listens(queue_path) -> bool:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(str(wake_path(queue_path)))
        return True
    except OSError:
        return False
    finally:
        sock.close()


@pytest.mark.postgres
def test_a_pgmq_runner_is_woken_by_notify(docutrain, pg_url, pgmq_queue_name):
    import psycopg

    from docutrain_cli.jobs import Job
    from docutrain_cli.queues.pgmq import PgmqQueue

    env = dict(SLOW_POLL, DOCUTRAIN_QUEUE=pg_url, DOCUTRAIN_QUEUE_NAME=pgmq_queue_name)
    runner = docutrain.start("run", **env)
    try:
        def listening() -> bool:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                return bool(conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE query = %s", (f'LISTEN "docutrain_{pgmq_queue_name}"',)
                ).fetchone())

        wait_for(listening, 60, "the runner to LISTEN")
        with PgmqQueue(pg_url, pgmq_queue_name) as queue:
            job = Job(id=0, source="supabase://documents/x.pdf", document_id="pg-doc")
            before = time.time()
            job_id, created = queue.enqueue_unique(job)
            assert created
            done = wait_for(lambda: (j := queue.job(job_id)).state.value == "done" and j, 20,
                            "the job done (the runner polls only every 60 s)")
            assert done.started_at - before < 10
    finally:
        stop(runner)


# -- reconcile ------------------------------------------------------------------------------------


def test_reconcile_queues_a_pending_row_no_webhook_announced(docutrain, supabase_standin):
    project = supabase_standin.project
    env = dict(SLOW_POLL, SUPABASE_URL=supabase_standin.url, SUPABASE_SERVICE_ROLE_KEY=supabase_standin.key,
               DOCUTRAIN_RECONCILE_INTERVAL="1s", DOCUTRAIN_PROCESSOR="tests.processors:record")
    at_start = project.add_document("pending", storage_path="u/at-start.pdf")
    runner = docutrain.start("run", **env)
    try:
        # Queued by the first reconcile, when the runner starts.
        wait_for(lambda: at_start in done_documents(docutrain), 60, "the row pending at start")
        # Added while the runner idles; no webhook, no enqueue: the timer finds it.
        later = project.add_document("pending", storage_path="u/later.pdf")
        wait_for(lambda: later in done_documents(docutrain), 20,
                 "the row added later (the runner polls only every 60 s)")
        wait_for(lambda: project.document(later)["status"] == "ready", 20, "the row ready in Supabase")
    finally:
        stop(runner)
    with LocalQueue(docutrain.queue) as queue:
        jobs = queue.jobs(limit=100)
    # One job per row although reconcile ran again while they were active.
    assert sorted(j.document_id for j in jobs) == sorted([at_start, later])


def test_reconcile_skips_active_documents_and_those_whose_status_is_still_in_the_outbox(supabase_settings, supabase_standin):
    from docutrain_cli.status.outbox import Outbox
    from docutrain_cli.run.reconcile import Reconciler
    from docutrain_cli.status.recorder import StatusRecorder

    project = supabase_standin.project
    a = project.add_document("pending", storage_path="u/a.pdf")
    b = project.add_document("pending", storage_path="u/b.pdf")
    c = project.add_document("pending", storage_path="u/c.pdf")
    with Outbox.for_store(supabase_settings.store) as outbox:
        outbox.record(c, "ready", page_count=1, chunk_count=1)  # done here, Supabase not told yet
    recorder = StatusRecorder(supabase_settings)
    with LocalQueue(supabase_settings.queue) as queue:
        reconciler = Reconciler(supabase_settings, queue, recorder.waiting_document_ids)
        assert reconciler.due(time.monotonic())
        first = reconciler.run()
        assert sorted(j.document_id for j in first.queued) == sorted([a, b])
        assert not reconciler.due(time.monotonic())  # next one after reconcile_interval
        second = reconciler.run()
        assert (second.queued, sorted(j.document_id for j in second.duplicates)) == ([], sorted([a, b]))
        supabase_standin.down()
        assert reconciler.run() is None and "Transient" in reconciler.last_error
    recorder.close()

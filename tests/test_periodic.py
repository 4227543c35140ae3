"""Periodic work never depends on jobs being in flight: status flushes,
housekeeping and lease extension run on their own timers while the runner
is idle, busy and winding down (issue 10)."""

from __future__ import annotations

import datetime
import gc
import threading
import time
import uuid

import pytest

from harness import wait_for
from pdfs import multi_page
from test_supabase_e2e import env_for

from docutrain_cli.run import runner as runner_module
from docutrain_cli.status import outbox
from docutrain_cli.config import Settings
from docutrain_cli.jobs import Job
from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.run.runner import Runner
from docutrain_cli.status.recorder import StatusRecorder


class Watched:
    """Wraps the runner's queue and status sink; notes in which state of the
    runner each periodic call came: idle, busy or stopping."""

    def __init__(self, target, calls: dict, method: str, state):
        self._target, self._calls, self._method, self._state = target, calls, method, state

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if name != self._method:
            return value

        def call(*args, **kwargs):
            self._calls.setdefault(name, set()).add(self._state())
            return value(*args, **kwargs)

        return call


class SharedLocalQueue(LocalQueue):
    """The local queue, flagged as shared so the runner extends leases."""

    exclusive = False

    def __init__(self, path, calls, state):
        super().__init__(path)
        self._calls, self._state = calls, state

    def extend_lease(self, jobs, seconds):
        assert jobs, "extend_lease called with nothing leased"
        self._calls.setdefault("extend_lease", set()).add(self._state())

    def housekeep(self):
        self._calls.setdefault("housekeep", set()).add(self._state())
        super().housekeep()


# persist-queue's __del__ closes its connections again from whichever thread
# collects the queue; the runner's thread closed them already. Collected here
# (see the end of the test), not during some later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_periodic_task_runs_idle_busy_and_while_stopping(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "FLUSH_EVERY", 0.2)
    monkeypatch.setattr(runner_module, "HOUSEKEEP_EVERY", 0.2)
    monkeypatch.setenv("DOCUTRAIN_TEST_OUTPUT", str(tmp_path / "output.db"))
    monkeypatch.setenv("DOCUTRAIN_TEST_SLEEP", "600")  # busy until we force the stop
    settings = Settings(
        queue=str(tmp_path / "queue.db"), store=str(tmp_path / "docutrain.db"), workers=1,
        processor="tests.processors:record", poll_interval=0.1, grace_period=600,
        visibility_timeout=0.6,
    )
    calls: dict[str, set] = {}
    made: list[Runner] = []

    def state() -> str:
        if made[0]._stop_reason:
            return "stopping"
        return "busy" if made[0].running else "idle"

    def serve() -> None:  # SQLite connections belong to the thread that made them
        queue = SharedLocalQueue(settings.queue, calls, state)
        status = Watched(StatusRecorder(settings), calls, "flush", state)
        made.append(Runner(settings, queue, status=status))
        made[0].run()
        queue.close()
        made[0].queue = status._target = None  # finalised here, in their own thread
        del queue, status
        gc.collect()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def seen(tasks, phase):
        wait_for(lambda: all(phase in calls.get(t, ()) for t in tasks), what=f"{tasks} all seen {phase}")

    seen(["flush", "housekeep"], "idle")
    (tmp_path / "doc.txt").write_text("hello")
    with LocalQueue(settings.queue) as producer:
        producer.enqueue([Job(id=0, source=str(tmp_path / "doc.txt"))])
    seen(["flush", "housekeep", "extend_lease"], "busy")
    run = made[0]
    run.request_stop("terminated")
    seen(["flush", "housekeep", "extend_lease"], "stopping")
    run.request_stop("terminated")  # the second one forces the stop
    thread.join(60)
    assert not thread.is_alive()
    gc.collect()
    assert "idle" not in calls["extend_lease"]  # nothing leased: nothing to extend
    assert run.summary.released == 1 and run.summary.done == 0
    with LocalQueue(settings.queue) as check:
        assert check.stats(time.time()).counts["queued"] == 1  # back, uncharged
        assert check.jobs()[0].attempts == 0


def test_idle_service_delivers_statuses_after_an_outage_without_a_new_job(docutrain, supabase_standin, tmp_path):
    """The issue's report: a service finishes its work during a Supabase
    outage; once Supabase answers again, every row is `ready` within the
    flush interval plus the outbox's backoff cap, with no new job."""
    project = supabase_standin.project
    docs = []
    for i in range(4):
        path = multi_page(tmp_path / f"doc{i}.pdf", pages=2, seed=i)
        storage_path = f"{uuid.uuid4()}/{path.name}"
        project.put_object("documents", storage_path, path.read_bytes())
        docs.append(project.add_document("pending", storage_path=storage_path))
    env = env_for(supabase_standin)
    assert docutrain("enqueue", "--from-supabase", **env).returncode == 0
    supabase_standin.fail("PATCH", "/rest/v1/user_documents", 503)  # status updates only
    service = docutrain.start("run", "--workers", "2", **env)
    try:
        docutrain.wait_for(lambda: docutrain.status()["done"] == 4, timeout=120, what="all 4 jobs done")
        # The outage covered the end of the work: nothing reached the rows.
        assert {project.document(d)["status"] for d in docs} == {"pending"}
        patches = supabase_standin.count("PATCH")
        docutrain.wait_for(
            lambda: supabase_standin.count("PATCH") > patches, timeout=60, what="an idle flush attempt"
        )
        supabase_standin.heal()
        healed = time.monotonic()
        bound = runner_module.FLUSH_EVERY + outbox.BACKOFF_MAX
        docutrain.wait_for(
            lambda: all(project.document(d)["status"] == "ready" for d in docs),
            timeout=bound + 30,  # + room for a loaded machine
            what="every row ready after the outage",
        )
        assert time.monotonic() - healed <= bound + 30
        assert docutrain.status()["done"] == 4  # no new job was needed
        assert service.poll() is None  # still the same idle service
    finally:
        service.terminate()
        out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert "Traceback" not in err


def test_drain_pushes_waiting_statuses_at_exit_whatever_the_backoff(docutrain, supabase_standin, tmp_path):
    """A cron run right after an outage: the outbox is still backing off when
    the queue drains, but Supabase answers, so the run's last flush must
    deliver instead of leaving every row `processing` until the next run."""
    project = supabase_standin.project

    def upload(i: int) -> str:
        path = multi_page(tmp_path / f"doc{i}.pdf", pages=1, seed=i)
        storage_path = f"{uuid.uuid4()}/{path.name}"
        project.put_object("documents", storage_path, path.read_bytes())
        return project.add_document("pending", storage_path=storage_path)

    env = env_for(supabase_standin)
    first = [upload(i) for i in range(2)]
    assert docutrain("enqueue", "--from-supabase", **env).returncode == 0
    supabase_standin.fail("PATCH", "/rest/v1/user_documents", 503)
    assert docutrain("run", "--drain", **env).returncode == 0
    assert {project.document(d)["status"] for d in first} == {"pending"}
    retry_after = docutrain.status()["supabase_outbox"]["retry_after"]  # ISO 8601, as JSON shows times
    assert datetime.datetime.fromisoformat(retry_after).timestamp() > time.time()  # backing off

    supabase_standin.heal()
    second = upload(2)
    assert docutrain("enqueue", "--from-supabase", **env).returncode == 0
    result = docutrain("run", "--drain", **env)
    assert result.returncode == 0, result.stderr
    assert {project.document(d)["status"] for d in first + [second]} == {"ready"}
    assert docutrain.status()["supabase_outbox"]["backlog"] == 0


def test_a_runs_last_flush_outlasts_a_periodic_flushs_deadline(supabase_standin, tmp_path):
    """A slow but healthy Supabase: a periodic flush stops at FLUSH_DEADLINE
    and leaves the rest for the next one; a run's last flush (at_exit) has
    EXIT_FLUSH_DEADLINE, so a cron drain does not leave statuses for its next run."""
    from docutrain_cli.jobs import JobResult
    from docutrain_cli.status import recorder as recorder_module

    project = supabase_standin.project
    settings = Settings(
        supabase_url=supabase_standin.url, supabase_service_role_key=supabase_standin.key,
        store=str(tmp_path / "docutrain.db"), queue=str(tmp_path / "queue.db"), embedder="offline",
    )
    per_request = 1.0
    count = int(recorder_module.FLUSH_DEADLINE / per_request) + 3  # more than a periodic flush has time for
    assert count * per_request < recorder_module.EXIT_FLUSH_DEADLINE - 5  # room for a loaded machine

    def finish(docs: list[str]) -> None:
        for i, doc in enumerate(docs):
            status.ready(Job(id=i + 1, source=f"u/{doc}.pdf", document_id=doc), JobResult(pages=1, chunks=1))

    def ready(docs: list[str]) -> int:
        return sum(project.document(d)["status"] == "ready" for d in docs)

    status = StatusRecorder(settings)
    try:
        supabase_standin.slow(per_request)
        periodic = [project.add_document("pending") for _ in range(count)]
        finish(periodic)
        status.flush(force=True)
        assert 0 < ready(periodic) < count  # stopped at its deadline; the rest waits in the outbox

        status.flush(force=True, at_exit=True)
        assert ready(periodic) == count
        last = [project.add_document("pending") for _ in range(count)]
        finish(last)
        status.flush(force=True, at_exit=True)
        assert ready(last) == count
        assert status.backlog() == 0
    finally:
        supabase_standin.heal()
        status.close()

"""One contract, every backend: the local SQLite file, pgmq in PostgreSQL,
and Cloudflare Queues (against tests/cloudflare_standin.py over real HTTP).

Each test runs once per backend (`-k local` / `-k pgmq` / `-k cloudflare`).
The pgmq runs use the real PostgreSQL on 127.0.0.1:5432 (see tests/pg.py)
and skip without it, or fail when CI is set.

Cloudflare Queues cannot read back a message it is not handing out: it has
no per-state counts and no record of acked (done) messages. Its backend
lists `listable_states` = dead only and reports unknown counts as None;
the checks that need more are guarded by `lists()` / `stats.known`, and the
two cases that are nothing but such reads are skipped with the reason.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import ROOT, child_env, wait_for
from docutrain_cli.errors import ConfigError
from docutrain_cli.jobs import STATES, Job, JobResult, JobState



class Backend:
    """Opens handles on one queue; several handles act like several processes."""

    def __init__(self, kind: str, tmp_path: Path, request):
        self.kind = kind
        self.handles = []
        if kind == "local":
            self.path = tmp_path / "queue.db"
        elif kind == "cloudflare":
            self.standin = request.getfixturevalue("cloudflare")
            self.standin.create_queue("dead0001", max_retries=100)
            self.standin.create_queue("main0001", max_retries=100, dead_letter_queue="dead0001")
            self.url = f"cloudflare://{self.standin.account_id}/main0001"
        else:
            self.url = request.getfixturevalue("pg_url")
            self.name = request.getfixturevalue("pgmq_queue_name")

    def open(self, visibility_timeout: float = 30.0, order=None):
        if self.kind == "local":
            from docutrain_cli.queues.local import LocalQueue

            handle = LocalQueue(self.path)
        elif self.kind == "cloudflare":
            handle = eval(self._cloudflare_opener(visibility_timeout))
        else:
            from docutrain_cli.queues.pgmq import PgmqQueue

            handle = PgmqQueue(self.url, self.name, visibility_timeout)
        if order is not None:
            handle.order = order
        self.handles.append(handle)
        return handle

    def opener(self) -> str:
        """Python that opens a handle on this queue in another process."""
        if self.kind == "local":
            return f"LocalQueue({str(self.path)!r})"
        return f"PgmqQueue({self.url!r}, {self.name!r})"

    def _cloudflare_opener(self, lease: float) -> str:
        return (
            f"__import__('docutrain_cli.queues.cloudflare').queues.cloudflare.CloudflareQueue("
            f"{self.url!r}, token={self.standin.token!r}, dead_queue='dead0001', "
            f"api_url={self.standin.url!r}, lease={lease!r})"
        )

    def crashed_lease(self, visibility_timeout: float) -> int:
        """A separate process leases one job and is SIGKILLed before settling it."""
        if self.kind == "local":
            opener = f"LocalQueue({str(self.path)!r})"
        elif self.kind == "cloudflare":
            opener = self._cloudflare_opener(visibility_timeout)
        else:
            opener = f"PgmqQueue({self.url!r}, {self.name!r}, {visibility_timeout!r})"
        code = (
            "import os, signal, time\n"
            "from docutrain_cli.queues.local import LocalQueue\n"
            "from docutrain_cli.queues.pgmq import PgmqQueue\n"
            f"q = {opener}\n"
            "jobs = q.lease(1, time.time())\n"
            "print(jobs[0].id, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env=child_env(),
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        return int(proc.stdout.split()[0])

    def close(self) -> None:
        for handle in self.handles:
            handle.close()


@pytest.fixture(params=["local", pytest.param("pgmq", marks=pytest.mark.postgres), "cloudflare"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path, request)
    yield b
    b.close()


@pytest.fixture
def queue(backend):
    return backend.open()


def make_jobs(n: int, prefix: str = "doc") -> list[Job]:
    return [
        Job(id=0, source=f"/data/{prefix}{i}.pdf", sha256=f"{prefix}-sha-{i}", user_id="u1", document_id=f"d{i}")
        for i in range(n)
    ]


def lease_all(queue, limit: int = 100) -> list[Job]:
    return queue.lease(limit, time.time())


def lists(queue, state: str) -> bool:
    """Can this backend find jobs in `state` (Cloudflare: dead ones only)?"""
    return JobState(state) in queue.listable_states


def settle_one_of_each(queue) -> dict[str, int]:
    """Five jobs, one in every state; returns {state: job id}."""
    ids = queue.enqueue(make_jobs(5))
    leased = {j.id: j for j in lease_all(queue, 4)}
    assert sorted(leased) == ids[:4]
    queue.complete(leased[ids[0]])
    queue.retry_later(leased[ids[1]], "boom", time.time() + 3600)
    queue.bury(leased[ids[2]], "corrupt")
    # ids[3] stays leased (running); ids[4] was never leased (queued)
    return {"done": ids[0], "retrying": ids[1], "dead": ids[2], "running": ids[3], "queued": ids[4]}


# -- producers ---------------------------------------------------------------
def test_enqueue_unique_on_cloudflare_always_sends_and_finds_nothing(queue):
    if queue.kind != "cloudflare":
        pytest.skip("the other backends keep one job per active document (tests above)")
    first, created = queue.enqueue_unique(Job(id=0, source="/data/a.pdf", document_id="d0"))
    second, created_again = queue.enqueue_unique(Job(id=0, source="/data/a.pdf", document_id="d0"))
    assert created and created_again and first != second
    assert sorted(j.document_id for j in lease_all(queue)) == ["d0", "d0"]
    assert queue.document_jobs("d0") == []


def test_enqueue_returns_new_ids_in_order_and_jobs_start_queued(queue):
    ids = queue.enqueue(make_jobs(3))
    assert len(set(ids)) == 3 and ids == sorted(ids)
    more = queue.enqueue(make_jobs(2, "other"))
    assert min(more) > max(ids)
    assert queue.enqueue([]) == []
    if not lists(queue, "queued"):
        (job,) = [j for j in lease_all(queue) if j.id == ids[1]]  # read it back the only way there is
        assert (job.source, job.sha256, job.user_id, job.document_id) == ("/data/doc1.pdf", "doc-sha-1", "u1", "d1")
        return
    job = queue.job(ids[1])
    assert (job.id, job.state, job.attempts) == (ids[1], JobState.QUEUED, 0)
    assert (job.source, job.sha256, job.user_id, job.document_id) == ("/data/doc1.pdf", "doc-sha-1", "u1", "d1")


def test_another_handle_sees_new_jobs(backend):
    producer, consumer = backend.open(), backend.open()
    ids = producer.enqueue(make_jobs(2))
    assert sorted(j.id for j in lease_all(consumer)) == ids


def test_enqueue_unique_makes_one_job_per_active_document(queue):
    if queue.kind == "cloudflare":
        pytest.skip("Cloudflare cannot list queued messages: enqueue_unique always sends (none is claimed)")
    [job] = make_jobs(1)
    first, created = queue.enqueue_unique(job)
    assert created
    for state_change in ("lease", "retry", "lease", "complete"):
        again = Job(id=0, source="/data/other.pdf", document_id="d0")
        job_id, created = queue.enqueue_unique(again)
        assert (job_id, created) == (first, False), state_change  # queued, running or retrying: the same job
        if state_change == "lease":
            [leased] = lease_all(queue)
        elif state_change == "retry":
            queue.retry_later(leased, "boom", 0)
        else:
            queue.complete(leased)
    after_done, created = queue.enqueue_unique(Job(id=0, source="/data/doc0.pdf", document_id="d0"))
    assert created and after_done > first  # a finished document may be processed again
    [leased] = lease_all(queue)
    queue.bury(leased, "corrupt")
    after_dead, created = queue.enqueue_unique(Job(id=0, source="/data/doc0.pdf", document_id="d0"))
    assert created and after_dead > after_done
    assert [j.id for j in queue.document_jobs("d0")] == [after_dead, after_done, first]  # newest first
    assert [j.state for j in queue.document_jobs("d0")] == [JobState.QUEUED, JobState.DEAD, JobState.DONE]
    assert queue.document_jobs("nobody") == []


def test_enqueue_unique_is_atomic_across_processes(backend):
    """Four processes queue the same 25 documents at once: 25 jobs."""
    if backend.kind == "cloudflare":
        pytest.skip("Cloudflare cannot list queued messages: enqueue_unique always sends (none is claimed)")
    opener = backend.opener()
    code = (
        "import sys\n"
        "from docutrain_cli.jobs import Job\n"
        "from docutrain_cli.queues.local import LocalQueue\n"
        "from docutrain_cli.queues.pgmq import PgmqQueue\n"
        f"q = {opener}\n"
        "sys.stdin.readline()  # start together\n"
        "for i in range(25):\n"
        "    q.enqueue_unique(Job(id=0, source=f'/data/{i}.pdf', document_id=f'doc-{i}'))\n"
    )
    env = child_env()
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE, text=True)
             for _ in range(4)]
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        proc.stdin.close()
        assert proc.wait(60) == 0
    queue = backend.open()
    jobs = queue.jobs(limit=1000)
    assert sorted(j.document_id for j in jobs) == sorted(f"doc-{i}" for i in range(25))


# -- lease ---------------------------------------------------------------------
def test_lease_marks_running_counts_an_attempt_and_respects_limit(queue):
    ids = queue.enqueue(make_jobs(3))
    first = lease_all(queue, 2)
    assert [j.id for j in first] == ids[:2]  # oldest first
    assert all(j.state == JobState.RUNNING and j.attempts == 1 for j in first)
    if lists(queue, "running"):
        assert queue.job(ids[0]).state == JobState.RUNNING
    assert [j.id for j in lease_all(queue)] == [ids[2]]  # leased jobs are not handed out twice
    assert lease_all(queue) == []
    stats = queue.stats(time.time())
    if stats.known:
        assert stats.counts["running"] == 3 and stats.counts["queued"] == 0
    assert stats.pending == 3
    assert queue.lease(0, time.time()) == []


def test_complete_keeps_a_done_record_with_the_result(queue):
    (job_id,) = queue.enqueue(make_jobs(1))
    (job,) = lease_all(queue)
    job.result = JobResult(chunks=7, pages=2)
    queue.complete(job)
    if lists(queue, "done"):
        done = queue.job(job_id)
        assert done.state == JobState.DONE and done.result == JobResult(chunks=7, pages=2)
        assert done.attempts == 1 and done.finished_at is not None
    assert lease_all(queue) == []
    stats = queue.stats(time.time())
    assert stats.pending == 0
    if stats.known:
        assert stats.counts["done"] == 1


# -- retries -------------------------------------------------------------------
def test_retry_waits_until_due_and_keeps_the_error_history(queue):
    (job_id,) = queue.enqueue(make_jobs(1))
    (job,) = lease_all(queue)
    due = time.time() + 1.5
    queue.retry_later(job, "first failure", due)
    if lists(queue, "retrying"):
        waiting = queue.job(job_id)
        assert waiting.state == JobState.RETRYING and waiting.errors == ["first failure"]
        assert waiting.attempts == 1
    stats = queue.stats(time.time())
    assert stats.pending == 1
    if stats.known:
        assert stats.counts["retrying"] == 1 and stats.counts["running"] == 0
        assert stats.next_retry_at == pytest.approx(due, abs=0.05)
    assert lease_all(queue) == []  # not before it is due
    (again,) = wait_for(lambda: lease_all(queue), timeout=10, what="the retry to come due")
    assert time.time() >= due - 0.05
    assert (again.id, again.attempts, again.state) == (job_id, 2, JobState.RUNNING)
    assert again.errors == ["first failure"]
    queue.retry_later(again, "second failure", time.time() + 3600)
    if lists(queue, "retrying"):
        assert queue.job(job_id).errors == ["first failure", "second failure"]


# -- dead letters ----------------------------------------------------------------
def test_bury_keeps_a_dead_job_that_is_never_leased(queue):
    (job_id,) = queue.enqueue(make_jobs(1))
    (job,) = lease_all(queue)
    queue.bury(job, "not a PDF")
    dead = queue.job(job_id)
    assert dead.state == JobState.DEAD and dead.errors == ["not a PDF"] and dead.attempts == 1
    assert [j.id for j in queue.jobs(JobState.DEAD)] == [job_id]
    assert lease_all(queue) == []
    assert queue.stats(time.time()).counts["dead"] == 1


def test_revive_puts_dead_jobs_back_with_fresh_attempts_and_the_same_id(queue):
    ids = queue.enqueue(make_jobs(3))
    leased = lease_all(queue)
    for job in leased[:2]:
        queue.retry_later(job, "flaky", time.time() - 1)  # due at once
    for job in lease_all(queue):  # attempt 2 of the first two
        queue.bury(job, "gave up")
    queue.complete(leased[2])

    assert queue.revive([ids[2], 999_999]) == []  # done and unknown ids are skipped
    dead = {j.id: j for j in queue.jobs(JobState.DEAD)}
    assert dead[ids[0]].errors == ["flaky", "gave up"] and dead[ids[0]].attempts == 2
    assert queue.revive([ids[0]]) == [ids[0]]
    if lists(queue, "queued"):
        back = queue.job(ids[0])
        assert (back.state, back.attempts, back.errors) == (JobState.QUEUED, 0, ["flaky", "gave up"])
    assert queue.revive([ids[0]]) == []  # no longer dead
    assert queue.revive(None) == [ids[1]]  # all remaining dead

    again = {j.id: j for j in lease_all(queue)}
    assert sorted(again) == ids[:2]
    assert all(j.attempts == 1 for j in again.values())  # fresh count
    assert again[ids[0]].errors == ["flaky", "gave up"]
    queue.complete(again[ids[0]])
    if lists(queue, "done"):
        assert queue.job(ids[0]).state == JobState.DONE  # same id all the way through
    stats = queue.stats(time.time())
    if stats.known:
        assert stats.counts == {"queued": 0, "running": 1, "retrying": 0, "done": 2, "dead": 0}
    else:
        assert (stats.unfinished, stats.counts["dead"]) == (1, 0)


def test_a_revived_job_counts_its_queued_age_from_the_retry(queue):
    # `status` after `retry --all-dead` said "oldest queued job: 9.1m old",
    # counting from the first enqueue. Time must really pass for this.
    if queue.kind == "cloudflare":
        pytest.skip("Cloudflare reports no per-state counts or job ages (a revived job is a new message there)")
    [job_id] = queue.enqueue(make_jobs(1))
    [job] = lease_all(queue)
    queue.bury(job, "corrupt")
    wait_for(lambda: time.time() - queue.job(job_id).enqueued_at >= 1.5, timeout=10,
             what="the job to have been enqueued 1.5 s ago")
    revived_at = time.time()
    assert queue.revive(None) == [job_id]
    stats = queue.stats(time.time())
    assert stats.counts["queued"] == 1
    assert stats.oldest_queued_age < 1.0  # from the enqueue it would be >= 1.5
    assert queue.job(job_id).queued_at >= revived_at


# -- release -----------------------------------------------------------------------
def test_release_gives_a_job_back_without_costing_an_attempt(queue):
    (job_id,) = queue.enqueue(make_jobs(1))
    (job,) = lease_all(queue)
    queue.release(job)
    if lists(queue, "queued"):
        back = queue.job(job_id)
        assert (back.state, back.attempts) == (JobState.QUEUED, 0)
    (job,) = lease_all(queue)  # available at once
    assert job.attempts == 1

    queue.retry_later(job, "flaky", time.time() - 1)
    (job,) = lease_all(queue)
    assert job.attempts == 2
    queue.release(job)
    if lists(queue, "retrying"):
        back = queue.job(job_id)
        assert (back.state, back.attempts) == (JobState.RETRYING, 1)
    (job,) = lease_all(queue)
    assert job.attempts == 2 and job.errors == ["flaky"]


def test_release_with_a_delay_costs_no_attempt_and_hides_the_job_until_then(queue):
    """What the runner does when the embedding API's rate limit left no room."""
    (job_id,) = queue.enqueue(make_jobs(1))
    (job,) = lease_all(queue)
    queue.release(job, not_before=time.time() + 2.0)
    if lists(queue, "queued"):
        back = queue.job(job_id)
        assert (back.state, back.attempts) == (JobState.QUEUED, 0)
    assert queue.lease(5, time.time()) == []  # not due yet: nobody gets it
    leased = wait_for(lambda: queue.lease(5, time.time()), timeout=10, interval=0.2, what="the job to be due")
    assert [j.id for j in leased] == [job_id] and leased[0].attempts == 1


# -- crash recovery ----------------------------------------------------------------
def test_a_job_leased_by_a_killed_process_comes_back(backend):
    queue = backend.open()
    ids = queue.enqueue(make_jobs(2))
    lost = backend.crashed_lease(visibility_timeout=1)
    assert lost == ids[0]
    survivor = backend.open()
    if backend.kind == "local":
        # The runner lock holder returns in-flight jobs once, at start.
        assert queue.job(lost).state == JobState.RUNNING
        assert survivor.recover() == 1
    else:
        # pgmq, Cloudflare: hidden until the lease lapses, then visible again.
        assert [j.id for j in lease_all(survivor)] == [ids[1]]
        if backend.kind == "pgmq":
            wait_for(lambda: queue.job(lost).state == JobState.RETRYING, timeout=10, what="the lease to lapse")
            assert survivor.recover() == 1  # reported, nothing to do
        else:  # Cloudflare can neither show the job nor count lapsed leases
            assert survivor.recover() == 0
    if lists(queue, "retrying"):
        assert queue.job(lost).state == JobState.RETRYING  # an attempt was started
        job = {j.id: j for j in lease_all(survivor)}[lost]
    else:  # it is handed out again once its lease lapses
        (job,) = wait_for(lambda: lease_all(survivor), timeout=10, what="the lease to lapse")
    assert (job.id, job.attempts) == (lost, 2)
    survivor.complete(job)
    if lists(queue, "done"):
        assert queue.job(lost).state == JobState.DONE


# -- readers -------------------------------------------------------------------------
def test_stats_count_every_state(queue):
    before = time.time()
    if not queue.stats(before).known:
        assert queue.stats(before).counts == {**{s: None for s in STATES}, "dead": 0}
        assert queue.stats(before).unfinished == 0
        settle_one_of_each(queue)
        stats = queue.stats(time.time())
        assert (stats.unfinished, stats.pending, stats.counts["dead"]) == (3, 3, 1)
        assert stats.counts["done"] is None  # unknown, not zero
        return
    assert queue.stats(before).counts == {s: 0 for s in STATES}
    assert queue.stats(before).oldest_queued_age is None
    settle_one_of_each(queue)
    stats = queue.stats(time.time() + 10)
    assert stats.counts == {s: 1 for s in STATES}
    assert stats.pending == 3
    assert 10 <= stats.oldest_queued_age < 20
    assert stats.next_retry_at > time.time() + 3000


def test_jobs_filters_by_state_newest_first(queue):
    by_state = settle_one_of_each(queue)
    for state, job_id in by_state.items():
        expected = [(job_id, state)] if lists(queue, state) else []
        assert [(j.id, j.state.value) for j in queue.jobs(JobState(state))] == expected
    if len(queue.listable_states) < len(STATES):
        assert [j.id for j in queue.jobs()] == [by_state["dead"]]  # all it can list
        return
    everything = queue.jobs()
    assert [j.id for j in everything] == sorted(by_state.values(), reverse=True)
    assert {j.id: j.state.value for j in everything} == {v: k for k, v in by_state.items()}
    assert len(queue.jobs(limit=2)) == 2


def test_job_finds_a_job_in_every_state(queue):
    for state, job_id in settle_one_of_each(queue).items():
        job = queue.job(job_id)
        if not lists(queue, state):
            assert job is None
            continue
        assert job is not None and (job.id, job.state.value) == (job_id, state)
    assert queue.job(987_654) is None


def test_active_hashes_are_the_unfinished_jobs(queue):
    if queue.kind == "cloudflare":
        pytest.skip("Cloudflare cannot list queued messages: no duplicate check at enqueue (none is claimed)")
    by_state = settle_one_of_each(queue)
    expected = {queue.job(by_state[s]).sha256 for s in ("queued", "running", "retrying")}
    assert queue.active_hashes() == expected == {"doc-sha-1", "doc-sha-3", "doc-sha-4"}


def test_housekeep_keeps_the_done_records(backend, monkeypatch):
    if backend.kind == "cloudflare":
        pytest.skip("Cloudflare deletes acked messages: there are no done records to keep")
    queue = backend.open()
    ids = queue.enqueue(make_jobs(4))
    for job in lease_all(queue, 3):
        job.result = JobResult(chunks=job.id)
        queue.complete(job)
        time.sleep(0.01)  # distinct finishing times
    queue.housekeep()
    assert queue.stats(time.time()).counts["done"] == 3
    assert all(queue.job(i).result == JobResult(chunks=i) for i in ids[:3])
    assert [j.id for j in lease_all(queue)] == [ids[3]]  # still a working queue

    # Retention is bounded: only the latest KEEP_DONE_RECORDS are kept.
    module = "docutrain_cli.queues.local" if backend.kind == "local" else "docutrain_cli.queues.pgmq"
    monkeypatch.setattr(f"{module}.KEEP_DONE_RECORDS", 2)
    queue.housekeep()
    assert queue.stats(time.time()).counts["done"] == 2
    assert queue.job(ids[0]) is None
    assert queue.job(ids[2]).state == JobState.DONE


def test_a_done_job_whose_document_failed_afterwards_is_dead_and_retryable(queue):
    """Batch API mode: the job was done when its chunks were parked; the
    document then could not be embedded. Dead now, with the reason, under
    the same id; `retry` brings it back. An active job is left alone."""
    ids = queue.enqueue(make_jobs(2))
    leased = {j.id: j for j in lease_all(queue)}
    for job in leased.values():
        job.result = JobResult(pages=1, batch_texts=3)
        queue.complete(job)
    queue.bury_done(Job(id=ids[0], source="/data/doc0.pdf", sha256="sha0"), "a chunk failed: 500")
    (dead,) = queue.jobs(JobState.DEAD)
    assert dead.id == ids[0] and dead.last_error == "a chunk failed: 500" and dead.finished_at
    stats = queue.stats(time.time())
    assert stats.counts["dead"] == 1 and stats.counts["done"] in (1, None)
    if queue.kind != "cloudflare":
        assert queue.job(ids[0]).state == JobState.DEAD and dead.attempts == 1  # its record, not a fresh one
        assert queue.totals().finished == {"done": 2, "dead": 1}  # the done event happened too
    assert queue.revive([ids[0]]) == [ids[0]]
    (again,) = lease_all(queue)
    assert again.id == ids[0]
    queue.bury_done(again, "late news about an old attempt")  # running again: not a done job now
    if queue.kind != "cloudflare":
        assert queue.job(ids[0]).state == JobState.RUNNING


# -- records of finished jobs (dashboard charts, /metrics) -------------------------
def test_totals_count_finish_events_and_never_fall(queue, monkeypatch):
    """/metrics' counters: a retried dead job and pruned done records still
    count (the tally of records that left, plus the records kept)."""
    if queue.kind == "cloudflare":
        assert queue.totals() is None  # no records of its own to count: /metrics has no counter
        return
    ids = queue.enqueue(make_jobs(3))
    leased = {j.id: j for j in lease_all(queue)}
    for job_id in ids[:2]:
        leased[job_id].result = JobResult(pages=1, tokens_embedded=100, model="m")
        queue.complete(leased[job_id])
    queue.bury(leased[ids[2]], "corrupt")
    first = queue.totals()
    assert first.finished == {"done": 2, "dead": 1} and first.tokens == {"m": 200}
    assert sum(first.durations) == 2
    assert queue.revive([ids[2]]) == [ids[2]]
    assert queue.totals().finished == {"done": 2, "dead": 1}  # the death happened; the retry does not undo it
    (again,) = lease_all(queue)
    queue.bury(again, "corrupt again")
    assert queue.totals().finished == {"done": 2, "dead": 2}
    module = sys.modules[type(queue).__module__]
    monkeypatch.setattr(module, "KEEP_DONE_RECORDS", 1)
    queue.housekeep()
    assert len([r for r in queue.finished() if r.outcome == "done"]) == 1  # one done record pruned
    after = queue.totals()
    assert (after.finished, after.tokens, after.durations) == ({"done": 2, "dead": 2}, {"m": 200}, first.durations)
    assert after.duration_sum == pytest.approx(first.duration_sum)


def test_finished_lists_done_and_dead_jobs_with_their_figures(queue):
    ids = queue.enqueue(make_jobs(4))
    leased = {j.id: j for j in lease_all(queue)}
    before = time.time()
    done = leased[ids[0]]
    done.result = JobResult(pages=3, tokens_embedded=1200, model="text-embedding-3-small")
    queue.complete(done)
    queue.bury(leased[ids[1]], "corrupt")
    queue.retry_later(leased[ids[2]], "boom", time.time() + 3600)  # not finished
    # Cloudflare deletes acked messages: it keeps no done records, only dead ones.
    keeps_done = queue.kind != "cloudflare"
    records = {r.job_id: r for r in queue.finished()}
    assert set(records) == ({ids[0], ids[1]} if keeps_done else {ids[1]})  # ids[3] is still running
    if keeps_done:
        d = records[ids[0]]
        assert (d.outcome, d.pages, d.tokens, d.model) == ("done", 3, 1200, "text-embedding-3-small")
        assert d.finished_at >= before and d.seconds is not None and 0 <= d.seconds < 60
    x = records[ids[1]]
    assert (x.outcome, x.pages, x.tokens, x.model) == ("dead", 0, 0, None)
    assert [r.job_id for r in queue.finished(since=time.time() + 1)] == []
    # a revived job is no longer dead, so no longer finished
    queue.revive([ids[1]])
    assert [r.job_id for r in queue.finished()] == ([ids[0]] if keeps_done else [])
    stats = queue.stats(time.time())
    assert stats.counts["done"] == (1 if keeps_done else None) and stats.counts["dead"] == 0



# -- the lease order (queues/order.py, queues/fair.py) --------------------------------
def fair(**options):
    from docutrain_cli.queues.fair import FairShare

    return FairShare(estimate=lambda job: 1000, **options)


def user_jobs(user: str, n: int, cost: int = 1000, priority: str = "normal") -> list[Job]:
    return [Job(id=0, source=f"/data/{user}{i}.pdf", user_id=user, cost=cost, priority=priority) for i in range(n)]


def lease_one_by_one(queue, n: int) -> list[Job]:
    found = []
    for _ in range(n):
        found += queue.lease(1, time.time())
    return found


def ordered_backend(backend) -> None:
    if backend.kind == "cloudflare":
        pytest.skip("Cloudflare Queues has no ordering control: priority only, by a second queue")


def test_a_newcomers_one_job_is_leased_next_despite_another_users_backlog(backend):
    ordered_backend(backend)
    queue = backend.open(order=fair())
    queue.enqueue(user_jobs("alice", 500))
    first = queue.lease(3, time.time())
    assert [j.user_id for j in first] == ["alice"] * 3
    [bob] = queue.enqueue(user_jobs("bob", 1))
    assert queue.lease(1, time.time())[0].id == bob
    # and fair from then on: bob's next jobs alternate with alice's
    queue.enqueue(user_jobs("bob", 3))
    assert [j.user_id for j in lease_one_by_one(queue, 6)] == ["alice", "bob"] * 3


def test_a_retry_not_due_yet_is_ahead_of_nobody(backend):
    """`position` counts what starts before a job: a retry waiting an hour
    for its time does not, while a due job does (and a running one only
    adds its tokens). Its own ETA waits for its retry time."""
    ordered_backend(backend)
    from docutrain_cli.config import Settings
    from docutrain_cli.queues.line import ServedRate, place_in_line

    queue = backend.open(order=fair())
    queue.enqueue(user_jobs("alice", 3))
    first, second, third = lease_one_by_one(queue, 3)
    retry_at = time.time() + 3600
    queue.retry_later(first, "rate limited", retry_at)
    queue.retry_later(second, "rate limited", retry_at)
    [due] = queue.enqueue(user_jobs("carol", 1))
    [bob] = queue.enqueue(user_jobs("bob", 1))
    ahead = queue.ahead_of(queue.job(bob), time.time())
    assert (ahead.jobs, ahead.tokens, ahead.running_tokens) == (1, 1000, 1000)  # carol's; alice's third runs
    settings, rate = Settings(), ServedRate(per_second=100.0)
    place = place_in_line(queue, queue.job(bob), settings, time.time(), rate)
    assert place["position"] == 1 and place["eta_seconds"] == 25  # (1000 + 1000 + 1000 / 2) / 100
    waiting = place_in_line(queue, queue.job(first.id), settings, time.time(), rate)
    assert 3600 <= waiting["eta_seconds"] <= 3611  # its hour, then its own 10 s


def test_first_in_first_out_keeps_a_backlog_ahead_of_a_newcomer(backend):
    """What fair share changes (lease_order = fifo is the old order)."""
    ordered_backend(backend)
    queue = backend.open()  # the default order of a bare handle: first in, first out
    queue.enqueue(user_jobs("alice", 20))
    queue.enqueue(user_jobs("bob", 1))
    assert [j.user_id for j in lease_all(queue)] == ["alice"] * 20 + ["bob"]


def test_weights_share_the_tokens(backend):
    ordered_backend(backend)
    queue = backend.open(order=fair(weights={"gold": 2.0}))
    queue.enqueue(user_jobs("plain", 60) + user_jobs("gold", 60))
    leased = [j.user_id for j in lease_one_by_one(queue, 30)]
    assert leased.count("gold") == 20 and leased.count("plain") == 10
    # by tokens, not jobs: a user whose jobs cost 4x gets a quarter of the jobs
    queue.enqueue(user_jobs("big", 20, cost=4000) + user_jobs("small", 80, cost=1000))
    later = [j.user_id for j in lease_all(queue, 300) if j.user_id in ("big", "small")][:25]
    assert later.count("big") in (4, 5, 6) and later.count("small") in (19, 20, 21)


def test_jobs_without_a_user_id_share_as_one_user(backend):
    ordered_backend(backend)
    queue = backend.open(order=fair())
    queue.enqueue([Job(id=0, source=f"/d/{i}.pdf", cost=1000) for i in range(10)])
    queue.enqueue(user_jobs("carol", 2))
    assert [j.user_id for j in lease_one_by_one(queue, 4)] == [None, "carol", None, "carol"]


def test_higher_priority_goes_first_and_fair_share_applies_within_it(backend):
    ordered_backend(backend)
    queue = backend.open(order=fair())
    queue.enqueue(user_jobs("alice", 3, priority="low"))
    queue.enqueue(user_jobs("alice", 3) + user_jobs("bob", 1))
    queue.enqueue(user_jobs("alice", 5, priority="high") + user_jobs("bob", 2, priority="high"))
    leased = [(j.priority, j.user_id) for j in lease_one_by_one(queue, 14)]
    assert leased[:7] == [("high", "alice"), ("high", "bob"), ("high", "alice"), ("high", "bob")] + [("high", "alice")] * 3
    assert leased[7:11] == [("normal", "alice"), ("normal", "bob"), ("normal", "alice"), ("normal", "alice")]
    assert leased[11:] == [("low", "alice")] * 3


def test_a_job_is_not_overtaken_by_later_higher_priority_work_for_longer_than_the_max_wait(backend):
    ordered_backend(backend)
    queue = backend.open(order=fair(max_wait=1.0))
    [low] = queue.enqueue(user_jobs("alice", 1, priority="low"))
    [high] = queue.enqueue(user_jobs("bob", 1, priority="high"))
    assert [j.id for j in queue.lease(1, time.time())] == [high]  # within the max wait: overtaken
    time.sleep(1.3)
    later = queue.enqueue(user_jobs("bob", 2, priority="high"))
    assert [j.id for j in lease_one_by_one(queue, 3)] == [low, *later]  # waited too long: it goes first


def test_what_a_job_really_cost_corrects_its_users_share(backend):
    ordered_backend(backend)
    queue = backend.open(order=fair())
    # As estimated, alice's next job would tie with bob's second (place 2).
    # 20x the estimate: behind all of bob's 10; nothing (all cached): tied with his first.
    for alice, bob, actual, place in (("alice", "bob", 20_000, 10), ("ann", "ben", 0, 1)):
        queue.enqueue(user_jobs(alice, 1))
        [job] = queue.lease(1, time.time())
        queue.enqueue(user_jobs(bob, 10))
        job.result = JobResult(tokens_embedded=actual)
        queue.complete(job)
        [again] = queue.enqueue(user_jobs(alice, 1))
        order = [j.id for j in lease_all(queue)]
        assert order.index(again) == place, actual


def test_the_order_is_kept_in_the_queue_across_processes(backend):
    """alice's backlog queued by one process, bob's job by another, leased by a third."""
    ordered_backend(backend)
    code = (
        "import sys\n"
        "from docutrain_cli.jobs import Job\n"
        "from docutrain_cli.queues.fair import FairShare\n"
        "from docutrain_cli.queues.local import LocalQueue\n"
        "from docutrain_cli.queues.pgmq import PgmqQueue\n"
        f"q = {backend.opener()}\n"
        "q.order = FairShare(estimate=lambda job: 1000)\n"
        "user, n = sys.argv[1], int(sys.argv[2])\n"
        "q.enqueue([Job(id=0, source=f'/d/{user}{i}.pdf', user_id=user) for i in range(n)])\n"
    )
    env = {**child_env(), "PYTHONPATH": str(ROOT)}
    for user, n in (("alice", 200), ("bob", 1)):
        subprocess.run([sys.executable, "-c", code, user, str(n)], cwd=ROOT, env=env, check=True, timeout=60)
    queue = backend.open(order=fair())
    assert [j.user_id for j in queue.lease(2, time.time())] == ["alice", "bob"]
    [carol] = queue.enqueue(user_jobs("carol", 1))  # the clock moved with the leases: carol is next
    assert queue.lease(1, time.time())[0].id == carol


def test_two_handles_leasing_at_once_follow_one_order(backend):
    ordered_backend(backend)
    if backend.kind == "local":
        pytest.skip("one runner leases a local queue (its runner lock)")
    import threading

    first, second = backend.open(order=fair()), backend.open(order=fair())
    first.enqueue(user_jobs("alice", 300))
    [bob] = second.enqueue(user_jobs("bob", 1))
    start, taken = threading.Barrier(2), {}

    def lease(name, handle):
        start.wait()
        taken[name] = [j.id for j in handle.lease(2, time.time())]

    threads = [threading.Thread(target=lease, args=(n, h)) for n, h in (("a", first), ("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(taken["a"]) | set(taken["b"])) == 4
    assert bob in taken["a"][:2] + taken["b"][:2]  # in the first batch of whichever got there first
    rest = [j.user_id for j in lease_one_by_one(first, 3) + lease_one_by_one(second, 3)]
    assert rest == ["alice"] * 6

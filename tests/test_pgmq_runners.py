"""Several real `docutrain run` processes share one pgmq queue in the real
PostgreSQL, the way several machines would; one of them dies by SIGKILL.

Each runner is started in its own process group, and "killing a machine"
SIGKILLs that group: the runner and its workers die at once.

Both tests need `run --drain` to keep waiting while other runners hold
leased jobs on a shared (non-exclusive) queue, as its help says ("exit when
nothing is queued, running or waiting to retry"): Runner._work_left must
count `running` when `queue.exclusive` is False.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

import pdfs
from store_checks import assert_one_chunk_set_each
from conftest import Docutrain
from harness import wait_for

pytestmark = pytest.mark.postgres

VISIBILITY = 3.0  # seconds; short so the test does not wait long for a dead runner's jobs
SURVIVOR_VISIBILITY = 600.0  # seconds; no lease of theirs lapses, however loaded the machine


class Fleet(Docutrain):
    """`docutrain` machines pointed at one pgmq queue and one store."""

    own_session = True

    def __init__(self, workdir: Path, url: str, queue_name: str, **env: str):
        super().__init__(
            workdir,
            DOCUTRAIN_QUEUE=url,
            DOCUTRAIN_QUEUE_NAME=queue_name,
            DOCUTRAIN_VISIBILITY_TIMEOUT=f"{VISIBILITY:g}s",
            DOCUTRAIN_POLL_INTERVAL="0.2",
            DOCUTRAIN_RETRY_BASE_DELAY="0.2",
            DOCUTRAIN_RETRY_MAX_DELAY="0.5",
            **env,
        )
        self.url, self.queue_name = url, queue_name

    def sql(self, query: str, *params) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def archived(self) -> list[tuple[int, int]]:
        """(job_id, read_ct) of every done record."""
        return self.sql(f"SELECT (message->>'job_id')::bigint, read_ct FROM pgmq.a_{self.queue_name}")

    def held(self) -> dict[int, int]:
        """job_id -> read_ct of messages read and not given back: leased right
        now, or leased by a runner whose lease lapsed and not read again yet."""
        rows = self.sql(
            f"SELECT (message->>'job_id')::bigint, read_ct FROM pgmq.q_{self.queue_name}"
            " WHERE read_ct > coalesce((message->>'returned_at_read')::int, 0)"
        )
        return dict(rows)


@pytest.fixture
def fleet(tmp_path, pg_url, pgmq_queue_name):
    made = []

    def make(**env: str) -> Fleet:
        made.append(Fleet(tmp_path, pg_url, pgmq_queue_name, **env))
        return made[-1]

    yield make
    for f in made:
        f.stop_all()


def test_runners_drain_one_queue_and_finish_a_killed_runners_jobs(fleet, tmp_path):
    total = 300
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for i in range(total):
        pdfs.multi_page(uploads / f"doc{i:03}.pdf", pages=3, seed=i + 1)
    f = fleet()
    enqueued = f("enqueue", "uploads", "--json")
    assert enqueued.returncode == 0, enqueued.stderr

    # Only the victim's leases may lapse: the survivors lease for longer
    # than this test lasts. With 3 s leases for all, a survivor starved of
    # CPU on a loaded machine missed its lease extension and another
    # survivor rightly read its job again (correct, but not what is tested).
    victim_name = f"victim-{f.queue_name}"  # its connections, as PostgreSQL names them (libpq's PGAPPNAME)
    victim = f.start("run", "--workers", "2", "--drain", "--json", PGAPPNAME=victim_name)
    survivors = [
        f.start("run", "--workers", "2", "--drain", "--json", DOCUTRAIN_VISIBILITY_TIMEOUT=f"{SURVIVOR_VISIBILITY:g}s")
        for _ in range(2)
    ]
    # Kill when the victim is surely holding jobs and most work is still ahead.
    wait_for(lambda: len(f.archived()) >= 20, timeout=120, what="some documents done")
    f.kill_machine(victim)
    # A statement the victim had sent still runs (and commits) in its server
    # process after the kill: what it leased is held only once those are gone.
    wait_for(lambda: not f.sql("SELECT 1 FROM pg_stat_activity WHERE application_name = %s", victim_name),
             timeout=30, what="the killed runner's connections closed")
    held_at_kill = f.held()
    archived_at_kill = f.archived()
    done_at_kill = len(archived_at_kill)
    assert done_at_kill < total - 50, "the corpus was finished before the kill; make it bigger"

    for proc in survivors:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    # Every job done exactly once: one done record each, nothing left, nothing dead.
    archived = f.archived()
    job_ids = [job_id for job_id, _ in archived]
    assert len(job_ids) == total and len(set(job_ids)) == total
    assert f.sql(f"SELECT count(*) FROM pgmq.q_{f.queue_name}") == [(0,)]
    assert f.sql(f"SELECT count(*) FROM pgmq.q_{f.queue_name}_dead") == [(0,)]

    # The victim's jobs came back after its visibility timeout and were
    # finished by the others: read a second time, and done. A job read twice
    # was held at the kill, or done by then after the victim (starved before
    # it was killed) had let its lease lapse.
    redelivered = {job_id for job_id, read_ct in archived if read_ct >= 2}
    lost = set(held_at_kill) | {job_id for job_id, read_ct in archived_at_kill if read_ct >= 2}
    assert redelivered, "no job of the killed runner was redelivered"
    assert redelivered <= lost, "a job was read twice that nobody had lost"
    assert all(read_ct <= 2 for _, read_ct in archived)

    # The store holds exactly one chunk set per document.
    assert_one_chunk_set_each(f.store, total)

    status = f("status", "--json")
    assert status.returncode == 0, status.stderr


def test_drain_waits_for_the_jobs_a_dead_runner_left(fleet, tmp_path):
    """A draining runner must not exit while another runner's lease can still
    lapse: the jobs of a dead machine would sit unfinished until the next run."""
    source = tmp_path / "doc.txt"
    source.write_text("hello")
    slow = fleet(DOCUTRAIN_PROCESSOR="tests.processors:record", DOCUTRAIN_TEST_SLEEP="60")
    assert slow("enqueue", str(source)).returncode == 0
    victim = slow.start("run", "--workers", "1")
    wait_for(lambda: slow.held(), timeout=60, what="the first runner to lease the job")
    slow.kill_machine(victim)

    quick = fleet(DOCUTRAIN_PROCESSOR="tests.processors:record", DOCUTRAIN_TEST_SLEEP="0")
    started = time.monotonic()
    result = quick("run", "--workers", "1", "--drain", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    assert quick.archived() and quick.archived()[0][1] == 2, "the lost job was not finished"
    assert time.monotonic() - started >= VISIBILITY - 1  # it had to wait for the timeout


def test_leases_are_extended_while_a_long_job_runs_and_through_a_stops_grace_period(fleet, tmp_path):
    """A job running three visibility timeouts long, its runner stopped with
    SIGTERM halfway: the lease is extended while the job runs and while the
    stop waits for it, so a second runner polling all along never gets it."""
    source = tmp_path / "long.txt"
    source.write_text("hello")
    f = fleet(
        DOCUTRAIN_PROCESSOR="tests.processors:record", DOCUTRAIN_TEST_SLEEP=f"{3 * VISIBILITY:g}",
        DOCUTRAIN_GRACE_PERIOD="60s",
    )
    assert f("enqueue", str(source)).returncode == 0
    holder = f.start("run", "--workers", "1")

    def started_at():
        rows = f.recorded("SELECT min(at) FROM runs")
        return rows[0][0] if rows else None

    began = wait_for(started_at, timeout=60, what="the job to start")
    other = f.start("run", "--workers", "1")  # takes any job whose lease lapses
    wait_for(lambda: time.time() - began >= 1.5 * VISIBILITY, timeout=60, what="1.5 visibility timeouts")
    holder.send_signal(signal.SIGTERM)  # the grace period covers the rest of the job
    out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    other.send_signal(signal.SIGTERM)
    out, other_err = other.communicate(timeout=60)
    assert other.returncode == 0, other_err
    runs = f.recorded("SELECT job, pid FROM runs")
    assert len(runs) == 1, f"the job ran again elsewhere: {runs}"
    assert f.archived()[0][1] == 1  # read once: the lease never lapsed
    assert "done  job" in err

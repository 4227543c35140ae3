"""Three real `docutrain run` processes drain one Cloudflare queue (the
stand-in, over real HTTP), the way three machines would; one of them dies
by SIGKILL with its workers. Every document must end done exactly once:
the dead runner's leases lapse, Cloudflare hands those messages out again
(attempts 2), and the others finish them. Each runner is started in its own
process group, and "killing a machine" SIGKILLs that group.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pdfs
from store_checks import assert_one_chunk_set_each

ROOT = Path(__file__).resolve().parent.parent
MAIN, DEAD = "main0001", "dead0001"
JOB_TIMEOUT = 3  # seconds; the lease is 2 x 3 + 10 = 16 s, so the test waits that long for the lost jobs


class Fleet:
    def __init__(self, workdir: Path, cf):
        self.workdir = workdir
        self.store = workdir / "docutrain.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCUTRAIN_", "OPENAI_", "SUPABASE_", "CLOUDFLARE_"))}
        self.env.update(
            PYTHONPATH=str(ROOT),
            DOCUTRAIN_QUEUE=f"cloudflare://{cf.account_id}/{MAIN}",
            DOCUTRAIN_CLOUDFLARE_DEAD_QUEUE=DEAD,
            DOCUTRAIN_CLOUDFLARE_API_URL=cf.url,
            CLOUDFLARE_API_TOKEN=cf.token,
            DOCUTRAIN_JOB_TIMEOUT=str(JOB_TIMEOUT),
            DOCUTRAIN_STORE=str(self.store),
            DOCUTRAIN_POLL_INTERVAL="0.2",
            DOCUTRAIN_RETRY_BASE_DELAY="0.2",
            DOCUTRAIN_RETRY_MAX_DELAY="0.5",
        )
        self.procs: list[subprocess.Popen] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "docutrain_cli", *args]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=self.workdir, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(self.argv(*args), cwd=self.workdir, env=self.env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fleet(tmp_path, cloudflare):
    cloudflare.create_queue(DEAD, max_retries=100)
    cloudflare.create_queue(MAIN, max_retries=10, dead_letter_queue=DEAD)
    f = Fleet(tmp_path, cloudflare)
    yield f
    f.stop_all()


def test_runners_drain_one_cloudflare_queue_and_finish_a_killed_runners_jobs(fleet, cloudflare, tmp_path):
    total = 150
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for i in range(total):
        pdfs.multi_page(uploads / f"doc{i:03}.pdf", pages=3, seed=i + 1)
    enqueued = fleet("enqueue", "uploads", "--json")
    assert enqueued.returncode == 0, enqueued.stderr
    assert cloudflare.backlog(MAIN) == total

    runners = [fleet.start("run", "--workers", "2", "--drain", "--json") for _ in range(3)]
    victim = runners[0]
    wait_for(lambda: len(cloudflare.acked) >= 20, timeout=120, what="some documents done")
    assert victim.poll() is None, "the victim finished before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    held_at_kill = {body["job_id"] for body in cloudflare.leased(MAIN)}
    assert len(cloudflare.acked) < total - 30, "the corpus was finished before the kill; make it bigger"

    for proc in runners[1:]:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    # Every job acked exactly once; nothing left; nothing dead.
    acked = collections.Counter(body["job_id"] for body, _ in cloudflare.ack_log)
    assert len(acked) == total and set(acked.values()) == {1}
    assert cloudflare.backlog(MAIN) == 0 and cloudflare.backlog(DEAD) == 0

    # The victim's jobs came back when their leases lapsed and were finished
    # by the others: delivered a second time, and only those.
    redelivered = {body["job_id"] for body, attempts in cloudflare.ack_log if attempts >= 2}
    assert redelivered, "no job of the killed runner was redelivered"
    assert redelivered <= held_at_kill, "a job was delivered twice that nobody had lost"
    assert all(attempts <= 2 for _, attempts in cloudflare.ack_log)

    # The store holds exactly one chunk set per document.
    assert_one_chunk_set_each(fleet.store, total)

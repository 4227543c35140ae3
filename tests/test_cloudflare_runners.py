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
import time
from pathlib import Path

import pytest

import pdfs
from conftest import Docutrain
from harness import wait_for
from store_checks import assert_one_chunk_set_each

MAIN, DEAD = "main0001", "dead0001"
VICTIM_TOKEN = "victim-machine-token"
JOB_TIMEOUT = 3  # seconds; the lease is 2 x 3 + 10 = 16 s, so the test waits that long for the lost jobs


class Fleet(Docutrain):
    """`docutrain` machines pointed at one Cloudflare queue (the stand-in) and one store."""

    own_session = True

    def __init__(self, workdir: Path, cf):
        super().__init__(
            workdir,
            DOCUTRAIN_QUEUE=f"cloudflare://{cf.account_id}/{MAIN}",
            DOCUTRAIN_CLOUDFLARE_DEAD_QUEUE=DEAD,
            DOCUTRAIN_CLOUDFLARE_API_URL=cf.url,
            CLOUDFLARE_API_TOKEN=cf.token,
            DOCUTRAIN_JOB_TIMEOUT=str(JOB_TIMEOUT),
            DOCUTRAIN_POLL_INTERVAL="0.2",
            DOCUTRAIN_RETRY_BASE_DELAY="0.2",
            DOCUTRAIN_RETRY_MAX_DELAY="0.5",
        )


@pytest.fixture
def fleet(tmp_path, cloudflare):
    cloudflare.create_queue(DEAD, max_retries=100)
    cloudflare.create_queue(MAIN, max_retries=10, dead_letter_queue=DEAD)
    f = Fleet(tmp_path, cloudflare)
    yield f
    f.stop_all()


def kill_while_holding(fleet: Fleet, victim, cloudflare) -> set[int]:
    """SIGKILL the victim's machine at a moment it holds leases; the ids of
    the jobs it held. Its workers finish 3-page documents quickly, so it can
    be between an ack and its next pull: frozen (SIGSTOP) first, killed only
    if it holds something, else let go on for a moment. The stand-in is
    given a moment to finish a request the victim sent just before."""
    for _ in range(100):
        os.killpg(victim.pid, signal.SIGSTOP)
        time.sleep(0.3)
        if cloudflare.leased(MAIN, by=VICTIM_TOKEN):
            fleet.kill_machine(victim)
            # Read once it is dead: a pull it sent just before the freeze may
            # have been answered since (its leases last 16 s, long after this).
            time.sleep(0.5)
            return {body["job_id"] for body in cloudflare.leased(MAIN, by=VICTIM_TOKEN)}
        os.killpg(victim.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the victim never held a lease")


def test_runners_drain_one_cloudflare_queue_and_finish_a_killed_runners_jobs(fleet, cloudflare, tmp_path):
    total = 150
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for i in range(total):
        pdfs.multi_page(uploads / f"doc{i:03}.pdf", pages=3, seed=i + 1)
    enqueued = fleet("enqueue", "uploads", "--json")
    assert enqueued.returncode == 0, enqueued.stderr
    assert cloudflare.backlog(MAIN) == total

    # The victim uses its own API token, so the stand-in can say which
    # leases are its own at the moment it dies.
    cloudflare.add_token(VICTIM_TOKEN)
    runners = [fleet.start("run", "--workers", "2", "--drain", "--json") for _ in range(2)]
    victim = fleet.start("run", "--workers", "2", "--drain", "--json", CLOUDFLARE_API_TOKEN=VICTIM_TOKEN)
    runners.insert(0, victim)
    wait_for(lambda: len(cloudflare.acked) >= 20, timeout=120, what="some documents done")
    assert victim.poll() is None, "the victim finished before it could be killed"
    held_at_kill = kill_while_holding(fleet, victim, cloudflare)
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
    assert redelivered == held_at_kill, "exactly the killed runner's jobs are delivered twice"
    assert all(attempts <= 2 for _, attempts in cloudflare.ack_log)

    # The store holds exactly one chunk set per document.
    assert_one_chunk_set_each(fleet.store, total)

"""Measurement 14 of scripts/bench.py: who is served first (issue 21).

14a  a newcomer's wait: alice imports N PDFs of 30 pages on a service
     `docutrain run --workers 4` against the OpenAI stand-in limited to
     120,000 tokens/min; a few seconds later bob uploads one 10-page PDF.
     bob's wait (from his enqueue to his job done) with lease_order fair,
     side by side with lease_order fifo (first in, first out); and how
     much of alice's import was done when bob's document was ready. Target:
     issue 21's 45 s. The fifo wait grows with alice's backlog, the fair one
     does not: quick mode has 12 documents, full mode the issue's 24.
14b  the cost of the fair order on the local queue: leases/s with 100,000
     queued jobs from 1,000 users, against the first-in-first-out order
     (lease_order fifo) on the same jobs. Target: >= 1,000 leases/s.
14c  the same on pgmq (local PostgreSQL), against pgmq.read (the plain
     lease docutrain used before the ordering table) on the same messages.
     Target: no worse than 2x, i.e. ratio >= 0.5.

A lease here is one `lease(1, now)` call, what a runner does when one
worker frees up; each takes one job. Every repetition leases from a fresh
copy of the same queue (a file copy; a database made from a template), the
variants alternating which goes first.

Run just these with `--fair` (or `--only 14`; `--only 14c` for one row).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

QUEUED_JOBS = 100_000
USERS = 1_000
LEASES = 2_000  # per variant and repetition (14b)
PG_LEASES = 1_000  # (14c): a round trip each
SEED = 21
ROWS = {"14a", "14b", "14c"}  # bench.py --only 14b,14c narrows this


# -- the backlog -------------------------------------------------------------------------------


def backlog(jobs: int = QUEUED_JOBS, users: int = USERS, seed: int = SEED) -> list[list]:
    """Enqueue calls (lists of Jobs) as users make them: each user imports
    in a few batches, a few users hold much of the backlog (Zipf-like),
    documents of 500 to 30,000 tokens, 10 % high and 10 % low priority."""
    from docutrain_cli.jobs import Job

    rng = random.Random(seed)
    shares = [1.0 / (rank + 1) ** 0.8 for rank in range(users)]
    total = sum(shares)
    counts = [max(1, int(jobs * s / total)) for s in shares]
    counts[0] += jobs - sum(counts)  # the biggest importer takes the rounding
    calls: list[list] = []
    n = 0
    for user, count in enumerate(counts):
        while count > 0:
            size = min(count, rng.randint(1, 500))
            priority = rng.choices(("high", "normal", "low"), (1, 8, 1))[0]
            calls.append([
                Job(id=0, source=f"/bench/u{user}/doc{n + i}.pdf", sha256=f"{n + i:064x}", user_id=f"user{user:04}",
                    priority=priority, cost=rng.randint(500, 30_000))
                for i in range(size)
            ])
            n += size
            count -= size
    rng.shuffle(calls)
    return calls


def fair_order():
    from docutrain_cli.queues.fair import FairShare

    def estimate(job) -> int:
        raise AssertionError("every benchmark job has its cost")

    return FairShare(estimate=estimate)


def fifo_order():
    from docutrain_cli.queues.order import LeaseOrder

    return LeaseOrder()


def fresh_jobs(calls: list[list]) -> list[list]:
    """The same jobs again, untagged (a queue writes vstart into the Job)."""
    import copy

    return [[copy.copy(job) for job in call] for call in calls]


def lease_rates(queues: dict, leases: int, block: int = 50) -> dict[str, dict]:
    """Lease one job at a time from each queue, `leases` times, in blocks
    taking turns (so a busy moment of the machine falls on every variant):
    leases/s and ms per lease of each."""
    took: dict[str, list[float]] = {name: [] for name in queues}
    names = list(queues)
    for turn in range(0, leases, block):
        for name in names if (turn // block) % 2 == 0 else reversed(names):
            for _ in range(block):
                started = time.perf_counter()
                jobs = queues[name].lease(1, time.time())
                took[name].append(time.perf_counter() - started)
                if len(jobs) != 1:
                    raise RuntimeError(f"{name}: a lease took {len(jobs)} jobs: the queue ran dry or skipped")
    rates = {}
    for name, times in took.items():
        times.sort()
        rates[name] = {"leases_per_s": len(times) / sum(times), "p50_ms": times[len(times) // 2] * 1000,
                       "p99_ms": times[int(len(times) * 0.99)] * 1000}
    return rates


# -- 14b: the local queue ------------------------------------------------------------------------


def local_files(root: Path, calls: list[list], h) -> dict[str, Path]:
    """A queue file per order, each holding the whole backlog."""
    from docutrain_cli.queues.local import LocalQueue

    files = {}
    for name, order in (("fair", fair_order()), ("fifo", fifo_order())):
        path = root / "corpus" / f"lease-{name}" / "queue.db"
        if not path.exists():
            shutil.rmtree(path.parent, ignore_errors=True)
            path.parent.mkdir(parents=True)
            started = time.perf_counter()
            queue = LocalQueue(path, order=order)
            try:
                for call in fresh_jobs(calls):
                    queue.enqueue(call)
            finally:
                queue.close()
            h.log(f"14b: {QUEUED_JOBS:,} jobs enqueued in {name} order in {time.perf_counter() - started:.0f} s")
        files[name] = path
    return files


def bench_local_leases(root: Path, calls: list[list], reps: int, h) -> tuple[object, dict]:
    from docutrain_cli.queues.local import LocalQueue

    files = local_files(root, calls, h)
    orders = {"fair": fair_order, "fifo": fifo_order}
    s: dict[str, list] = {"fair": [], "fifo": [], "ratio": []}
    for rep in range(reps):
        queues = {}
        try:
            for name in orders:
                d = h.fresh_dir(root, f"lease-{name}")
                for suffix in ("", "-wal", "-shm"):
                    if Path(f"{files[name]}{suffix}").exists():
                        shutil.copy(f"{files[name]}{suffix}", d / f"queue.db{suffix}")
                queues[name] = LocalQueue(d / "queue.db", order=orders[name]())
            rates = lease_rates(queues, LEASES)
        finally:
            for queue in queues.values():
                queue.close()
        for name, rate in rates.items():
            s[name].append(rate)
        s["ratio"].append(s["fair"][-1]["leases_per_s"] / s["fifo"][-1]["leases_per_s"])
        h.log(f"14b rep {rep + 1}/{reps}: fair {s['fair'][-1]['leases_per_s']:.0f} leases/s,"
              f" fifo {s['fifo'][-1]['leases_per_s']:.0f} leases/s")
    fair = h.med([r["leases_per_s"] for r in s["fair"]])
    row = h.Row(
        "14b", f"fair lease, local queue, {QUEUED_JOBS:,} queued from {USERS:,} users", fair, "leases/s",
        h.med([r["leases_per_s"] for r in s["fifo"]]), "lease_order fifo, same jobs", h.med(s["ratio"]),
        ">= 1,000 leases/s", fair >= 1000,
        {"leases_per_rep": LEASES, "lease": "lease(1, now): one job per call",
         "fair_p50_ms": h.med([r["p50_ms"] for r in s["fair"]]), "fifo_p50_ms": h.med([r["p50_ms"] for r in s["fifo"]]),
         "fair_p99_ms": h.med([r["p99_ms"] for r in s["fair"]]), "fifo_p99_ms": h.med([r["p99_ms"] for r in s["fifo"]]),
         "per_rep_ratios": s["ratio"]},
    )
    return row, s


# -- 14c: pgmq ---------------------------------------------------------------------------------------


def _pg(h):
    sys.path.insert(0, str(h.REPO / "tests"))
    import pg

    try:
        return pg, pg.find_admin()
    except LookupError as exc:
        h.log(f"14c left out: {exc}")
        return pg, None


class PlainLease:
    """A handle whose lease(1, now) is pgmq.read(queue, vt, 1), parsed as
    docutrain parsed it (the message JSON into a Job)."""

    def __init__(self, url: str, name: str):
        from docutrain_cli.queues.pgmq_setup import connect

        self.conn, self.name = connect(url), name

    def lease(self, limit: int, now: float) -> list:
        from docutrain_cli.jobs import Job, JobState

        rows = self.conn.execute("SELECT msg_id, read_ct, message FROM pgmq.read(%s, %s, %s)",
                                 (self.name, 120, limit)).fetchall()
        return [Job.from_payload(int(m.get("job_id") or i), JobState.RUNNING, m) for i, _, m in rows]

    def close(self) -> None:
        self.conn.close()


def bench_pgmq_leases(root: Path, calls: list[list], reps: int, h) -> tuple[object | None, dict]:
    pg, admin = _pg(h)
    if admin is None:
        return None, {}
    from docutrain_cli.queues.pgmq import PgmqQueue
    from docutrain_cli.queues.pgmq_setup import bundled_sql, init_queue

    admin_url, user = admin
    s: dict[str, list] = {"fair": [], "fifo": [], "plain": [], "ratio": [], "fifo_ratio": []}
    with pg.fresh_database(admin_url, user, prefix="docutrain_bench_fair") as base:
        pg.admin_execute(base, bundled_sql()[0].read_text(encoding="utf-8"))
        started = time.perf_counter()
        for name, order in (("fair", fair_order()), ("fifo", fifo_order())):
            init_queue(base, name)
            queue = PgmqQueue(base, name, order=order)
            try:
                for call in fresh_jobs(calls):
                    queue.enqueue(call)
            finally:
                queue.close()
        pg.admin_execute(base, "VACUUM ANALYZE")
        h.log(f"14c: {QUEUED_JOBS:,} jobs enqueued in fair and fifo order in {time.perf_counter() - started:.0f} s")
        template = base.rsplit("/", 1)[1]
        handles = {
            "fair": lambda url: PgmqQueue(url, "fair", order=fair_order()),
            "fifo": lambda url: PgmqQueue(url, "fifo", order=fifo_order()),
            "plain": lambda url: PlainLease(url, "fair"),  # the fair queue's messages, by msg_id
        }
        for rep in range(reps):
            with contextlib.ExitStack() as stack:
                queues = {}
                for name, handle in handles.items():
                    queues[name] = handle(stack.enter_context(_copy_of(pg, admin_url, user, template)))
                    stack.callback(queues[name].close)
                for name, rate in lease_rates(queues, PG_LEASES).items():
                    s[name].append(rate)
            s["ratio"].append(s["fair"][-1]["leases_per_s"] / s["plain"][-1]["leases_per_s"])
            s["fifo_ratio"].append(s["fifo"][-1]["leases_per_s"] / s["plain"][-1]["leases_per_s"])
            h.log(f"14c rep {rep + 1}/{reps}: fair {s['fair'][-1]['leases_per_s']:.0f},"
                  f" fifo {s['fifo'][-1]['leases_per_s']:.0f}, pgmq.read {s['plain'][-1]['leases_per_s']:.0f} leases/s")
    ratio = h.med(s["ratio"])
    row = h.Row(
        "14c", f"fair lease, pgmq, {QUEUED_JOBS:,} queued from {USERS:,} users", h.med([r["leases_per_s"] for r in s["fair"]]),
        "leases/s", h.med([r["leases_per_s"] for r in s["plain"]]), "pgmq.read, same messages", ratio,
        ">= 0.5 ratio (no worse than 2x)", ratio >= 0.5,
        {"leases_per_rep": PG_LEASES, "lease": "lease(1, now): one job per call, one round trip",
         "fifo_order_leases_per_s": h.med([r["leases_per_s"] for r in s["fifo"]]),
         "fifo_order_ratio": h.med(s["fifo_ratio"]),
         **{f"{k}_p50_ms": h.med([r["p50_ms"] for r in s[k]]) for k in ("fair", "fifo", "plain")},
         **{f"{k}_p99_ms": h.med([r["p99_ms"] for r in s[k]]) for k in ("fair", "fifo", "plain")},
         "per_rep_ratios": s["ratio"]},
    )
    return row, s


@contextlib.contextmanager
def _copy_of(pg, admin_url: str, user: str, template: str):
    """A database made from `template` (the same rows, the same statistics)."""
    name = f"{template}_c{time.monotonic_ns() % 10**8}"
    pg.admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield pg.url(user, name)
    finally:
        pg.admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- 14a: a newcomer's wait --------------------------------------------------------------------------------


TPM = 120_000
WORKERS = 4
BOB_AFTER = 6.0  # seconds after alice's import is queued, as in the issue
KEY = "sk-bench-fair-0000000000000000000000"


def newcomer_run(root: Path, h, standin, alice: Path, bob: Path, order: str) -> dict:
    """One service run: alice's import, bob's upload BOB_AFTER s later; until bob's document is done."""
    from docutrain_cli.jobs import JobState
    from docutrain_cli.queues.local import LocalQueue

    d = h.fresh_dir(root, f"newcomer-{order}")
    queue_path = d / "queue.db"
    with standin.Server() as state:
        # The account is busy from the first token (no idle minute's burst),
        # as it is for a service at its limit.
        state.limit(tpm=TPM, latency=0.15, level=0.0)
        env = h.base_env(queue_path, d / "store.db", DOCUTRAIN_EMBEDDER="openai", OPENAI_API_KEY=KEY,
                         OPENAI_BASE_URL=state.base_url, DOCUTRAIN_EMBEDDING_DIMENSIONS="256",
                         DOCUTRAIN_EMBEDDING_TPM=str(TPM), DOCUTRAIN_LEASE_ORDER=order)
        runner = subprocess.Popen(h.docutrain_cmd() + ["run", "--workers", str(WORKERS), "--json"], env=env, cwd=d,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        queue = None
        try:
            _, out = h.run(h.docutrain_cmd() + ["enqueue", str(alice), "--user-id", "alice", "--json"], env, d)
            alice_ids = [job["id"] for job in json.loads(out)["queued"]]
            time.sleep(BOB_AFTER)
            asked = time.time()
            enqueue_s, out = h.run(h.docutrain_cmd() + ["enqueue", str(bob), "--user-id", "bob", "--json"], env, d)
            [bob_id] = [job["id"] for job in json.loads(out)["queued"]]
            queue = LocalQueue(queue_path)
            deadline = time.monotonic() + 900
            while (job := queue.job(bob_id)).state != JobState.DONE:
                if runner.poll() is not None or time.monotonic() > deadline or job.state == JobState.DEAD:
                    raise h.BenchError(f"14a ({order}): bob's job is {job.state}, runner exit {runner.poll()}:"
                                       f" {runner.stderr.read()[-2000:] if runner.poll() is not None else ''}")
                time.sleep(0.2)
            alice_states = [queue.job(i).state for i in alice_ids]
            return {
                "bob_wait_s": job.finished_at - asked,
                "bob_started_after_s": job.started_at - asked,
                "bob_enqueue_s": enqueue_s,  # the command's wall time, start-up included
                "alice_jobs": len(alice_ids),
                # running: in a worker, or among the jobs the runner leases ahead (workers / 2)
                "alice_queued_when_bob_done": sum(1 for st in alice_states if st == JobState.QUEUED),
                "alice_done_when_bob_done": sum(1 for st in alice_states if st == JobState.DONE),
                "rate_limited": state.rate_limited,
            }
        finally:
            if queue is not None:
                queue.close()
            runner.send_signal(signal.SIGTERM)
            try:
                runner.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.communicate()


def bench_newcomer(mode, root: Path, reps: int, h) -> tuple[object, dict]:
    standin = h._load_standin()
    alice_docs = 12 if mode.name == "quick" else 24
    alice, _ = h.pdf_folder(root / "corpus", f"fair-alice-{alice_docs}", [30] * alice_docs, 2100)
    bob, _ = h.pdf_folder(root / "corpus", "fair-bob", [10], 2200)
    s: dict[str, list] = {"fair": [], "fifo": [], "ratio": []}
    for rep in range(reps):
        for order in ("fair", "fifo") if rep % 2 == 0 else ("fifo", "fair"):
            s[order].append(newcomer_run(root, h, standin, alice, bob, order))
        s["ratio"].append(s["fair"][-1]["bob_wait_s"] / s["fifo"][-1]["bob_wait_s"])
        h.log(f"14a rep {rep + 1}/{reps}: bob waited {s['fair'][-1]['bob_wait_s']:.0f} s (fair,"
              f" {s['fair'][-1]['alice_done_when_bob_done']} of alice's {alice_docs} done by then) vs"
              f" {s['fifo'][-1]['bob_wait_s']:.0f} s (fifo, {s['fifo'][-1]['alice_done_when_bob_done']} done)")
    fair = h.med([r["bob_wait_s"] for r in s["fair"]])
    ratio = h.med(s["ratio"])
    done = h.med([r["alice_done_when_bob_done"] for r in s["fair"]])
    row = h.Row(
        "14a", f"newcomer's wait: bob's 10 pages {BOB_AFTER:g} s into alice's {alice_docs} x 30 pages,"
               f" {WORKERS} workers, {TPM:,} TPM", fair, "s",
        h.med([r["bob_wait_s"] for r in s["fifo"]]), "lease_order fifo", ratio,
        "fair wait <= 45 s (issue 21)", fair <= 45,
        {"alice_docs": alice_docs, "bob_after_s": BOB_AFTER, "tpm": TPM, "workers": WORKERS,
         "wait": "from just before bob's enqueue to his job's finished_at",
         "fair_alice_done_when_bob_done": done,
         "fifo_alice_done_when_bob_done": h.med([r["alice_done_when_bob_done"] for r in s["fifo"]]),
         "fair_alice_queued_when_bob_done": h.med([r["alice_queued_when_bob_done"] for r in s["fair"]]),
         "fifo_alice_queued_when_bob_done": h.med([r["alice_queued_when_bob_done"] for r in s["fifo"]]),
         "fair_bob_enqueue_s": h.med([r["bob_enqueue_s"] for r in s["fair"]]),
         "fair_bob_started_after_s": h.med([r["bob_started_after_s"] for r in s["fair"]]),
         "fifo_bob_started_after_s": h.med([r["bob_started_after_s"] for r in s["fifo"]]),
         "per_rep_ratios": s["ratio"]},
    )
    return row, s


# -- all of 14 ------------------------------------------------------------------------------------------------


def bench_fair(mode, root: Path, ncpu: int, reps: int, *, h) -> tuple[list, dict]:
    """`h` is scripts/bench.py (its helpers and Row), passed in to avoid a circular import."""
    rows, samples = [], {}
    if "14a" in ROWS:
        row, samples["14a"] = bench_newcomer(mode, root, reps, h)
        rows.append(row)
    calls = backlog()
    if "14b" in ROWS:
        row, samples["14b"] = bench_local_leases(root, calls, reps, h)
        rows.append(row)
    if "14c" in ROWS:
        row, samples["14c"] = bench_pgmq_leases(root, calls, reps, h)
        if row is not None:
            rows.append(row)
    return rows, samples

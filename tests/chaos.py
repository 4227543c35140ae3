"""Chaos: `docutrain run` killed in every way a machine kills it, while
documents are enqueued beside it and Supabase comes and goes; then one
`run --drain`, and the promises checked (issue 10).

For `seconds`: start `docutrain run` (three at once on pgmq); after a random
1-5 s do one of: kill -9 of its whole process group, kill -9 of the runner
alone, kill -9 of one random worker, kill -9 of the forkserver, kill -9 of
multiprocessing's resource tracker, kill -9 of any one of its descendants
(whichever it is: worker, forkserver, tracker), SIGTERM, two SIGINTs in a
row. Meanwhile `enqueue`s run beside it, for a few users (and none) at mixed
priorities (`--priority`, or the default); some are killed with kill -9
halfway and then repeated, as a user would. With Supabase outages the
stand-in refuses connections for random stretches (the users' side:
tests/chaos_workload.py). Then (on files) six more enqueues, queued
together, so the drain has a backlog to order.

Invariants, checked at the end (tests/chaos_invariants.py): every document whose enqueue printed a job
id (or said it was already queued) ends ready exactly once, with one
complete chunk set (indexes 0..n-1, no gaps, no duplicates, every page's
text present); nothing dead; nothing left queued; no process outlives its
runner; no traceback in any output; with Supabase, no status lost and none
regressed from ready/error to processing; and the final drain leases in
the lease order (queues/order.py): every job due when it starts is leased
after every job of a higher priority, and within a priority in order of
virtual start (fair share).

Real parts only: real PDFs (tests/pdfs.py), the real pipeline with the
offline embedder, real subprocesses and signals. Every random choice comes
from one seed, printed first, so a failing run can be replayed (timing
still varies). Used by scripts/chaos (long runs) and tests/test_chaos.py.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from chaos_invariants import Invariants  # noqa: E402
from chaos_workload import PRIORITIES, Doc, Workload  # noqa: E402
from harness import child_env  # noqa: E402
from proctree import alive, descendants, forkserver_of, sigkill, tracker_of, workers_of  # noqa: E402

ACTIONS = (
    "kill-group", "kill-runner", "kill-worker", "kill-forkserver", "kill-tracker", "kill-descendant",
    "sigterm", "double-sigint",
)
ENDS_RUNNER = {"kill-group", "kill-runner", "sigterm", "double-sigint"}
EXPECTED_EXIT = {"kill-group": {-9}, "kill-runner": {-9}, "sigterm": {0}, "double-sigint": {130}}
GRACE = 5.0  # the runners' grace period on a stop
VISIBILITY = 4.0  # pgmq: a dead runner's jobs come back after this long
ORPHAN_WAIT = 20.0  # how long a runner's processes may take to follow it
FINAL_BACKLOG = 6  # enqueues made just before the final drain, all of them queued together


@dataclasses.dataclass
class Options:
    seconds: float = 30.0
    seed: int | None = None
    backend: str = "local"  # local | pgmq
    supabase_outages: bool = False
    workers: int = 2
    pg_url: str | None = None  # pgmq: the database (pgmq installed, or installable)
    queue_name: str = "chaos"
    drain_timeout: float = 900.0


@dataclasses.dataclass
class Report:
    seed: int
    backend: str
    supabase: bool
    seconds: float = 0.0
    actions: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    runners_started: int = 0
    enqueues: int = 0
    enqueues_killed: int = 0
    documents: int = 0
    pages: int = 0
    chunks: int = 0
    outages: int = 0
    outage_seconds: float = 0.0
    drain_seconds: float = 0.0
    pools_replaced: int = 0  # broken pools the runners replaced
    jobs_returned: int = 0  # jobs a stop or a broken pool gave back uncharged
    worker_crashes: int = 0  # attempts charged to a killed worker
    by_priority: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # enqueue calls
    drain_leases_checked: int = 0  # jobs whose place in the final drain's lease order was checked
    violations: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def lines(self) -> list[str]:
        acts = ", ".join(f"{a} {self.actions[a]}" for a in ACTIONS)
        out = [
            f"chaos {self.backend}{' + supabase outages' if self.supabase else ''}, seed {self.seed}: "
            f"{self.seconds:.0f} s of chaos, {self.runners_started} runners started",
            f"  actions: {acts}",
            f"  enqueues: {self.enqueues} ({self.enqueues_killed} killed halfway and repeated); "
            f"documents {self.documents}, pages {self.pages}, chunks {self.chunks}",
            "  priorities asked: " + ", ".join(f"{p or 'default'} {self.by_priority[p or 'default']}" for p in PRIORITIES)
            + f"; drain's lease order checked over {self.drain_leases_checked} jobs",
        ]
        if self.supabase:
            out.append(f"  supabase outages: {self.outages}, {self.outage_seconds:.0f} s in all")
        out.append(
            f"  runners' logs: {self.pools_replaced} broken pools replaced, {self.jobs_returned} jobs returned "
            f"uncharged, {self.worker_crashes} attempts charged to killed workers"
        )
        out.append(f"  final drain: {self.drain_seconds:.1f} s")
        out.append("  invariants: " + ("all held" if self.ok else f"{len(self.violations)} VIOLATED"))
        out += [f"  ! {v}" for v in self.violations]
        return out


class Proc:
    """A docutrain subprocess in its own process group, output in files."""

    def __init__(self, chaos: "Chaos", name: str, args: list[str]):
        chaos.counter += 1
        stem = chaos.logs / f"{chaos.counter:04}-{name}"
        self.out_path, self.err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "docutrain_cli", *args], cwd=chaos.workdir, env=chaos.env,
                stdout=out, stderr=err, start_new_session=True,
            )
        self.pid = self.popen.pid
        self.known: set[int] = set()  # every descendant we saw: none may outlive us

    def note_descendants(self) -> None:
        if self.popen.poll() is None:
            self.known.update(descendants(self.pid))

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")


class Chaos(Workload, Invariants):
    def __init__(self, options: Options, workdir: Path, log: Callable[[str], None] = print):
        self.o = options
        self.seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1, 10**9)
        self.rng = random.Random(self.seed)
        self.workdir = Path(workdir)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.counter = 0
        self.report = Report(self.seed, options.backend, options.supabase_outages)
        self.docs: dict[str, Doc] = {}  # key (source path or document id) -> doc
        self.expected: set[str] = set()  # keys an enqueue printed
        self.by_storage_path: dict[str, str] = {}  # Supabase: storage path -> document id
        self.owners = [str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in range(3)]  # Supabase users
        self.drain_started = 0.0  # epoch seconds
        self.drain_log = ""  # the final drain's stderr: its "start job" lines are its leases, in order
        self.procs: list[Proc] = []
        self.standin = None
        self.transitions: list[tuple[str, str, str]] = []  # (document id, old, new)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.env = self._env()

    # -- setup -----------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = child_env(
            DOCUTRAIN_STORE=str(self.workdir / "docutrain.db"),
            DOCUTRAIN_EMBEDDER="offline",
            DOCUTRAIN_POLL_INTERVAL="0.2",
            DOCUTRAIN_GRACE_PERIOD=f"{GRACE:g}s",
            # The harness's kills cost attempts; a document must not run out
            # of them because of us. "Nothing dead" still catches every
            # permanent failure.
            DOCUTRAIN_MAX_ATTEMPTS="1000",
            DOCUTRAIN_RETRY_BASE_DELAY="0.2",
            DOCUTRAIN_RETRY_MAX_DELAY="2",
        )
        if self.o.backend == "pgmq":
            if not self.o.pg_url:
                raise ValueError("the pgmq backend needs a PostgreSQL URL")
            env.update(
                DOCUTRAIN_QUEUE=self.o.pg_url, DOCUTRAIN_QUEUE_NAME=self.o.queue_name,
                DOCUTRAIN_VISIBILITY_TIMEOUT=f"{VISIBILITY:g}s",
            )
        else:
            env["DOCUTRAIN_QUEUE"] = str(self.workdir / "queue.db")
        return env

    def _guarded(self, loop, rng: random.Random) -> None:
        """Run one of the harness's own loops; its crash is a violation, not a
        thread warning (a run whose enqueues died would check nothing)."""
        try:
            loop(rng)
        except Exception as exc:  # noqa: BLE001 - any crash of the harness fails the run
            with self._lock:
                self.report.violations.append(f"the harness's {loop.__name__} crashed: {exc!r}")

    def run(self) -> Report:
        self.log(f"chaos: seed {self.seed} (replay with --seed {self.seed}); backend {self.o.backend}"
                 f"{', supabase outages' if self.o.supabase_outages else ''}; logs in {self.logs}")
        if self.o.supabase_outages:
            self._start_supabase()
        if self.o.backend == "pgmq":
            init = self._call("queue-init", ["queue", "init"], timeout=120)
            if init != 0:
                self.report.violations.append(f"queue init exited {init}")
                return self.report
        loops = [self._enqueue_loop] + ([self._outage_loop] if self.standin is not None else [])
        threads = [threading.Thread(target=self._guarded, args=(loop, random.Random(self.rng.random())), daemon=True)
                   for loop in loops]
        try:
            for t in threads:
                t.start()
            started = time.monotonic()
            self._chaos_loop(started + self.o.seconds)
            self.report.seconds = time.monotonic() - started
            self._stop.set()
            for t in threads:
                t.join(120)
            if self.report.enqueues == 0:
                self.report.violations.append("no enqueue ran while the runners were being killed")
            self._stop_runners()
            self._final_drain()
            self._check()
        finally:
            self._stop.set()
            for proc in self.procs:
                if proc.popen.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            if self.standin is not None:
                self.standin.close()
        for line in self.report.lines():
            self.log(line)
        return self.report

    # -- processes ---------------------------------------------------------------

    def _start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(self, name, args)
        with self._lock:
            self.procs.append(proc)
        return proc

    def _call(self, name: str, args: list[str], timeout: float) -> int | None:
        proc = self._start(name, args)
        code = proc.wait(timeout)
        if code is None:
            self.report.violations.append(f"{name} did not finish in {timeout:g} s ({proc.err_path.name})")
        return code

    def _runner(self) -> Proc:
        self.report.runners_started += 1
        return self._start("run", ["run", "--workers", str(self.o.workers)])

    # -- the chaos loop ------------------------------------------------------------

    def _chaos_loop(self, deadline: float) -> None:
        slots: list[Proc | None] = [None] * (3 if self.o.backend == "pgmq" else 1)
        while time.monotonic() < deadline:
            for i, proc in enumerate(slots):
                if proc is None:
                    slots[i] = self._runner()
            end = time.monotonic() + self.rng.uniform(1, 5)
            while time.monotonic() < min(end, deadline):
                for proc in slots:
                    proc.note_descendants()
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                break
            i = self.rng.randrange(len(slots))
            action = self.rng.choice(ACTIONS)
            if self._act(slots[i], action):
                slots[i] = None
        self._runners_left = [p for p in slots if p is not None]

    def _act(self, proc: Proc, action: str) -> bool:
        """Do `action` to a runner; True when it is meant to end the runner."""
        proc.note_descendants()
        if proc.popen.poll() is not None:
            self.report.violations.append(f"runner {proc.err_path.name} died on its own (exit {proc.popen.returncode})")
            self._after_exit(proc, None)
            return True
        self.report.actions[action] += 1
        if action == "kill-group":
            os.killpg(proc.pid, signal.SIGKILL)
        elif action == "kill-runner":
            os.kill(proc.pid, signal.SIGKILL)
        elif action == "kill-worker":
            workers = workers_of(proc.pid)
            if workers:
                sigkill(self.rng.choice(sorted(workers)))
        elif action == "kill-forkserver":
            server = forkserver_of(proc.pid)
            if server:
                sigkill(server)
        elif action == "kill-tracker":
            tracker = tracker_of(proc.pid)
            if tracker:
                sigkill(tracker)
        elif action == "kill-descendant":
            below = descendants(proc.pid)
            if below:
                sigkill(self.rng.choice(sorted(below)))
        elif action == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)  # systemd's KillMode=mixed
        elif action == "double-sigint":
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
            time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
        if action not in ENDS_RUNNER:
            return False
        self._after_exit(proc, action)
        return True

    def _after_exit(self, proc: Proc, action: str | None) -> None:
        code = proc.wait(GRACE + 60)
        if code is None:
            self.report.violations.append(f"runner {proc.err_path.name} still running 65 s after {action}")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        elif action and code not in EXPECTED_EXIT[action] and not (
            code in (-signal.SIGTERM, -signal.SIGINT, 130) and "run started" not in proc.err_path.read_text()
        ):  # stopped before it began: Python's default handlers, nothing leased yet
            self.report.violations.append(
                f"runner {proc.err_path.name} exited {code} after {action}, expected {sorted(EXPECTED_EXIT[action])}"
            )
        self._check_orphans(proc)

    def _check_orphans(self, proc: Proc) -> None:
        end = time.monotonic() + ORPHAN_WAIT
        while time.monotonic() < end and any(alive(pid) for pid in proc.known):
            time.sleep(0.1)
        left = sorted(pid for pid in proc.known if alive(pid))
        if left:
            self.report.violations.append(f"processes {left} outlived their runner {proc.err_path.name}")
            for pid in left:
                sigkill(pid)

    def _stop_runners(self) -> None:
        for proc in getattr(self, "_runners_left", []):
            proc.note_descendants()
            os.kill(proc.pid, signal.SIGTERM)
            self.report.actions["sigterm"] += 1
            self._after_exit(proc, "sigterm")

    # -- the end ---------------------------------------------------------------------

    def _final_drain(self) -> None:
        if self.standin is not None:
            self.standin.up()
            for doc_id, doc in self.docs.items():  # a user pulls what is still pending
                self.expected.add(doc_id)
            code = self._call("enqueue", ["enqueue", "--from-supabase", "--json"], timeout=120)
            if code != 0:
                self.report.violations.append(f"the final enqueue --from-supabase exited {code}")
        else:  # a backlog of several users and priorities, for the drain's lease order
            for _ in range(FINAL_BACKLOG):
                self._enqueue(self.rng, kill=False)
        if self.o.backend == "pgmq":  # leases of killed runners lapse: all due before the drain
            time.sleep(VISIBILITY + 1)
        started = time.monotonic()
        self.drain_started = time.time()
        drain = self._start("drain", ["run", "--drain", "--workers", str(self.o.workers)])
        code = drain.wait(self.o.drain_timeout)
        self.report.drain_seconds = time.monotonic() - started
        self.drain_log = drain.err_path.read_text(errors="replace")
        if code != 0:
            self.report.violations.append(f"run --drain exited {code} ({drain.err_path.name})")
            if code is None:
                os.killpg(drain.pid, signal.SIGKILL)
                drain.wait(10)

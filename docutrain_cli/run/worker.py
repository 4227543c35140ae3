"""What runs inside each worker process.

Workers are started by the runner's process pool (forkserver, so they never
inherit the parent's network clients or threads). `init_worker` loads the
configured processor once and builds the process's one WorkerContext; each
job is then `processor(job, context) -> JobResult | None`.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import threading
import time
from typing import Any, Callable, Optional

from docutrain_cli.run import activity
from docutrain_cli.config import Settings
from docutrain_cli.errors import ConfigError
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.ratelimit.order import Place
from docutrain_cli.run.progress_channel import ProgressSender

class WorkerContext:
    """Everything a processor reuses from one job to the next in its process.

    The store, the embedder and the Supabase client are made on first use,
    in the process that uses them (clients never cross a fork), and kept for
    the process's later jobs. So is the embedding API's rate budget, shared
    by all workers (and all runners on a shared queue): every processor
    reaches it the same way, and its requests stand in the budget's line
    where the lease order puts the job being run (`working_on`).
    """

    def __init__(self, settings: Settings, progress_address: str | None = None):
        self.settings = settings
        self.job: Job | None = None  # the job being run (working_on)
        self.job_id: int | None = None  # its id, for report_progress
        self._progress = ProgressSender(progress_address)
        self._store = None
        self._embedder = None
        self._supabase = None
        self._downloads = None
        self._budget = None
        self._lease_order = None

    @property
    def store(self):
        """The local store (docutrain_cli.store.local.LocalStore)."""
        if self._store is None:
            from docutrain_cli.store.local import LocalStore

            # The runner checkpoints the store's WAL between our writes (LocalStore).
            self._store = LocalStore(self.settings.store, checkpoints=False)
        return self._store

    @property
    def embedder(self):
        """The embedder the settings name (docutrain_cli.pipeline.embed)."""
        if self._embedder is None:
            from docutrain_cli.pipeline.embed import make_embedder

            self._embedder = make_embedder(self.settings, budget=self.budget)
        return self._embedder

    @property
    def budget(self):
        """The embedding API's shared rate budget (docutrain_cli.ratelimit.budget),
        or None with the offline embedder, which has no limit."""
        if self._budget is None and self.settings.embedder_kind == "openai":
            from docutrain_cli.ratelimit.budget import open_budget

            self._budget = open_budget(self.settings)
            if self.job is not None:
                self._budget.place = self._place(self.job)
        return self._budget

    def working_on(self, job: Job | None) -> None:
        """The job this process runs now (None: between jobs), for progress
        reports and for where its requests stand in the budget's line."""
        self.job = job
        self.job_id = job.id if job is not None else None
        if self._budget is not None:
            self._budget.place = self._place(job) if job is not None else Place()

    def _place(self, job: Job) -> Place:
        if self._lease_order is None:
            from docutrain_cli.queues.fair import order_for

            self._lease_order = order_for(self.settings)
        return self._lease_order.place(job)

    @property
    def supabase(self):
        """A Supabase client for this process (raises PermanentError when
        Supabase is not configured)."""
        if self._supabase is None:
            from docutrain_cli.supabase.chunks import WORKER_TIMEOUT
            from docutrain_cli.supabase.client import make_client

            self._supabase = make_client(self.settings, WORKER_TIMEOUT)
        return self._supabase

    @property
    def downloads(self):
        """This worker's Storage downloads (at most one file on disk)."""
        if self._downloads is None:
            from docutrain_cli.supabase.storage import Downloads

            self._downloads = Downloads(self.settings.storage_bucket, user_prefix=self.settings.storage_user_prefix)
        return self._downloads

    def report_progress(self, message: str) -> None:
        """Tell the runner what the current job is doing ("OCR page 3/40"),
        for its display. Best effort: never blocks, never fails the job."""
        if self.job_id is not None:
            self._progress.send(self.job_id, message)
            board = activity.current()  # and the dashboard, which reads <store>.workers
            if board is not None:
                board.job_progress(self.job_id, message)

    def close(self) -> None:
        """Release what was made (in-process runs and tests; a worker
        process simply exits)."""
        if self._store is not None:
            self._store.close()
        if self._supabase is not None:
            from docutrain_cli.supabase.client import close_client

            close_client(self._supabase)
        if self._downloads is not None:
            self._downloads.clear()
        if self._budget is not None:
            self._budget.store.close()
        self._store = self._embedder = self._supabase = self._downloads = self._budget = None


Processor = Callable[[Job, WorkerContext], Optional[JobResult]]

# The pool calls run_jobs(jobs) with nothing else, so the worker's processor
# and context live here, set once by init_worker: truly per process.
_processor: Processor | None = None
_context: WorkerContext | None = None


def load_processor(spec: str) -> Processor:
    """'package.module:function' -> the function."""
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"processor: cannot load {spec!r}: {exc}") from None


def _die_with_runner(runner_pid: int) -> None:
    """If the runner is killed (even kill -9) its workers must not linger and
    keep writing. A worker's parent is the forkserver, not the runner, and
    the forkserver outlives the runner while any worker is busy (each worker
    holds its liveness pipe), so PR_SET_PDEATHSIG alone never fired for busy
    workers. Watch the runner itself: a pidfd becomes readable when it exits
    (Linux 5.3+); elsewhere poll its pid."""
    try:
        pidfd = os.pidfd_open(runner_pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)  # already gone
        return
    except (AttributeError, OSError):  # pragma: no cover - old kernel or not Linux
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:  # pragma: no cover
            while _alive(runner_pid):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="docutrain-die-with-runner", daemon=True).start()


def _alive(pid: int) -> bool:  # pragma: no cover - only without pidfd
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def init_worker(settings: Settings, runner_pid: int | None = None, progress_address: str | None = None) -> None:
    """Pool initializer: Ctrl-C is the runner's business, not the workers'."""
    global _processor, _context
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if runner_pid is not None:
        _die_with_runner(runner_pid)
    _processor = load_processor(settings.processor)
    _context = WorkerContext(settings, progress_address)
    activity.start_worker(settings.store)  # the dashboard shows this worker


def run_jobs(jobs: list[Job]) -> tuple[list[JobResult | Exception], float]:
    """The pool's task: `jobs` one after another (one job, or several short
    ones, see run/backlog.py). A job's exception is its own outcome, so one
    failing job costs the others nothing. Returns the outcomes, in order, and
    the seconds they took (which size the tasks that follow)."""
    assert _processor is not None and _context is not None, "init_worker not called"
    board = activity.current()
    outcomes: list[JobResult | Exception] = []
    started = time.perf_counter()
    try:
        for job in jobs:
            if board is not None:
                board.job_started(job, finished=1 if outcomes else 0)
            try:
                outcomes.append(run_with(_processor, job, _context))
            except Exception as exc:  # noqa: BLE001 - the runner classifies it
                outcomes.append(exc)
    finally:
        if board is not None:
            board.job_finished()
    return outcomes, time.perf_counter() - started


def run_with(processor: Processor, job: Job, context: WorkerContext) -> JobResult:
    """One job through a processor; None (nothing to report) is an empty
    result, and a plain dict (a processor written before JobResult) is read
    like an old queue record."""
    context.working_on(job)
    try:
        result: Any = processor(job, context)
    finally:
        context.working_on(None)
    if result is None:
        return JobResult()
    return JobResult.from_dict(result) if isinstance(result, dict) else result


def noop(job: Job, context: WorkerContext) -> None:
    """A processor that does nothing: measures the dispatcher's own cost."""
    return None

"""The worker pool: pebble's ProcessPool, watched so it can be replaced.

pebble replaces a worker that dies and fails only that worker's task. What
it does not survive is the pool itself breaking, and that happens on real
machines when the OOM killer picks the wrong process:
- every worker gone while none was running a task (an idle worker or the
  forkserver killed): pebble marks the pool broken ("All workers expired"),
  fails its backlog with BrokenProcessPool and refuses new tasks with a
  RuntimeError;
- the forkserver killed while workers run: its workers die with it (the
  kernel kills them, see forkserver_child.py) and pebble reports each running task
  as ProcessExpired, exit code 255 (nobody is left to report the real one);
  multiprocessing starts a new forkserver for the next worker;
- workers that cannot start at all (the forkserver dies on start, fork
  fails): BrokenProcessPool at once.

None of these is a job's fault. `broken()` tells them apart from a crash a
job caused, so the runner can give the jobs back without charging an
attempt and carry on with a fresh pool.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

from docutrain_cli.config import Settings
from docutrain_cli.errors import DocutrainError
from docutrain_cli.jobs import Job
from docutrain_cli.run.forkserver import ensure_running as ensure_forkserver, forkserver_context, forkserver_pid
from docutrain_cli.run.tracker import restore as restore_tracker
from docutrain_cli.run.worker import WorkerContext, init_worker, load_processor, run_jobs, run_with


PEBBLE_POLL = 0.02  # seconds


class PoolStartError(Exception):
    """A fresh pool could not start its workers."""


class WorkerPoolError(DocutrainError):
    """Fresh pools keep failing: the run cannot go on (exit 1)."""


class PoolBroken(Exception):
    """The pool refused a task because it is broken."""


class WorkerPool:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._pool = None
        self._forkserver: int | None = None  # the process our workers were forked from
        self.started_at = 0.0
        self.progress_address: str | None = None  # the runner's progress inbox
        # A service's forkserver imports the client libraries (forkserver.client_modules)
        # once, so no first upload waits for them; a drain does not pay that at start.
        self.preload_clients = False

    def start(self) -> None:
        """Start a fresh pebble pool and its workers now (not at the first
        job), so a pool that cannot start says so here."""
        from concurrent.futures.process import BrokenProcessPool

        from pebble import ProcessPool
        from pebble.common import CONSTS

        # pebble's own threads poll every `sleep_unit` (0.1 s by default): a
        # pool's stop waited up to that long for one of them, a drain's end
        # with it. 0.02 s: a few dozen cheap wake-ups a second.
        CONSTS.sleep_unit = PEBBLE_POLL
        restore_tracker(())  # the pool's channel registers its semaphores with it now
        pool = ProcessPool(
            max_workers=self.settings.workers,
            initializer=init_worker,
            initargs=(self.settings, os.getpid(), self.progress_address),
            context=forkserver_context(self.settings.processor, self.settings if self.preload_clients else None),
        )
        try:
            ensure_forkserver()
            started = pool.active  # pebble starts the pool and its workers here
        except (BrokenProcessPool, OSError, EOFError) as exc:
            _stop(pool)
            raise PoolStartError(_cause(exc)) from None
        if not started:
            _stop(pool)
            raise PoolStartError("the pool stopped as it started")
        self._pool, self._forkserver, self.started_at = pool, forkserver_pid(), time.monotonic()

    @property
    def started(self) -> bool:
        return self._pool is not None

    def schedule(self, jobs: list[Job], timeout: float | None = None) -> concurrent.futures.Future:
        """A task: the jobs run one after another by one worker, within
        `timeout` seconds (default: the job timeout); its result is
        worker.run_jobs's."""
        try:
            return self._pool.schedule(run_jobs, args=(jobs,), timeout=timeout or self.settings.job_timeout)
        except RuntimeError as exc:  # pebble: "Unexpected error within the Pool"
            raise PoolBroken(str(exc)) from None

    def broken(self) -> str | None:
        """Why the pool can no longer run jobs, or None while it can."""
        if self._pool is None:
            return None
        if not self._pool.active:
            return "every worker of the pool died at once"
        if self._forkserver is not None and (
            forkserver_pid() != self._forkserver or not _alive(self._forkserver)
        ):
            return f"the workers' forkserver (pid {self._forkserver}) died"
        return None

    def stop(self) -> None:
        if self._pool is not None:
            _stop(self._pool)
            self._pool = None


class InProcessPool:
    """WorkerPool's interface, running each job at once in the calling
    process (see Runner's `in_process`). Futures come back finished, so the
    dispatch loop settles them on its next wait. It never breaks."""

    started_at = 0.0
    preload_clients = False  # nothing to preload: jobs run here

    def __init__(self, settings: Settings):
        self._processor = load_processor(settings.processor)
        self._context: WorkerContext | None = None
        self.settings = settings
        self.progress_address: str | None = None

    def start(self) -> None:
        self._context = WorkerContext(self.settings, self.progress_address)

    @property
    def started(self) -> bool:
        return self._context is not None

    def schedule(self, jobs: list[Job], timeout: float | None = None) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        outcomes: list = []
        started = time.perf_counter()
        for job in jobs:
            try:
                outcomes.append(run_with(self._processor, job, self._context))
            except Exception as exc:  # noqa: BLE001 - settled like a worker's failure
                outcomes.append(exc)
        future.set_result((outcomes, time.perf_counter() - started))
        return future

    def broken(self) -> str | None:
        return None

    def stop(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None


def not_the_jobs_fault(exc: BaseException, pool: WorkerPool | InProcessPool, *, stopping: bool) -> bool:
    """A task failed because we stopped or the pool broke under it.
    pebble fails every task of a broken pool (and, on a forced stop, those
    of the workers we killed) with BrokenProcessPool; a worker that died
    with the forkserver expires like a crashed one."""
    from concurrent.futures.process import BrokenProcessPool

    from pebble import ProcessExpired

    if isinstance(exc, BrokenProcessPool):
        return True
    if isinstance(exc, ProcessExpired):
        return stopping or pool.broken() is not None
    return False


def _stop(pool) -> None:
    # pebble removes its channel's named locks first and then stops the
    # workers one by one (up to 3 s each). A worker still starting opens
    # those locks by name when it reads its arguments, and died with a
    # FileNotFoundError traceback. Holding them until every worker is
    # joined removes them only when nobody can open them any more.
    locks = _channel_locks(pool)
    restore_tracker(_semaphore_names(locks))  # their unlinking below tells the tracker
    pool.stop()
    pool.join(timeout=10)
    del locks  # the last reference: multiprocessing unlinks them now


def _channel_locks(pool) -> tuple:
    """The locks of pebble's worker channel (pebble 5's internals; nothing
    if they moved, which only brings back the traceback, not a failure)."""
    manager = getattr(getattr(pool, "_pool_manager", None), "worker_manager", None)
    mutex = getattr(getattr(manager, "workers_channel", None), "mutex", None)
    return (getattr(mutex, "reader_mutex", None), getattr(mutex, "writer_mutex", None))


def _semaphore_names(locks: tuple) -> list[str]:
    """The names multiprocessing gave the locks' semaphores (None-safe)."""
    names = (getattr(getattr(lock, "_semlock", None), "name", None) for lock in locks)
    return [name for name in names if name]


def _alive(pid: int) -> bool:
    """Running, not a zombie: our dead child stays a zombie until reaped."""
    if not os.path.isdir("/proc"):  # not Linux: rely on the pid changing
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _cause(exc: BaseException) -> str:
    """The innermost reason pebble wraps, as one line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""The dispatcher: leases jobs, feeds a process pool, settles outcomes.

All queue and status writes happen here, in one thread of the parent
process; workers only compute (and write their own document's chunks).
Signal handlers only set flags (see `request_stop`); the loop notices them
within a fraction of a second.

The loop works in passes: settle the tasks that finished, note the ones a
worker took (`processing`), write it all and lease the next jobs with one
transaction per file (run/writes.py), hand the new tasks to the pool
(run/backlog.py), wait for the next task to finish.

Periodic work (status flushes, housekeeping, lease extension, the pool's
health check) is a list of `Periodic` timers that every wait of the runner
ticks: idle, busy or winding down. An idle service that flushed only while
jobs were in flight once left finished documents `processing` in the app.
"""

from __future__ import annotations

import concurrent.futures
import time

from docutrain_cli.config import Settings
from docutrain_cli.errors import AccountError, RateLimitedError
from docutrain_cli.jobs import Job, JobResult, RetryPolicy
from docutrain_cli.queues.base import JobQueue, QueueStats
from docutrain_cli.run.backlog import Backlog, Task
from docutrain_cli.run.budget_view import BudgetView
from docutrain_cli.run.pool import (
    InProcessPool, PoolBroken, PoolStartError, WorkerPool, WorkerPoolError, not_the_jobs_fault,
)
from docutrain_cli.run.forkserver import stop_unused_forkserver
from docutrain_cli.run.periodic import Periodic
from docutrain_cli.run.events import RunObserver, StatusListener
from docutrain_cli.run.summary import RunSummary, describe_failure
from docutrain_cli.run.worker import load_processor
from docutrain_cli.run.writes import WriteGroup

__all__ = ["Runner"]

TICK = 0.2  # how often the loop wakes up to look at flags and timers
HOUSEKEEP_EVERY = 30.0  # seconds, or
HOUSEKEEP_AFTER = 1000  # finished jobs, whichever comes first: keeps the queue table small
FLUSH_EVERY = 2.0  # the outbox's own backoff decides whether a flush sends anything
BUDGET_EVERY = 5.0  # how often the display learns the rate budget's figures
COUNTS_EVERY = 2.0  # how often the live display learns the queue's counts (jobs arrive any time)
POOL_STARTS = 3  # fresh pools that may fail in a row before the run gives up
POOL_PROVEN_AFTER = 10.0  # seconds up (or one job finished) and a pool counts as started


class Runner:
    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        observer: RunObserver | None = None,
        status: StatusListener | None = None,
        *,
        in_process: bool = False,
    ):
        """`status` receives document status changes; by default a
        StatusRecorder (local store, plus the Supabase outbox if configured).

        `in_process=True` runs each job in this process, one at a time, with
        no worker pool (like rq's SimpleWorker): for tests and debugging,
        where a subprocess adds nothing. A crash or hang then takes the
        runner with it, so production runs always use the pool."""
        self.settings = settings
        self.queue = queue
        self.observer = observer or RunObserver()
        self._owns_status = status is None
        if status is None:  # the local store (+ Supabase outbox) by default
            from docutrain_cli.status.recorder import StatusRecorder

            status = StatusRecorder(settings)
        self.status = status
        self.policy = RetryPolicy.from_settings(settings)
        self.summary = RunSummary()
        self._stop_reason: str | None = None
        self._force = False
        self._backlog = Backlog(settings.workers)  # the leased jobs, as the pool's tasks
        self._taken: set[int] = set()  # jobs whose `processing` is written
        self._writes = WriteGroup(queue, status)  # what the current pass writes
        # in_process: each job runs here, one at a time (tests, debugging).
        self._pool = InProcessPool(settings) if in_process else WorkerPool(settings)
        self._pool_failures = 0  # fresh pools that failed in a row
        self._pool_proven = False  # the current pool finished a job
        self._housekept_at = 0  # finished-job count at the last housekeeping
        self.progress: dict[int, str] = {}  # job id -> what its worker last reported
        self._inbox = None
        self._batch = None  # the Batch API step (run/batch_mode.py), in embedding_mode 'batch'
        self._drain = False
        self._paused_until = 0.0  # a service waits out account trouble until then (monotonic)
        self._budget = BudgetView(settings)  # the embedding rate budget's figures, for the display
        self._started = time.monotonic()
        self._waiter = None  # set while running: wakes the idle loop on new jobs
        self.reconciler = None  # set while running as a service with Supabase
        self._timers = self._periodic_tasks()

    # Called from signal handlers: set flags only.
    def request_stop(self, reason: str = "interrupted") -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        else:
            self._force = True  # second Ctrl-C: stop now, still losing nothing

    @property
    def in_flight(self) -> list[Job]:
        """Leased jobs: running on a worker or waiting in the pool's backlog."""
        return self._backlog.jobs

    @property
    def running(self) -> list[Job]:
        """Jobs a worker took (as of the last pass, which set their started_at)."""
        return self._backlog.running

    def run(self, drain: bool = False, max_time: float | None = None) -> RunSummary:
        from docutrain_cli.run.progress_channel import ProgressInbox

        self._drain = drain
        started = self._started = time.monotonic()
        with self.queue.runner_lock():
            self._inbox = ProgressInbox()
            self._pool.progress_address = self._inbox.address  # workers report progress here
            self._pool.preload_clients = not drain  # a service's first uploads wait for no import
            self.summary.recovered = self.queue.recover()
            stats = self.queue.stats(time.time())
            self.observer.started(self, stats)
            self._waiter = self.queue.waiter()
            if not drain and self.settings.supabase_enabled:
                self.reconciler = self._make_reconciler()
            try:
                self._start_batches()
                if not drain or self._work_left(None, stats):
                    self._start_pool()
                else:  # an empty drain starts no pool, and needs no forkserver
                    stop_unused_forkserver()
                # --max-time counts from here: the pool starts before the
                # first job (seconds on a loaded machine), as it used to.
                deadline = time.monotonic() + max_time if max_time else None
                self._loop(drain, deadline)
                self._wind_down()
            finally:
                self._waiter.close()
                self._pool.stop()
                self._settle_done()  # anything that finished while stopping
                self._release_all()
                self._writes.commit()
                if self._batch is not None:  # send what the workers parked, unless told to stop now
                    self._batch.finish(send=self._stop_reason not in ("interrupted", "account") and not self._force)
                # The last flush ignores the outage backoff: Supabase may be
                # back, and nothing else would push these until the next run.
                # A second Ctrl-C means now: no longer than a periodic flush.
                self.status.flush(force=True, at_exit=not self._force)
                self.queue.housekeep()
                self._inbox.close()
            self.summary.elapsed = time.monotonic() - started
            self.summary.remaining = self.queue.stats(time.time()).counts
            self.summary.budget = self._budget_view()
            self._budget.close()
        if self._owns_status:
            self.status.close()
        self.observer.finished(self.summary)
        return self.summary

    # -- periodic work -----------------------------------------------------
    def _periodic_tasks(self) -> list[Periodic]:
        tasks = [
            Periodic("pool check", TICK, self._check_pool),
            Periodic("status flush", FLUSH_EVERY, self._flush_status),
            # Every tick: a document that ended reaches Supabase now, not at the next flush.
            Periodic("finished statuses", 0.0, self.status.flush_finished),
            Periodic("store checkpoint", TICK, self.status.checkpoint),  # so no worker's commit does it
            Periodic(
                "housekeeping", HOUSEKEEP_EVERY, self._housekeep,
                due_early=lambda: self._finished() - self._housekept_at >= HOUSEKEEP_AFTER,
            ),
        ]
        # The reconciler keeps its own schedule (at start, then every few
        # minutes); checked every tick, so an idle service runs it on time.
        tasks.append(Periodic("reconcile", TICK, self._reconcile))
        if not self.queue.exclusive:  # other runners take jobs whose lease lapses
            tasks.append(Periodic("lease extension", self.settings.visibility_timeout / 3, self._extend_leases))
        if self.observer.wants_queue_counts:
            tasks.append(Periodic("queue counts", COUNTS_EVERY, self._show_counts))
        if self.settings.embedder_kind == "openai":  # tokens/min against the limit, for the display
            tasks.append(Periodic("rate budget view", BUDGET_EVERY, self._show_budget))
        if self.settings.embedding_mode == "batch":
            tasks.append(Periodic("batch step", self.settings.batch_poll_interval, self._batch_tick))
        return tasks

    def _tick(self) -> None:
        now = time.monotonic()
        for task in self._timers:
            task.tick(now)

    def _finished(self) -> int:
        return self.summary.done + self.summary.dead

    def _housekeep(self) -> None:
        self.queue.housekeep()
        self._housekept_at = self._finished()

    def _reconcile(self) -> None:
        now = time.monotonic()
        if self.reconciler is not None and self.reconciler.due(now):
            self._flush_status()  # so rows that just finished here are not `pending` any more
            self.reconciler.run(now)

    def _show_counts(self) -> None:
        self.observer.queue_counts(self.queue.stats(time.time()))

    def _show_budget(self) -> None:
        view = self._budget_view()
        if view:
            self.observer.budget(view)

    def _extend_leases(self) -> None:
        if len(self._backlog):
            self.queue.extend_lease(self.in_flight, self.settings.visibility_timeout)

    # -- the pool ------------------------------------------------------------
    def _start_pool(self) -> None:
        """A fresh pool; gives up (WorkerPoolError) when POOL_STARTS fresh
        pools in a row fail to start or break before they prove themselves."""
        load_processor(self.settings.processor)  # a wrong setting is a ConfigError, not a pool failure
        while True:
            try:
                self._pool.start()
                self._pool_proven = False
                return
            except PoolStartError as exc:
                self._count_pool_failure(str(exc))
                self.observer.pool_replaced(f"it could not start: {exc}")
            if self._stop_reason is not None:
                return  # stopping: no pool needed any more
            time.sleep(min(0.5 * 2 ** (self._pool_failures - 1), 5.0))  # let the machine recover

    def _count_pool_failure(self, cause: str) -> None:
        self._pool_failures += 1
        if self._pool_failures >= POOL_STARTS:
            raise WorkerPoolError(
                f"worker pool cannot start: {cause} ({POOL_STARTS} fresh pools failed in a row)"
            )

    def _check_pool(self) -> None:
        if not self._pool_proven and time.monotonic() - self._pool.started_at >= POOL_PROVEN_AFTER:
            self._pool_proven = True
        reason = self._pool.broken()
        if reason is None:
            return
        # Not the jobs' fault: what the pool held goes back uncharged.
        self.observer.pool_replaced(reason)
        self.summary.pools_replaced += 1
        self._settle_done()  # results that did arrive still count
        self._pool.stop()
        self._release_all()
        self._writes.commit()
        if self._stop_reason is not None:
            return  # stopping: no new pool needed
        if self._pool_proven:
            self._pool_failures = 0
        else:
            self._count_pool_failure(reason)
        self._start_pool()

    # -- the loop ----------------------------------------------------------
    def _loop(self, drain: bool, deadline: float | None) -> None:
        while self._stop_reason is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._stop_reason = "max-time"
                break
            # A service paused by account trouble takes nothing.
            self._pass(lease=now >= self._paused_until and self._pool.started)
            self._tick()  # right after the pass's writes: a finished document's status leaves now
            if not len(self._backlog):
                if drain and not self._work_left(deadline):
                    break
                if not self._pool.started:  # jobs came after an empty drain began
                    self._start_pool()
                    continue
                self.observer.idle(self.queue.stats(time.time()))
                self._sleep(self.settings.poll_interval)
                continue
            self._backlog.wait(TICK)
        if self._stop_reason:
            self.summary.stop_reason = self._stop_reason
            self.observer.stopping(self._stop_reason)

    def _pass(self, lease: bool) -> None:
        """Settle what finished, note what a worker took, write it all, and
        lease what the free task slots hold (run/writes.py, run/backlog.py)."""
        self._read_progress()  # before settling: a job's last message still finds it
        for future, task in self._backlog.finished():
            self._settle(future, task)
        self._note_started()
        self._schedule(self._writes.commit(lease=self._backlog.wanted() if lease else 0))

    def _note_started(self) -> None:
        """`processing`, when a worker takes a job (a leased one may wait
        in the pool first): its start time too, so displays and records
        show how long it really ran."""
        now = time.time()
        for task in self._backlog.started():
            for job in task:
                job.started_at = now
                self._writes.processing(job)
                self._taken.add(job.id)

    def _schedule(self, jobs: list[Job], *, alone: bool = False) -> None:
        """Hand leased jobs to the pool as tasks (`alone`: one job a task)."""
        tasks = [[job] for job in jobs] if alone else self._backlog.tasks_for(jobs)
        for index, task in enumerate(tasks):
            try:
                future = self._pool.schedule(task, Backlog.timeout(task, self.settings.job_timeout))
            except PoolBroken:  # the next pool check replaces it
                for unscheduled in tasks[index:]:
                    self._release_task(unscheduled, quiet=True)
                return
            self._backlog.add(future, task)
            if not alone:  # jobs run again alone were announced the first time
                for job in task:
                    self.observer.job_started(job)

    def _budget_view(self) -> dict | None:
        return self._budget.read(self.summary, time.monotonic() - self._started)

    def _work_left(self, deadline: float | None, stats: QueueStats | None = None) -> bool:
        """In drain mode: is there anything we should still wait for?"""
        stats = stats or self.queue.stats(time.time())
        if not stats.known:
            # Only the unfinished total is known (Cloudflare's backlog: queued,
            # leased elsewhere and waiting retries alike): wait while it lasts.
            return bool(stats.unfinished)
        if stats.counts["queued"]:
            return True  # e.g. enqueued a moment ago, or a retry just came due
        if not self.queue.exclusive and stats.counts["running"]:
            return True  # another runner's jobs: they come back here if it dies
        if stats.counts["retrying"] and stats.next_retry_at is not None:
            if deadline is None:
                return True  # --drain without --max-time waits for retries too
            wall_deadline = time.time() + (deadline - time.monotonic())
            return stats.next_retry_at < wall_deadline
        return False

    def _read_progress(self) -> None:
        messages = self._inbox.drain() if self._inbox is not None else []
        if not messages:
            return
        by_id = {job.id: job for job in self._backlog.jobs}
        for job_id, message in messages:
            job = by_id.get(job_id)
            if job is not None:  # a late message from a finished job is dropped
                self.progress[job_id] = message
                self.observer.job_progress(job, message)

    def _sleep(self, seconds: float) -> None:
        """Idle: wait for the poll interval, or less when a producer
        announces new jobs (a queued HTTP upload starts at once)."""
        end = time.monotonic() + seconds
        while self._stop_reason is None and time.monotonic() < end:
            woken = self._waiter.wait(min(TICK, max(end - time.monotonic(), 0)))
            self._tick()  # periodic work goes on while idle
            if woken:
                return

    def _make_reconciler(self):
        from docutrain_cli.run.reconcile import Reconciler

        waiting = getattr(self.status, "waiting_document_ids", None) or set
        return Reconciler(self.settings, self.queue, waiting)

    def _wind_down(self) -> None:
        """Stop taking jobs; let running ones finish within the grace period."""
        self._return_unstarted()
        end = time.monotonic() + self.settings.grace_period
        while len(self._backlog) and not self._force and time.monotonic() < end:
            self._backlog.wait(TICK)
            self._pass(lease=False)
            self._tick()
        self._pass(lease=False)

    # -- outcomes ----------------------------------------------------------
    def _settle_done(self) -> None:
        for future, task in self._backlog.done_now():
            self._settle(future, task)

    def _settle(self, future: concurrent.futures.Future, task: Task) -> None:
        try:
            outcomes, seconds = future.result()
        except concurrent.futures.CancelledError:
            return self._release_task(task)
        except BaseException as exc:  # noqa: BLE001 - every failure is classified
            if not_the_jobs_fault(exc, self._pool, stopping=self._stop_reason is not None):
                return self._release_task(task)
            if len(task) > 1:  # which job crashed or hung? Each runs again alone, uncharged.
                return self._schedule(task, alone=True)
            outcomes = [exc]
        else:
            self._backlog.measured(len(task), seconds)
        self._pool_proven = True
        for job, outcome in zip(task, outcomes):
            if isinstance(outcome, JobResult):
                self._succeed(job, outcome)
            elif isinstance(outcome, RateLimitedError):
                self._give_back(job, outcome)
            elif isinstance(outcome, AccountError):
                self._release_task([job])
                self._account_problem(outcome)
            else:
                self._fail(job, outcome)

    def _succeed(self, job: Job, result: JobResult) -> None:
        self.progress.pop(job.id, None)
        if job.id not in self._taken and result.batch_texts:  # taken and done within one pass, but
            self._writes.processing(job)  # its batch is still out: the app must see it taken
        self._taken.discard(job.id)
        job.result = result
        job.finished_at = time.time()
        self._writes.ready(job, result)  # chunks are stored: the worker did it
        self._writes.complete(job)
        self.summary.add(result)
        self.observer.job_finished(job, "done", None)

    def _fail(self, job: Job, exc: BaseException) -> None:
        self.progress.pop(job.id, None)
        self._taken.discard(job.id)
        message, permanent = describe_failure(job, exc, self.settings)
        if permanent or self.policy.gives_up(job.attempts):
            if not permanent:
                message += f" (gave up after {job.attempts} attempts)"
            self._writes.error(job, message)
            self._writes.bury(job, message)
            self.summary.dead += 1
            self.observer.job_finished(job, "dead", message)
        else:
            delay = self.policy.delay(job.attempts)
            self._writes.retry_later(job, message, time.time() + delay)
            self.summary.retried += 1
            self.observer.job_finished(job, "retry", f"{message} (retry in {delay:.0f} s)")

    def _give_back(self, job: Job, exc: RateLimitedError) -> None:
        """The rate limit left no room for this job for too long: back to the
        queue, no attempt charged, due again when the server suggested."""
        self._taken.discard(job.id)
        self._writes.release(job, not_before=time.time() + exc.retry_after)
        self.summary.given_back += 1
        self.observer.job_finished(job, "released", str(exc))

    def _account_problem(self, exc: AccountError) -> None:
        """Quota or key trouble is nobody's document's fault: jobs not yet
        started go back unharmed (the one that met it already did) and
        leasing stops: `--drain` ends the run (exit 5), a service pauses and
        tries again later. Whether a worker or the batch step met it."""
        first = self.summary.account_problem is None
        self.summary.account_problem = str(exc)
        if self._drain:
            if self._stop_reason is None:
                self._stop_reason = "account"
            return
        if time.monotonic() >= self._paused_until:
            self._paused_until = time.monotonic() + self.settings.account_retry_interval
            self._return_unstarted()
            self.observer.paused(str(exc), self.settings.account_retry_interval)
        elif first:
            self.observer.paused(str(exc), self._paused_until - time.monotonic())

    def _return_unstarted(self) -> None:
        for future, task in self._backlog.items():
            # pebble's cancel() also kills a running task: only cancel the
            # ones no worker has picked up yet.
            if not future.running() and not future.done() and future.cancel():
                self._backlog.pop(future)
                self._release_task(task, quiet=True)

    def _release_all(self) -> None:
        for future, task in self._backlog.items():
            self._backlog.pop(future)
            self._release_task(task)

    def _release_task(self, task: Task, *, quiet: bool = False) -> None:
        """Give the jobs back uncharged (`quiet`: never started, nothing to tell)."""
        for job in task:
            self.progress.pop(job.id, None)
            self._taken.discard(job.id)
            self._writes.release(job)
            self.summary.released += 1
            if not quiet:
                self.observer.job_finished(job, "released", None)

    def _flush_status(self) -> None:
        self.status.flush()

    # -- Batch API mode ------------------------------------------------------
    def _start_batches(self) -> None:
        """Resume and poll the batches of earlier runs before taking jobs."""
        if self.settings.embedding_mode == "batch":
            from docutrain_cli.run.batch_mode import BatchMode

            self._batch = BatchMode(
                self.settings, self.status, self.queue, self.summary,
                account_problem=self._account_problem, flush_status=self._flush_status, drain=self._drain,
            )
            self._batch.run_step(flush=True)

    def _batch_tick(self) -> None:
        # An idle queue sends what is parked; a busy one only full files.
        if self._batch is not None and time.monotonic() >= self._paused_until:
            self._batch.run_step(flush=not len(self._backlog))

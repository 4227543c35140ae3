"""The dispatcher: leases jobs, feeds a process pool, settles outcomes.

All queue and status writes happen here, in one thread of the parent
process; workers only compute (and write their own document's chunks).
Signal handlers only set flags (see `request_stop`); the loop notices them
within a fraction of a second.

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
from docutrain_cli.queues.base import JobQueue
from docutrain_cli.run.pool import InProcessPool, PoolBroken, PoolStartError, WorkerPool, WorkerPoolError
from docutrain_cli.run.periodic import Periodic
from docutrain_cli.run.events import RunObserver, StatusListener
from docutrain_cli.run.summary import RunSummary, describe_failure
from docutrain_cli.run.worker import load_processor

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
        self._in_flight: dict[concurrent.futures.Future, Job] = {}
        # in_process: each job runs here, one at a time (tests, debugging).
        self._pool = InProcessPool(settings) if in_process else WorkerPool(settings)
        self._pool_failures = 0  # fresh pools that failed in a row
        self._pool_proven = False  # the current pool finished a job
        self._housekept_at = 0  # finished-job count at the last housekeeping
        self.progress: dict[int, str] = {}  # job id -> what its worker last reported
        self._inbox = None
        self._seen_running: set[concurrent.futures.Future] = set()
        self._batch = None  # the Batch API step (batch/step.py), in embedding_mode 'batch'
        self._drain = False
        self._paused_until = 0.0  # a service waits out account trouble until then (monotonic)
        self._budget = None  # the embedding rate budget, read for the display
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
        return list(self._in_flight.values())

    @property
    def running(self) -> list[Job]:
        """Jobs a worker is busy with (as of the last tick, which set their started_at)."""
        return [job for future, job in list(self._in_flight.items()) if future in self._seen_running]

    def run(self, drain: bool = False, max_time: float | None = None) -> RunSummary:
        from docutrain_cli.run.progress_channel import ProgressInbox

        load_processor(self.settings.processor)  # fail fast, before the pool starts
        self._drain = drain
        started = self._started = time.monotonic()
        with self.queue.runner_lock():
            self._inbox = ProgressInbox()
            self._pool.progress_address = self._inbox.address  # workers report progress here
            self._pool.preload_clients = not drain  # a service's first uploads wait for no import
            self.summary.recovered = self.queue.recover()
            self.observer.started(self, self.queue.stats(time.time()))
            self._waiter = self.queue.waiter()
            if not drain and self.settings.supabase_enabled:
                self.reconciler = self._make_reconciler()
            try:
                self._start_batches()
                self._start_pool()
                # --max-time counts from here: the pool starts before the
                # first job (seconds on a loaded machine), as it used to.
                deadline = time.monotonic() + max_time if max_time else None
                self._loop(drain, deadline)
                self._wind_down()
            finally:
                self._waiter.close()
                self._pool.stop()
                self._settle_done()  # anything that finished while stopping
                for future, job in list(self._in_flight.items()):
                    self._release(future, job)
                self._end_batches()
                # The last flush ignores the outage backoff: Supabase may be
                # back, and nothing else would push these until the next run.
                self.status.flush(force=True)
                self.queue.housekeep()
                self._inbox.close()
            self.summary.elapsed = time.monotonic() - started
            self.summary.remaining = self.queue.stats(time.time()).counts
            self.summary.budget = self._budget_view()
            if self._budget is not None:
                self._budget.store.close()
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

    def _batch_tick(self) -> None:
        # An idle queue sends what is parked; a busy one only full files.
        if self._batch is not None and time.monotonic() >= self._paused_until:
            self._batch_pass(flush=not self._in_flight)

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
        if self._in_flight:
            self.queue.extend_lease(self.in_flight, self.settings.visibility_timeout)

    # -- the pool ------------------------------------------------------------
    def _start_pool(self) -> None:
        """A fresh pool; gives up (WorkerPoolError) when POOL_STARTS fresh
        pools in a row fail to start or break before they prove themselves."""
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
        for future, job in list(self._in_flight.items()):
            self._release(future, job)
        if self._stop_reason is not None:
            return  # stopping: no new pool needed
        if self._pool_proven:
            self._pool_failures = 0
        else:
            self._count_pool_failure(reason)
        self._start_pool()

    # -- the loop ----------------------------------------------------------
    def _loop(self, drain: bool, deadline: float | None) -> None:
        # A small backlog per worker hides the round trip to the dispatcher.
        capacity = self.settings.workers + max(1, self.settings.workers // 2)
        while self._stop_reason is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._stop_reason = "max-time"
                break
            if now >= self._paused_until:  # a service paused by account trouble takes nothing
                self._fill(capacity)
            if not self._in_flight:
                if drain and not self._work_left(deadline):
                    break
                self.observer.idle(self.queue.stats(time.time()))
                self._sleep(self.settings.poll_interval)
                continue
            self._wait(TICK)
            self._tick()
        if self._stop_reason:
            self.summary.stop_reason = self._stop_reason
            self.observer.stopping(self._stop_reason)

    def _fill(self, capacity: int) -> None:
        free = capacity - len(self._in_flight)
        if free <= 0 or self._pool.broken():  # the pool check replaces it first
            return
        jobs = self.queue.lease(free, time.time())
        for index, job in enumerate(jobs):
            try:
                future = self._pool.schedule(job)
            except PoolBroken:  # the next pool check replaces it
                for unscheduled in jobs[index:]:
                    self.queue.release(unscheduled)
                    self.summary.released += 1
                return
            self._in_flight[future] = job
            self.status.processing(job)
            self.observer.job_started(job)

    def _budget_view(self) -> dict | None:
        """The rate budget's figures (tokens/min against the limit, waits),
        or None with the offline embedder or before any request was made."""
        if self.settings.embedder_kind != "openai":
            return None
        try:
            if self._budget is None:
                from docutrain_cli.ratelimit.budget import open_budget

                self._budget = open_budget(self.settings)
            view = self._budget.snapshot()
        except Exception:  # noqa: BLE001 - the display must never stop the run
            return None
        elapsed = time.monotonic() - self._started
        view["run_tokens_per_minute"] = round(self.summary.totals["tokens_embedded"] * 60.0 / max(elapsed, 1e-9))
        view["run_wait_seconds"] = round(self.summary.rate_wait_seconds, 1)
        view["run_rate_limited"] = self.summary.totals["rate_limited"]
        return view

    def _work_left(self, deadline: float | None) -> bool:
        """In drain mode: is there anything we should still wait for?"""
        stats = self.queue.stats(time.time())
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

    def _wait(self, timeout: float) -> None:
        done, _ = concurrent.futures.wait(
            list(self._in_flight), timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        self._read_progress()  # before settling: a job's last message still finds it
        for future in done:
            self._settle(future, self._in_flight.pop(future))
        self._note_started()

    def _note_started(self) -> None:
        """A leased job may wait in the pool's backlog before a worker takes
        it: its start time is when we first see it running (within a TICK),
        so displays and records show how long it really ran."""
        for future, job in list(self._in_flight.items()):
            if future not in self._seen_running and future.running():
                self._seen_running.add(future)
                job.started_at = time.time()
        self._seen_running.intersection_update(self._in_flight)

    def _read_progress(self) -> None:
        if self._inbox is None:
            return
        by_id = {job.id: job for job in self._in_flight.values()}
        for job_id, message in self._inbox.drain():
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
        while self._in_flight and not self._force and time.monotonic() < end:
            self._wait(TICK)
            self._tick()

    # -- outcomes ----------------------------------------------------------
    def _settle_done(self) -> None:
        for future in [f for f in self._in_flight if f.done() and not f.cancelled()]:
            self._settle(future, self._in_flight.pop(future))

    def _settle(self, future: concurrent.futures.Future, job: Job) -> None:
        if self._force and not future.done():
            return self._release(future, job)
        try:
            result = future.result()
        except concurrent.futures.CancelledError:
            return self._release(future, job)
        except BaseException as exc:  # noqa: BLE001 - every failure is classified
            if self._not_the_jobs_fault(exc):
                return self._release(future, job)
            self._pool_proven = True
            if isinstance(exc, RateLimitedError):
                return self._give_back(job, exc)
            if isinstance(exc, AccountError):
                return self._account_trouble(future, job, exc)
            return self._fail(job, exc)
        self._pool_proven = True
        self._succeed(job, result)

    def _not_the_jobs_fault(self, exc: BaseException) -> bool:
        """A worker killed by our stop, or by the pool breaking under it.
        pebble fails every task of a broken pool (and, on a forced stop,
        those of the workers we killed) with BrokenProcessPool; a worker that
        died with the forkserver expires like a crashed one."""
        from concurrent.futures.process import BrokenProcessPool

        from pebble import ProcessExpired

        if isinstance(exc, BrokenProcessPool):
            return True
        if isinstance(exc, ProcessExpired):
            return self._stop_reason is not None or self._pool.broken() is not None
        return False

    def _succeed(self, job: Job, result: JobResult) -> None:
        self.progress.pop(job.id, None)
        job.result = result
        job.finished_at = time.time()
        self.status.ready(job, result)  # chunks are stored: the worker did it
        self.queue.complete(job)
        self.summary.add(result)
        self.observer.job_finished(job, "done", None)

    def _fail(self, job: Job, exc: BaseException) -> None:
        self.progress.pop(job.id, None)
        message, permanent = describe_failure(job, exc, self.settings)
        if permanent or self.policy.gives_up(job.attempts):
            if not permanent:
                message += f" (gave up after {job.attempts} attempts)"
            self.queue.bury(job, message)
            self.status.error(job, message)
            self.summary.dead += 1
            self.observer.job_finished(job, "dead", message)
        else:
            delay = self.policy.delay(job.attempts)
            self.queue.retry_later(job, message, time.time() + delay)
            self.summary.retried += 1
            self.observer.job_finished(job, "retry", f"{message} (retry in {delay:.0f} s)")

    def _give_back(self, job: Job, exc: RateLimitedError) -> None:
        """The rate limit left no room for this job for too long: back to the
        queue, no attempt charged, due again when the server suggested."""
        self.queue.release(job, not_before=time.time() + exc.retry_after)
        self.summary.given_back += 1
        self.observer.job_finished(job, "released", str(exc))

    def _account_trouble(self, future: concurrent.futures.Future, job: Job, exc: AccountError) -> None:
        """Quota or key trouble is nobody's document's fault: return the job
        (and every job not yet started) unharmed and stop leasing. `--drain`
        ends the run (exit 5); a service pauses and tries again later."""
        self._release(future, job)
        self._account_problem(exc)

    def _account_problem(self, exc: AccountError) -> None:
        """Stop (`--drain`) or pause (a service) for quota or key trouble,
        whether a worker or the batch step met it."""
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
        for future in list(self._in_flight):
            # pebble's cancel() also kills a running task: only cancel the
            # ones no worker has picked up yet.
            if not future.running() and not future.done() and future.cancel():
                self.queue.release(self._in_flight.pop(future))
                self.summary.released += 1

    def _release(self, future: concurrent.futures.Future, job: Job) -> None:
        self._in_flight.pop(future, None)
        self.progress.pop(job.id, None)
        self.queue.release(job)
        self.summary.released += 1
        self.observer.job_finished(job, "released", None)

    def _flush_status(self) -> None:
        self.status.flush()
    # -- Batch API mode ------------------------------------------------------
    def _start_batches(self) -> None:
        """Resume and poll the batches of earlier runs before taking jobs."""
        if self.settings.embedding_mode != "batch":
            return
        from docutrain_cli.batch.step import BatchStep, StepReport

        self._batch = BatchStep(self.settings, self.status, queue=self.queue)
        self._batch_report = StepReport()
        self._batch_pass(flush=True)

    def _end_batches(self) -> None:
        """Send what the workers parked, apply what is back, finish documents."""
        if self._batch is None:
            return
        if self._stop_reason not in ("interrupted", "account") and not self._force:
            self._batch_pass(flush=True)
        self._batch.close()
        self.summary.batch = self._batch_report.to_dict()
        if self.summary.cost_usd is not None:
            cost = self._batch_report.cost_usd
            self.summary.cost_usd = None if cost is None else self.summary.cost_usd + cost

    def _batch_pass(self, *, flush: bool) -> None:
        try:
            report = self._batch.step(flush=flush)
            self._batch_report.add(report)
            if report.documents_ready or report.documents_dead:
                self._flush_status()  # an idle service would otherwise sit on these statuses
        except AccountError as exc:  # nothing can be sent: every job and parked chunk stays
            self._account_problem(exc)
            if self._drain:
                self.summary.stop_reason = "account"  # also when met after the loop (the last pass)


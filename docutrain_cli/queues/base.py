"""The queue contract every backend keeps (local SQLite file, pgmq, Cloudflare).

Delivery is at least once: a job can be handed out again after a crash, so
processing must be idempotent. A job's `attempts` counts attempts *started*
(like pgmq's read_ct), so a job that keeps killing its worker still runs out.

What a backend does not decide:
- how a job changes state: `lease`, `complete`, `retry_later`, `bury`,
  `release` and `revive` call the job's transition (`Job.leased`,
  `completed`, `failed`, `buried`, `released`, `revived`) and then persist
  what it wrote;
- which due job is leased next: the queue's `order` (queues/order.py) tags
  jobs as they are enqueued (priority level, virtual start); the local file
  and pgmq lease in that order, Cloudflare by priority only.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import time
from typing import Any, Iterator, NamedTuple, Sequence

from docutrain_cli.jobs import STATES, Job, JobState
from docutrain_cli.queues.order import FIFO, LeaseOrder


@dataclasses.dataclass
class QueueStats:
    # Every name in jobs.STATES, always present; None where the backend
    # cannot know (Cloudflare Queues tells no per-state counts).
    counts: dict[str, int | None]
    oldest_queued_age: float | None  # seconds, None when nothing is queued
    next_retry_at: float | None  # epoch seconds of the earliest waiting retry
    runner: str | None  # who holds the queue (local backend), None when free
    # Backend figures worth showing as-is (pgmq: queue length, oldest message
    # age, dead-letter count from pgmq.metrics); empty for the local file.
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    # queued + running + retrying, for a backend that knows only that total
    # (Cloudflare's backlog); None when the counts above are known or nothing is.
    unfinished: int | None = None
    # The holder as data ({"pid", "host", "since"}) for the dashboard; None
    # when free or when the backend does not track runners (pgmq).
    runner_info: dict[str, Any] | None = None

    @classmethod
    def empty(cls) -> "QueueStats":
        return cls({s: 0 for s in STATES}, None, None, None)

    @property
    def known(self) -> bool:
        """True when the per-state counts are known."""
        return all(self.counts[s] is not None for s in ("queued", "running", "retrying"))

    @property
    def pending(self) -> int:
        """Jobs that still need work: queued, running or waiting to retry
        (the backend's unfinished total when it cannot tell them apart; 0 if
        it cannot tell even that)."""
        c = self.counts
        if not self.known:
            return self.unfinished or 0
        return c["queued"] + c["running"] + c["retrying"]


@dataclasses.dataclass(frozen=True)
class QueueDescription:
    """What a queue is, safe to show anyone (no password, no token): serve's
    /readyz, its listening line and the dashboard's header read it here."""

    kind: str  # "local", "pgmq" or "cloudflare": JobQueue.kind
    target: str  # the file, the URL without its password, or cloudflare://ACCOUNT_ID/QUEUE_ID
    label: str  # how the dashboard names it, e.g. "queue queue.db"


class Finished(NamedTuple):
    """One finished job, as the dashboard and /metrics count it. Read from
    the queue's own records (done and dead), so it is right whichever
    process or machine did the work."""

    job_id: int
    outcome: str  # "done" or "dead"
    finished_at: float  # epoch seconds
    seconds: float | None  # from the last lease to the finish
    pages: int
    tokens: int  # embedding tokens sent (cached ones cost none)
    model: str | None  # embedding model, for done jobs that embedded
    user_id: str | None = None  # whose it was (each user's share of the tokens)
    cost: int | None = None  # the tokens it was estimated at when queued


class Ahead(NamedTuple):
    """What stands before one waiting job under the current lease order."""

    jobs: int  # waiting jobs that start before it
    tokens: int  # their estimated tokens
    running_tokens: int  # estimated tokens of the jobs running now


class UserBacklog(NamedTuple):
    user_id: str | None  # None: the jobs without a user id
    jobs: int  # queued or waiting to retry
    tokens: int  # their estimated tokens


class Waiter:
    """Sleeps; a backend that can hear about new jobs wakes it early."""

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True if woken by new work."""
        time.sleep(max(timeout, 0.0))
        return False

    def close(self) -> None:
        pass


class JobQueue(abc.ABC):
    """A persistent job queue. All methods are called from one thread."""

    kind: str = "abstract"
    # True when one dispatcher must hold the queue exclusively (local file);
    # False when many runners may lease from it at once (pgmq).
    exclusive: bool = True
    # The states whose jobs `jobs` and `job` can find (Cloudflare: dead only).
    listable_states: frozenset = frozenset(JobState)
    # The one decision of which due job is leased next (queues/order.py):
    # `enqueue` and `enqueue_unique` call `order.prepare` and `order.tag` on
    # the jobs they store, `lease` hands jobs out in the order's order.
    order: LeaseOrder = FIFO

    # -- what it is ------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings) -> "JobQueue":
        """Open the queue `settings.queue` names (queues.open_queue picks the class)."""

    @classmethod
    def describe(cls, settings) -> QueueDescription:
        """What the queue `settings` name is, without opening it: serve shows
        it even while the queue is down. A backend whose address holds a
        secret says so by overriding this."""
        return QueueDescription(cls.kind, settings.queue, f"queue {settings.queue}")

    # -- producers -------------------------------------------------------
    @abc.abstractmethod
    def enqueue(self, jobs: Sequence[Job]) -> list[int]:
        """Store new jobs (their `id` is ignored); return the new ids in order."""

    @abc.abstractmethod
    def enqueue_unique(self, job: Job) -> tuple[int, bool]:
        """Store `job` unless a job for the same `document_id` is queued,
        running or retrying. Atomic against other processes doing the same
        (HTTP requests, webhooks, reconcile, `enqueue --from-supabase`).
        Returns (job id, True) for a new job, (existing id, False) otherwise.
        A backend that cannot see its queued jobs (Cloudflare) always sends
        and says so in its docstring."""

    @abc.abstractmethod
    def active_hashes(self) -> set[str]:
        """sha256 of every job that is queued, running or retrying."""

    # -- the runner ------------------------------------------------------
    @contextlib.contextmanager
    def runner_lock(self) -> Iterator[None]:
        """Held for the life of a runner; raises QueueBusyError if taken."""
        yield

    @abc.abstractmethod
    def recover(self) -> int:
        """Called once by a runner at start: return jobs a dead runner left
        in flight to the queue. Returns how many."""

    @abc.abstractmethod
    def lease(self, limit: int, now: float) -> list[Job]:
        """Up to `limit` due jobs in the order `self.order` names, now
        running, with attempts incremented."""

    def extend_lease(self, jobs: Sequence[Job], seconds: float) -> None:
        """Keep leased jobs invisible to other runners a while longer."""

    def waiter(self) -> "Waiter":
        """What an idle runner sleeps on: it returns early when a producer
        announces new jobs (see queues/wake.py). Called under runner_lock."""
        return Waiter()

    def batch(self) -> contextlib.AbstractContextManager:
        """Writes of the runner made inside (`complete`, `retry_later`,
        `bury`, `release`, `lease`) may be stored together, all or none: one
        pass of its loop. A backend that cannot group them writes each as it
        comes, as outside."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def complete(self, job: Job) -> None:
        """The job finished: it is done (job.result holds the summary)."""

    @abc.abstractmethod
    def retry_later(self, job: Job, error: str, not_before: float) -> None:
        """The attempt failed; run it again no earlier than `not_before`."""

    @abc.abstractmethod
    def bury(self, job: Job, error: str) -> None:
        """The job failed for good: keep it as dead until someone retries it."""

    def bury_done(self, job: Job, error: str) -> None:
        """A done job whose document failed afterwards (Batch API mode: its
        vectors could not be made): dead now with `error`, retryable like any
        dead job. Its done record goes (still counted, see queues/tally.py);
        a job that is active again (retried meanwhile) is left alone.
        This default suits a backend that keeps no done records (Cloudflare,
        which cannot see an active job either: it always buries)."""
        self.bury(job, error)

    @abc.abstractmethod
    def release(self, job: Job, not_before: float | None = None) -> None:
        """Give an unfinished job back without costing it an attempt (a stop,
        account trouble, or a rate limit that left no room: then not before
        `not_before`, epoch seconds)."""

    @abc.abstractmethod
    def housekeep(self) -> None:
        """Drop finished rows the queue no longer needs; keep the job record."""

    # -- readers and operators -------------------------------------------
    @abc.abstractmethod
    def stats(self, now: float) -> QueueStats: ...

    @abc.abstractmethod
    def jobs(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""

    @abc.abstractmethod
    def job(self, job_id: int) -> Job | None: ...

    # -- the line (issue 21): None where a backend cannot see its waiting jobs --
    @property
    def lease_order(self) -> str:
        """The order jobs are leased in: "fair" (fair share within each
        priority), "fifo" (first in, first out within each priority), or
        "priority" (a backend that can keep priority only)."""
        return self.order.name

    def ahead_of(self, job: Job, now: float) -> Ahead | None:
        """What starts before `job` (waiting: queued or retrying) under the
        current order; None when it is not waiting or cannot be known."""
        return None

    def waiting_by_user(self) -> list[UserBacklog] | None:
        """Each user's waiting jobs and their estimated tokens, most tokens first."""
        return None

    def depth_by_priority(self) -> dict[str, int] | None:
        """Waiting jobs (queued or retrying) per priority."""
        return None

    def finished(self, since: float = 0.0) -> list[Finished]:
        """Done and dead jobs that finished at or after `since`, oldest first.
        Backends answer this in SQL; this fallback reads whole records."""
        found = [
            finished_record(job)
            for state in (JobState.DONE, JobState.DEAD)
            for job in self.jobs(state, limit=10**9)
            if (job.finished_at or 0.0) >= since
        ]
        return sorted(found, key=lambda f: f.finished_at)

    def totals(self):
        """Finish events since the queue began (a queues.tally.Tally): the
        tally of records that left (pruned, retried) plus the records kept,
        so it only ever grows. None when the backend keeps no records it
        could count (Cloudflare)."""
        return None

    @abc.abstractmethod
    def document_jobs(self, document_id: str, limit: int = 20) -> list[Job]:
        """The jobs for one document id, in any state, newest first."""

    @abc.abstractmethod
    def revive(self, job_ids: Sequence[int] | None = None) -> list[int]:
        """Put dead jobs back with a fresh attempt count; None means all dead.
        Returns the ids revived (ids that are not dead are skipped)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> "JobQueue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def finished_record(job: Job) -> Finished:
    result = job.result
    seconds = job.finished_at - job.started_at if job.finished_at and job.started_at else None
    return Finished(
        job.id,
        job.state.value,
        job.finished_at or 0.0,
        seconds,
        result.pages if result else 0,
        result.tokens_embedded if result else 0,
        result.model if result else None,
        job.user_id,
        job.cost,
    )

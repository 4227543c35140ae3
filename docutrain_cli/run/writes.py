"""What one pass of the runner's loop writes, written together.

Each pass settles the tasks that finished, notes the ones a worker took and
leases the next jobs. Written as it happened, every job cost four SQLite
transactions (its lease, `processing`, its outcome, `ready`), and a commit
costs more than the statements in it: that was the dispatcher's limit. A
WriteGroup holds the pass's writes and `commit` makes them with one
transaction per file:

1. the documents' statuses (`processing`, `ready`, `error`: the store and
   the outboxes), through the status listener's `batch()`;
2. then the queue's records (done, retry, dead, released) and the next
   lease, through the queue's `batch()`.

In that order, so that a crash between the two leaves a job `running` in the
queue with its new status written (it runs again, idempotently, and ends
with the same status), never a job done in the queue whose status was lost.
A crash before either commit loses the pass: its jobs are still `running`
in the queue and the next runner's `recover` gives them back (an attempt
each, as for any job in flight at a crash). Nothing is sent to Supabase or a
webhook before it is committed here: the outboxes' flush reads committed rows.

A status listener or queue without `batch()` gets each write as it comes.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.queues.base import JobQueue


class WriteGroup:
    def __init__(self, queue: JobQueue, status: Any):
        self.queue = queue
        self.status = status  # a StatusListener (run/events.py)
        self._statuses: list[tuple[Callable, tuple]] = []
        self._records: list[tuple[Callable, tuple]] = []

    # -- the documents' statuses -------------------------------------------------
    def processing(self, job: Job) -> None:
        self._statuses.append((self.status.processing, (job,)))

    def ready(self, job: Job, result: JobResult) -> None:
        self._statuses.append((self.status.ready, (job, result)))

    def error(self, job: Job, message: str) -> None:
        self._statuses.append((self.status.error, (job, message)))

    # -- the queue's records -----------------------------------------------------
    def complete(self, job: Job) -> None:
        self._records.append((self.queue.complete, (job,)))

    def retry_later(self, job: Job, error: str, not_before: float) -> None:
        self._records.append((self.queue.retry_later, (job, error, not_before)))

    def bury(self, job: Job, error: str) -> None:
        self._records.append((self.queue.bury, (job, error)))

    def release(self, job: Job, not_before: float | None = None) -> None:
        self._records.append((self.queue.release, (job, not_before)))

    def __len__(self) -> int:
        return len(self._statuses) + len(self._records)

    def commit(self, lease: int = 0) -> list[Job]:
        """Write what the pass holds, statuses first; lease up to `lease`
        jobs in the queue's transaction. Returns the leased jobs."""
        statuses, self._statuses = self._statuses, []
        records, self._records = self._records, []
        if statuses:
            with _batch(self.status):
                for write, args in statuses:
                    write(*args)
        if not records and not lease:
            return []
        with _batch(self.queue):
            for write, args in records:
                write(*args)
            return self.queue.lease(lease, time.time()) if lease else []


def _batch(target: Any) -> contextlib.AbstractContextManager:
    batch = getattr(target, "batch", None)
    return batch() if batch is not None else contextlib.nullcontext()

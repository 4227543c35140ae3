"""The runner's status recorder (its StatusListener): the local store, plus
the Supabase outbox and the status-webhook outbox. The reports behind
`docutrain status`, `sync` and `GET /v1/status` are in status/reports.py.

Used in the runner's parent process only. Every transition is written to the
outboxes first (when the job belongs to a document id and that destination is
configured), then to the local store; `flush` pushes each outbox to its
destination. Their trouble never raises out of here: the runner keeps
processing and the backlog waits.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator

from docutrain_cli import sqlite
from docutrain_cli.config import Settings
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.paths import webhook_outbox_path
from docutrain_cli.status.outbox import Delivery, FlushResult, Outbox
from docutrain_cli.store.local import LocalStore
from docutrain_cli.status.webhooks import WebhookDelivery

log = logging.getLogger("docutrain.status")

# The runner flushes every couple of seconds from its dispatch loop, so each
# flush and each request must be short: a slow Supabase delays statuses, not jobs.
FLUSH_DEADLINE = 3.0
REQUEST_TIMEOUT = 5.0
# A run's last flush has nothing else to wait for, and what it leaves waits
# for the next run: more time, within a service's stop budget (README's unit:
# TimeoutStopSec=60 after grace_period's 30 s). 3 s was not always enough for
# a fresh process that first imports the Supabase client on a loaded machine.
EXIT_FLUSH_DEADLINE = 15.0
# A document that ends is pushed at once (`flush_finished`), not at the next
# periodic flush: the app is waiting for `ready` (bench row 8d: the 2 s flush
# was 0.8 s of a 1.3 s upload). At most this often, so a busy runner still
# sends in groups; `processing` waits for the periodic flush.
FINISHED_GAP = 0.2
FINAL_STATUSES = ("ready", "error")


class Destination:
    """One outbox and where it goes. The delivery (its HTTP client) is made
    on the first flush, in the process that flushes; trouble never raises
    out of `flush`: it is logged, noted in the outbox for `docutrain status`,
    and the backlog waits."""

    def __init__(self, name: str, outbox: Outbox, make_delivery: Callable[[], Delivery]):
        self.name = name  # for log lines: "status sync", "status webhooks"
        self.outbox = outbox
        self.delivery: Delivery | None = None
        self._make_delivery = make_delivery
        self.last_result: FlushResult | None = None

    def flush(self, deadline_seconds: float, force: bool, statuses: tuple[str, ...] | None = None) -> int:
        """Push what the outbox holds (documents whose newest change is one
        of `statuses`, if given); returns how many changes were sent."""
        try:
            if self.delivery is None:
                self.delivery = self._make_delivery()
            result = self.outbox.flush(
                self.delivery, deadline_seconds=deadline_seconds, force=force, statuses=statuses
            )
        except Exception as exc:  # noqa: BLE001 - e.g. a bad URL: keep the backlog, say why
            log.warning("%s failed: %s", self.name, exc)
            self.outbox.note_error(f"{type(exc).__name__}: {exc}")
            result = FlushResult(error=str(exc))
        self.last_result = result
        return result.sent

    def close(self) -> None:
        if self.delivery is not None and hasattr(self.delivery, "close"):
            self.delivery.close()
        self.outbox.close()


class StatusRecorder:
    """Implements runner.StatusListener."""

    def __init__(
        self, settings: Settings, *, delivery: Delivery | None = None, request_timeout: float = REQUEST_TIMEOUT
    ):
        self.settings = settings
        self.store = LocalStore(settings.store)

        def supabase_delivery() -> Delivery:
            from docutrain_cli.status.supabase import SupabaseStatusDelivery

            return delivery or SupabaseStatusDelivery(settings, timeout=request_timeout)

        self.supabase = Destination("status sync", Outbox.for_store(settings.store), supabase_delivery)
        self.outbox = self.supabase.outbox
        # Status webhooks: a second outbox file with its own delivery.
        self.webhooks = (
            Destination(
                "status webhooks", Outbox(webhook_outbox_path(settings.store)),
                lambda: WebhookDelivery(settings, timeout=request_timeout),
            )
            if settings.status_webhook_url
            else None
        )
        self.webhook_outbox = self.webhooks.outbox if self.webhooks else None
        self._batch: contextlib.ExitStack | None = None  # the open transactions of batch()
        self._begun: set[int] = set()
        self._finished_waiting = False  # a ready or error went into an outbox since flush_finished
        self._finished_pushed_at = float("-inf")  # monotonic

    @property
    def last_result(self) -> FlushResult | None:
        return self.supabase.last_result

    @property
    def last_webhook_result(self) -> FlushResult | None:
        return self.webhooks.last_result if self.webhooks else None

    def _remote(self, job: Job) -> bool:
        return self.settings.supabase_enabled and bool(job.document_id)

    # -- transitions ---------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Transitions recorded inside are written with one transaction per
        file (the store, each outbox), committed at the end: the runner's
        pass. A file nothing was written to is not touched."""
        with contextlib.ExitStack() as transactions:
            self._batch, self._begun = transactions, set()
            try:
                yield
            finally:
                self._batch = None

    def _in_batch(self, file):
        """`file` (the store or an outbox), its transaction begun if in a batch."""
        if self._batch is not None and id(file) not in self._begun:
            self._batch.enter_context(sqlite.transaction(file.conn))
            self._begun.add(id(file))
        return file

    def _to_webhooks(self, job: Job, status: str, **fields: Any) -> None:
        if self.webhook_outbox is not None and job.document_id:
            self._in_batch(self.webhook_outbox).record(job.document_id, status, **fields)
            self._finished_waiting |= status in FINAL_STATUSES

    def processing(self, job: Job) -> None:
        self._to_webhooks(job, "processing")
        if self._remote(job):
            self._in_batch(self.outbox).record(job.document_id, "processing")
        self._in_batch(self.store).set_status(
            job.document_key, "processing", source=job.source, sha256=job.sha256, user_id=job.user_id
        )

    def ready(self, job: Job, result: JobResult) -> None:
        # 0 means "not reported" (a real document has pages and chunks):
        # None keeps what the row already holds.
        pages, chunks = result.pages or None, result.chunks or None
        if result.batch_texts:
            # The job is done but its vectors come from a batch: locally the
            # document shows 'embedding'; Supabase keeps 'processing' (its
            # schema knows no other state) until the batch step says ready.
            self._in_batch(self.store).set_status(
                job.document_key, "embedding", source=job.source, sha256=result.sha256 or job.sha256,
                user_id=job.user_id, page_count=pages,
            )
            return
        self._to_webhooks(job, "ready", page_count=pages, chunk_count=chunks)
        if self._remote(job):
            self._in_batch(self.outbox).record(job.document_id, "ready", page_count=pages, chunk_count=chunks)
            self._finished_waiting = True
        self._in_batch(self.store).set_status(
            job.document_key,
            "ready",
            source=job.source,
            sha256=result.sha256 or job.sha256,
            user_id=job.user_id,
            page_count=pages,
            chunk_count=chunks,
        )

    def error(self, job: Job, message: str) -> None:
        self._to_webhooks(job, "error", error_message=message)
        if self._remote(job):
            self._in_batch(self.outbox).record(job.document_id, "error", error_message=message)
            self._finished_waiting = True
        self._in_batch(self.store).set_status(
            job.document_key, "error", source=job.source, sha256=job.sha256, user_id=job.user_id, error=message
        )

    # -- delivery ------------------------------------------------------------

    def flush(self, deadline_seconds: float = FLUSH_DEADLINE, *, force: bool = False, at_exit: bool = False) -> int:
        """Push what the outboxes hold; returns how many changes were sent.
        `at_exit`: a run's last flush, given EXIT_FLUSH_DEADLINE.
        Never raises for Supabase or webhook trouble (see `last_error()` / `backlog()`)."""
        if at_exit:
            deadline_seconds = EXIT_FLUSH_DEADLINE
        return self.flush_supabase(deadline_seconds, force) + self.flush_webhooks(deadline_seconds, force=force)

    def flush_finished(self) -> int:
        """Push the documents that ended (ready, error) since the last call,
        unless that was less than FINISHED_GAP ago (then the next call does).
        The runner calls it every tick; cheap when nothing ended. The outage
        backoff holds here too. Never raises, like `flush`."""
        now = time.monotonic()
        if not self._finished_waiting or now - self._finished_pushed_at < FINISHED_GAP:
            return 0
        self._finished_waiting, self._finished_pushed_at = False, now
        sent = self.supabase.flush(FLUSH_DEADLINE, False, FINAL_STATUSES) if self.settings.supabase_enabled else 0
        if self.webhooks is not None:
            sent += self.webhooks.flush(FLUSH_DEADLINE, False, FINAL_STATUSES)
        return sent

    def checkpoint(self) -> None:
        """Checkpoint the local store for the workers, whose connections
        leave it to us (LocalStore's `checkpoints=False`). Cheap when the WAL
        holds nothing new."""
        self.store.checkpoint()

    def flush_webhooks(self, deadline_seconds: float = FLUSH_DEADLINE, *, force: bool = False) -> int:
        return self.webhooks.flush(deadline_seconds, force) if self.webhooks else 0

    def flush_supabase(self, deadline_seconds: float = FLUSH_DEADLINE, force: bool = False) -> int:
        return self.supabase.flush(deadline_seconds, force) if self.settings.supabase_enabled else 0

    def backlog(self) -> int:
        return self.outbox.backlog()

    def waiting_document_ids(self) -> set[str]:
        """Documents whose status Supabase has not received yet."""
        return self.outbox.document_ids()

    def last_error(self) -> tuple[str, float] | None:
        return self.outbox.last_error()

    def info(self) -> dict:
        return self.outbox.info()

    def close(self) -> None:
        if self.webhooks is not None:
            self.webhooks.close()
        self.supabase.close()
        self.store.close()

"""The runner's status recorder: the local store, plus the Supabase outbox
and the status-webhook outbox.

Used in the runner's parent process only. Every transition is written to the
outboxes first (when the job belongs to a document id and that destination is
configured), then to the local store; `flush` pushes each outbox to its
destination. Their trouble never raises out of here: the runner keeps
processing and the backlog waits.
"""

from __future__ import annotations

import logging
from typing import Any

from docutrain_cli.config import Settings
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.paths import outbox_path, webhook_outbox_path
from docutrain_cli.status.outbox import Delivery, FlushResult, Outbox
from docutrain_cli.queues.base import QueueStats
from docutrain_cli.store.local import LocalStore
from docutrain_cli.status.webhooks import WebhookDelivery

log = logging.getLogger("docutrain.status")

# The runner flushes every couple of seconds from its dispatch loop, so each
# flush and each request must be short: a slow Supabase delays statuses, not jobs.
FLUSH_DEADLINE = 3.0
REQUEST_TIMEOUT = 5.0


class StatusRecorder:
    """Implements runner.StatusListener."""

    def __init__(
        self, settings: Settings, *, delivery: Delivery | None = None, request_timeout: float = REQUEST_TIMEOUT
    ):
        self.settings = settings
        self.store = LocalStore(settings.store)
        self.outbox = Outbox.for_store(settings.store)
        self._delivery = delivery
        self._request_timeout = request_timeout
        self.last_result: FlushResult | None = None
        # Status webhooks: a second outbox file with its own delivery.
        self.webhook_outbox = Outbox(webhook_outbox_path(settings.store)) if settings.status_webhook_url else None
        self._webhook_delivery: WebhookDelivery | None = None
        self.last_webhook_result: FlushResult | None = None

    @property
    def delivery(self) -> Delivery:
        if self._delivery is None:  # its client is made on first flush, in this process
            from docutrain_cli.status.supabase import SupabaseStatusDelivery

            self._delivery = SupabaseStatusDelivery(self.settings, timeout=self._request_timeout)
        return self._delivery

    def _remote(self, job: Job) -> bool:
        return self.settings.supabase_enabled and bool(job.document_id)

    # -- transitions ---------------------------------------------------------

    def _to_webhooks(self, job: Job, status: str, **fields: Any) -> None:
        if self.webhook_outbox is not None and job.document_id:
            self.webhook_outbox.record(job.document_id, status, **fields)

    def processing(self, job: Job) -> None:
        self._to_webhooks(job, "processing")
        if self._remote(job):
            self.outbox.record(job.document_id, "processing")
        self.store.set_status(
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
            self.store.set_status(
                job.document_key, "embedding", source=job.source, sha256=result.sha256 or job.sha256,
                user_id=job.user_id, page_count=pages,
            )
            return
        self._to_webhooks(job, "ready", page_count=pages, chunk_count=chunks)
        if self._remote(job):
            self.outbox.record(job.document_id, "ready", page_count=pages, chunk_count=chunks)
        self.store.set_status(
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
            self.outbox.record(job.document_id, "error", error_message=message)
        self.store.set_status(
            job.document_key, "error", source=job.source, sha256=job.sha256, user_id=job.user_id, error=message
        )

    # -- delivery ------------------------------------------------------------

    def flush(self, deadline_seconds: float = FLUSH_DEADLINE, *, force: bool = False) -> int:
        """Push what the outboxes hold; returns how many changes were sent.
        Never raises for Supabase or webhook trouble (see `last_error()` / `backlog()`)."""
        return self.flush_supabase(deadline_seconds, force) + self.flush_webhooks(deadline_seconds, force=force)

    def flush_webhooks(self, deadline_seconds: float = FLUSH_DEADLINE, *, force: bool = False) -> int:
        if self.webhook_outbox is None:
            return 0
        try:
            if self._webhook_delivery is None:
                self._webhook_delivery = WebhookDelivery(self.settings, timeout=self._request_timeout)
            result = self.webhook_outbox.flush(self._webhook_delivery, deadline_seconds=deadline_seconds, force=force)
        except Exception as exc:  # noqa: BLE001 - keep the backlog, say why
            log.warning("status webhooks failed: %s", exc)
            self.webhook_outbox.note_error(f"{type(exc).__name__}: {exc}")
            result = FlushResult(error=str(exc))
        self.last_webhook_result = result
        return result.sent

    def flush_supabase(self, deadline_seconds: float = FLUSH_DEADLINE, force: bool = False) -> int:
        if not self.settings.supabase_enabled:
            return 0
        try:
            result = self.outbox.flush(self.delivery, deadline_seconds=deadline_seconds, force=force)
        except Exception as exc:  # noqa: BLE001 - e.g. a bad URL: keep the backlog, say why
            log.warning("status sync failed: %s", exc)
            self.outbox.note_error(f"{type(exc).__name__}: {exc}")
            result = FlushResult(error=str(exc))
        self.last_result = result
        return result.sent

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
        if self._webhook_delivery is not None:
            self._webhook_delivery.close()
        if self.webhook_outbox is not None:
            self.webhook_outbox.close()
        if self._delivery is not None and hasattr(self._delivery, "close"):
            self._delivery.close()
        self.outbox.close()
        self.store.close()


def sync(settings: Settings, *, deadline_seconds: float = 60.0) -> dict:
    """`docutrain sync`: push the outbox now, ignoring the backoff. Returns
    the flush result and the outbox info after it."""
    recorder = StatusRecorder(settings, request_timeout=15.0)
    try:
        webhooks = None
        if recorder.webhook_outbox is not None:
            recorder.flush_webhooks(deadline_seconds, force=True)
            done = recorder.last_webhook_result or FlushResult()
            webhooks = {"delivered": done.delivered, "dropped": done.dropped, "refused": done.refused,
                        "error": done.error, "backlog": recorder.webhook_outbox.backlog()}
        if not settings.supabase_enabled:
            return {"enabled": False, "status_webhooks": webhooks, **recorder.info()}
        recorder.flush_supabase(deadline_seconds, True)
        result = recorder.last_result or FlushResult()
        return {
            "status_webhooks": webhooks,
            "enabled": True,
            "delivered": result.delivered,
            "dropped": result.dropped,
            "refused": result.refused,
            "error": result.error,
            "skipped": result.skipped,
            **recorder.info(),
        }
    finally:
        recorder.close()


def status_report(settings: Settings, stats: QueueStats) -> dict:
    """The object `docutrain status --json` prints and `GET /v1/status` answers."""
    from docutrain_cli.batch.ledger import batch_status

    return {
        **stats.counts,
        "unfinished": stats.pending if stats.known else stats.unfinished,
        "oldest_queued_age_seconds": stats.oldest_queued_age,
        "next_retry_at": stats.next_retry_at,
        "runner": stats.runner,
        "queue_details": stats.details,
        "supabase_outbox": outbox_status(settings),
        "status_webhook_outbox": webhook_outbox_status(settings),
        "embedding_budget": budget_status(settings),
        "batches": batch_status(settings.store),
    }


def budget_status(settings: Settings) -> list[dict]:
    """The embedding rate budget(s) this queue has seen (docutrain_cli.ratelimit.budget)."""
    from docutrain_cli.ratelimit.budget import budget_status as read

    return read(settings)


def outbox_status(settings: Settings) -> dict | None:
    """The outbox fields for `docutrain status`, or None when there is no
    outbox yet (nothing was ever recorded for Supabase). Read-only otherwise."""
    path = outbox_path(settings.store)
    if not path.exists():
        return None
    with Outbox(path) as outbox:
        return {"supabase_enabled": settings.supabase_enabled, **outbox.info()}


def webhook_outbox_status(settings: Settings) -> dict | None:
    """The status-webhook outbox fields for `docutrain status`, or None when
    webhooks were never used here."""
    path = webhook_outbox_path(settings.store)
    if not path.exists():
        return None
    with Outbox(path) as outbox:
        return {"url_configured": bool(settings.status_webhook_url), **outbox.info()}


"""The reports behind `docutrain status`, `docutrain sync` and serve's
`GET /v1/status`: what the queue, the outboxes, the embedding budget and the
batches hold, as plain dicts (the same object for the CLI's --json and HTTP)."""

from __future__ import annotations

from docutrain_cli.config import Settings
from docutrain_cli.jobs import iso_time
from docutrain_cli.paths import outbox_path, webhook_outbox_path
from docutrain_cli.queues.base import QueueStats
from docutrain_cli.status.outbox import FlushResult, Outbox
from docutrain_cli.status.recorder import StatusRecorder


def sync(settings: Settings, *, deadline_seconds: float = 60.0) -> dict:
    """`docutrain sync`: push the outbox now, ignoring the backoff. Returns
    the flush result and the outbox info after it."""
    recorder = StatusRecorder(settings, request_timeout=15.0)
    try:
        webhooks = None
        if recorder.webhook_outbox is not None:
            recorder.flush_webhooks(deadline_seconds, force=True)
            done = recorder.last_webhook_result or FlushResult()
            webhooks = {**done.outcome(), "backlog": recorder.webhook_outbox.backlog()}
        if not settings.supabase_enabled:
            return {"enabled": False, "status_webhooks": webhooks, **iso_times(recorder.info())}
        recorder.flush_supabase(deadline_seconds, True)
        result = recorder.last_result or FlushResult()
        return {
            "status_webhooks": webhooks,
            "enabled": True,
            **result.outcome(),
            "skipped": result.skipped,
            **iso_times(recorder.info()),
        }
    finally:
        recorder.close()


def status_report(settings: Settings, stats: QueueStats, line: dict | None = None) -> dict:
    """The object `docutrain status --json` prints and `GET /v1/status` answers;
    `line` is who waits in the queue (queues/line.py `users_in_line`)."""
    from docutrain_cli.batch.ledger import batch_status
    from docutrain_cli.queues.line import NO_LINE

    return {
        **stats.counts,
        "unfinished": stats.pending if stats.known else stats.unfinished,
        "oldest_queued_age_seconds": stats.oldest_queued_age,
        "next_retry_at": iso_time(stats.next_retry_at),
        "runner": stats.runner,
        "queue_details": stats.details,
        "supabase_outbox": iso_times(outbox_status(settings)),
        "status_webhook_outbox": iso_times(webhook_outbox_status(settings)),
        "embedding_budget": [iso_times(budget) for budget in budget_status(settings)],
        "batches": batch_status(settings.store),
        **(line or NO_LINE),
    }


# Epoch seconds in the outbox and budget records, ISO 8601 in the reports' JSON.
REPORTED_TIMES = ("last_error_at", "last_success_at", "retry_after", "problem_at", "updated_at")


def iso_times(record: dict | None) -> dict | None:
    """A record with its times (REPORTED_TIMES) as JSON shows them (jobs.iso_time)."""
    if record is None:
        return None
    return {key: iso_time(value) if key in REPORTED_TIMES else value for key, value in record.items()}


def budget_status(settings: Settings) -> list[dict]:
    """The embedding rate budget(s) this queue has seen (docutrain_cli.ratelimit.budget)."""
    from docutrain_cli.ratelimit.budget import budget_status as read

    return read(settings)


def outbox_status(settings: Settings) -> dict | None:
    """The outbox fields for `docutrain status`, or None when there is no
    outbox yet (nothing was ever recorded for Supabase)."""
    return _outbox_info(outbox_path(settings.store), supabase_enabled=settings.supabase_enabled)


def webhook_outbox_status(settings: Settings) -> dict | None:
    """The status-webhook outbox fields for `docutrain status`, or None when
    webhooks were never used here."""
    return _outbox_info(webhook_outbox_path(settings.store), url_configured=bool(settings.status_webhook_url))


def _outbox_info(path, **facts) -> dict | None:
    # Read-only: a missing outbox stays missing.
    if not path.exists():
        return None
    with Outbox(path) as outbox:
        return {**facts, **outbox.info()}

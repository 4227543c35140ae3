"""Reconcile: a service runner queues the Supabase rows no webhook announced.

pg_net delivers a Database Webhook at most once: a webhook lost while
`docutrain serve` was down or restarting would leave its row `pending`
forever. So a service runner does what `enqueue --from-supabase` does, at
start and then every `reconcile_interval`: every `pending` row whose document
has no job queued, running or retrying gets one (atomically, so a webhook
arriving at the same moment does not make a second job). A lost webhook then
costs minutes, not a stuck document.

A row stays `pending` in Supabase until the outbox delivers `processing`, so
documents whose status is still waiting in our own outbox are skipped: their
job just finished or started here and Supabase has not heard yet.
"""

from __future__ import annotations

import logging
import time

from docutrain_cli.config import Settings
from docutrain_cli.queues.enqueue import EnqueueReport, enqueue_jobs
from docutrain_cli.queues.base import JobQueue

log = logging.getLogger("docutrain.reconcile")


def reconcile(settings: Settings, queue: JobQueue, skip_document_ids: set[str] = frozenset()) -> EnqueueReport:
    """Queue every pending row that has no active job. Raises TransientError
    (Supabase unreachable) or PermanentError (schema, key)."""
    from docutrain_cli.supabase.pull import pending_jobs

    jobs, refused = pending_jobs(settings)
    # low: a backfill of documents no webhook announced (enqueue_jobs' default)
    report = enqueue_jobs(queue, [job for job in jobs if job.document_id not in skip_document_ids])
    report.refused.extend(refused)
    return report


class Reconciler:
    """The runner's periodic task: `due()` then `run()`; never raises."""

    def __init__(self, settings: Settings, queue: JobQueue, outbox_ids=lambda: set()):
        self.settings = settings
        self.queue = queue
        self._outbox_ids = outbox_ids  # document ids whose status is not in Supabase yet
        self.next_at = 0.0  # monotonic; at once when the runner starts
        self.last_report: EnqueueReport | None = None
        self.last_error: str | None = None

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def run(self, now: float | None = None) -> EnqueueReport | None:
        now = time.monotonic() if now is None else now
        self.next_at = now + self.settings.reconcile_interval
        try:
            report = reconcile(self.settings, self.queue, self._outbox_ids())
        except Exception as exc:  # noqa: BLE001 - Supabase trouble: try again next interval
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("reconcile with Supabase failed, next try in %.0f s: %s",
                        self.settings.reconcile_interval, exc)
            return None
        self.last_report, self.last_error = report, None
        if report.queued:
            log.warning("reconcile queued %d pending document(s) no webhook announced", len(report.queued))
        for refused in report.refused:
            log.warning("reconcile refused %s: %s", refused.path, refused.reason)
        return report

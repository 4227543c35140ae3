"""Queue backends: a local SQLite file (default), pgmq in Postgres, or
Cloudflare Queues over its HTTP pull-consumer API."""

from __future__ import annotations

from docutrain_cli.queues.base import JobQueue, QueueStats
from docutrain_cli.queues.order import LeaseOrder


def open_queue(settings) -> JobQueue:
    """Open the queue the settings name: a postgresql:// URL selects pgmq,
    cloudflare://<account_id>/<queue_id> Cloudflare Queues; leasing in the
    order they name (queues/order.py)."""
    if settings.queue_is_cloudflare:
        from docutrain_cli.queues.cloudflare import open_cloudflare

        return open_cloudflare(settings)
    order = order_for(settings)
    if settings.queue_is_postgres:
        from docutrain_cli.queues.pgmq import PgmqQueue

        return PgmqQueue(settings.queue, settings.queue_name, settings.visibility_timeout, order=order)
    from docutrain_cli.queues.local import LocalQueue

    return LocalQueue(settings.queue, order=order)


def order_for(settings) -> LeaseOrder:
    """The lease order the settings name (lease_order, priority_max_wait, user_weights)."""
    if settings.lease_order == "fifo":
        return LeaseOrder(settings.priority_max_wait)
    from docutrain_cli.queues.fair import FairShare

    return FairShare.from_settings(settings)


__all__ = ["JobQueue", "QueueStats", "open_queue"]

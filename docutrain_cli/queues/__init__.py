"""Queue backends: a local SQLite file (default), pgmq in Postgres, or
Cloudflare Queues over its HTTP pull-consumer API."""

from __future__ import annotations

from docutrain_cli.queues.base import JobQueue, QueueDescription, QueueStats


def queue_class(settings) -> type[JobQueue]:
    """The backend of the queue the settings name: a postgresql:// URL selects
    pgmq, cloudflare://<account_id>/<queue_id> Cloudflare Queues, anything
    else a local file. Imported only when chosen (pgmq needs psycopg)."""
    if settings.queue_is_cloudflare:
        from docutrain_cli.queues.cloudflare import CloudflareQueue

        return CloudflareQueue
    if settings.queue_is_postgres:
        from docutrain_cli.queues.pgmq import PgmqQueue

        return PgmqQueue
    from docutrain_cli.queues.local import LocalQueue

    return LocalQueue


def open_queue(settings) -> JobQueue:
    """Open the queue the settings name."""
    return queue_class(settings).from_settings(settings)


def describe_queue(settings) -> QueueDescription:
    """What the queue the settings name is, without opening it."""
    return queue_class(settings).describe(settings)


__all__ = ["JobQueue", "QueueDescription", "QueueStats", "describe_queue", "open_queue", "queue_class"]

"""The files docutrain keeps beside the queue file and the store (sidecars).

One home for their names, so every process that opens one (runner, workers,
`serve`, `status`, `sync`) finds the same file:

    <queue>.lock      the runner lock of a local queue (queues/lock.py)
    <queue>.wake      the idle runner's wake-up socket (queues/wake.py)
    <queue>.budget    the embedding rate budget (ratelimit/budget.py); beside
                      the store for a Cloudflare queue, which has no file here
    <store>.outbox    status changes waiting for Supabase (status/outbox.py)
    <store>.webhooks  status changes waiting for the status webhook
    <store>.workers   what each worker is doing (run/activity.py)
    <store>.sessions  dashboard log-ins revoked by log-out (serve/revocations.py)
    <outbox>.lock     held while one process flushes that outbox
"""

from __future__ import annotations

import os
from pathlib import Path


def beside(path: str | os.PathLike[str], suffix: str) -> Path:
    """`path` with `suffix` added to its name: queue.db -> queue.db.wake."""
    return Path(os.fspath(path) + suffix)


def runner_lock_path(queue_path: str | os.PathLike[str]) -> Path:
    return beside(queue_path, ".lock")


def wake_path(queue_path: str | os.PathLike[str]) -> Path:
    return beside(queue_path, ".wake")


def budget_path(settings) -> Path:
    """Beside the queue file: every worker of the runner that holds it shares
    it. A Cloudflare queue has no database of ours to hold a shared row, so
    each machine keeps its own beside the store (set embedding_tpm to the
    machine's share of the limit when several drain one queue)."""
    return beside(settings.store if settings.queue_is_cloudflare else settings.queue, ".budget")


def outbox_path(store_path: str | os.PathLike[str]) -> Path:
    return beside(store_path, ".outbox")


def webhook_outbox_path(store_path: str | os.PathLike[str]) -> Path:
    return beside(store_path, ".webhooks")


def workers_path(store_path: str | os.PathLike[str]) -> Path:
    return beside(store_path, ".workers")


def flush_lock_path(outbox_path: str | os.PathLike[str]) -> Path:
    return beside(outbox_path, ".lock")


def sessions_path(store_path: str | os.PathLike[str]) -> Path:
    return beside(store_path, ".sessions")

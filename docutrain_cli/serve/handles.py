"""Queue handles for request threads.

A queue handle is used from one thread at a time (see queues/base.py), and
SQLite and Postgres calls block, so routes run library calls in worker
threads, each borrowing a handle from this pool. Handles are made on demand,
up to `size`, and kept open between requests (opening one costs far more
than a request).
"""

from __future__ import annotations

import contextlib
import queue as queue_module
import threading
from typing import Callable, TypeVar

import anyio
import anyio.to_thread

from docutrain_cli.config import Settings
from docutrain_cli.queues import JobQueue, open_queue

T = TypeVar("T")
DEFAULT_SIZE = 8


class QueueHandles:
    def __init__(self, settings: Settings, size: int = DEFAULT_SIZE):
        self.settings = settings
        self._idle: queue_module.LifoQueue[JobQueue] = queue_module.LifoQueue()
        self._limiter = anyio.CapacityLimiter(size)
        self._all: list[JobQueue] = []
        self._lock = threading.Lock()

    async def call(self, work: Callable[[JobQueue], T]) -> T:
        """Run `work(queue)` in a worker thread with a handle of its own."""
        return await anyio.to_thread.run_sync(self._call, work, limiter=self._limiter)

    def _call(self, work: Callable[[JobQueue], T]) -> T:
        try:
            handle = self._idle.get_nowait()
        except queue_module.Empty:
            handle = open_queue(self.settings)
            with self._lock:
                self._all.append(handle)
        broken = True
        try:
            result = work(handle)
            broken = False
            return result
        finally:
            if broken:  # an error may have left it mid-transaction: do not reuse
                with self._lock:
                    self._all.remove(handle)
                with contextlib.suppress(Exception):
                    handle.close()
            else:
                self._idle.put(handle)

    def close(self) -> None:
        with self._lock:
            handles, self._all = self._all, []
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.close()

"""An exclusive, crash-safe lock file: one runner per local queue.

flock() is released by the kernel when the holder dies, even by kill -9, so
a stale lock can never block the next cron run. The file also records who
holds it, so a second runner can say so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from docutrain_cli.errors import QueueBusyError
from docutrain_cli.sqlite import try_lock


class RunnerLock:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = try_lock(self.path)
        if fd is None:
            raise QueueBusyError(
                f"{self.path.with_suffix('')}: queue is busy: {self.holder() or 'another runner'}"
            )
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holder(self) -> str | None:
        """'runner pid 123 on host since 12:00:01', or None when nobody holds it."""
        info = self.holder_info()
        return None if info is None else describe_holder(info)

    def holder_info(self) -> dict | None:
        """{"pid", "host", "since"} of the holder (as it wrote them), {} if
        it wrote nothing readable, or None when nobody holds the lock."""
        if self._fd is not None:
            return _parse(self.path.read_text())
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def __enter__(self) -> "RunnerLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _parse(text: str) -> dict:
    try:
        info = json.loads(text or "{}")
        return {"pid": int(info["pid"]), "host": str(info["host"]), "since": float(info["since"])}
    except (ValueError, KeyError, TypeError):
        return {}


def describe_holder(info: dict | str) -> str:
    if isinstance(info, str):
        info = _parse(info)
    if not info:
        return "held by another runner"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
    return f"held by runner pid {info['pid']} on {info['host']} since {since}"

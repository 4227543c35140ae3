"""Waking an idle runner the moment a job is queued.

On pgmq, producers NOTIFY in the transaction that sends, and idle runners
LISTEN on a connection of their own (NotifyWaiter, at the end).

On a local queue file, the runner that holds `<queue>.lock` binds a Unix datagram socket at
`<queue>.wake` and, when idle, sleeps in select() on it instead of polling the
file. Producers (`docutrain serve`, `enqueue`, `retry`) send it one byte after
their commit. Why a datagram socket: sending never blocks and needs no
connection (a FIFO blocks or fails oddly without a reader and reports EOF once
its last writer closes); if no runner listens the send simply fails, and the
file on disk is still the source of truth, so a lost wake-up costs at most one
poll interval. Only the lock holder binds, so it may remove a socket file a
killed runner left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import time
from pathlib import Path

from docutrain_cli.queues.base import Waiter

log = logging.getLogger("docutrain.wake")

MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL


class Poker:
    """The producer side: one unconnected socket, reused for every send."""

    def __init__(self, path: Path):
        self.path = str(path)
        self._sock: socket.socket | None = None

    def poke(self) -> None:
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(b"!", self.path)
        except OSError:
            # No runner listening (ENOENT, ECONNREFUSED), or its buffer is
            # full of wake-ups it has not read yet (EAGAIN): nothing to do.
            pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SocketWaiter(Waiter):
    """The runner side. Falls back to plain sleeping if the socket cannot be
    bound (a path too long for sun_path, a read-only folder)."""

    def __init__(self, path: Path):
        self.path = path
        self._sock: socket.socket | None = None
        if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
            log.warning("%s: path too long for a wake-up socket; the runner polls instead", path)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a killed runner; we hold the queue lock
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            log.warning("%s: cannot listen for wake-ups (%s); the runner polls instead", path, exc.strerror)
            return
        sock.setblocking(False)
        self._sock = sock

    def wait(self, timeout: float) -> bool:
        if self._sock is None:
            return super().wait(timeout)
        readable, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        if not readable:
            return False
        with contextlib.suppress(BlockingIOError):
            while self._sock.recv(64):  # one wake-up for however many pokes
                pass
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                self.path.unlink()


class NotifyWaiter(Waiter):
    """An idle runner waits for NOTIFY on the queue's channel on a connection
    of its own (LISTEN needs a session: it does not work through the Supabase
    transaction pooler, where the runner falls back to polling). Any trouble
    with that connection also means polling until the next try."""

    RECONNECT_EVERY = 30.0

    def __init__(self, url: str, channel: str):
        self.url, self.channel = url, channel
        self._conn = None
        self._next_try = 0.0
        self._listen()

    def _listen(self) -> None:
        from docutrain_cli.queues.pgmq_setup import connect, one_line, scrub

        self._next_try = time.monotonic() + self.RECONNECT_EVERY
        try:
            conn = connect(self.url)
            conn.execute(f'LISTEN "{self.channel}"')  # the name is checked by check_name
        except Exception as exc:  # noqa: BLE001 - polling still works
            log.warning("cannot LISTEN for new jobs (%s); the runner polls instead", scrub(one_line(exc), self.url))
            return
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        if self._conn is None:
            if time.monotonic() >= self._next_try:
                self._listen()
            if self._conn is None:
                return super().wait(timeout)
        try:
            for _ in self._conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                return True
            return False
        except Exception as exc:  # noqa: BLE001 - a dropped connection: poll, reconnect later
            from docutrain_cli.queues.pgmq_setup import one_line, scrub

            log.warning("lost the LISTEN connection (%s); polling until it is back", scrub(one_line(exc), self.url))
            self.close()
            return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

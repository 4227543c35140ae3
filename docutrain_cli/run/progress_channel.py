"""A one-way line from workers to the runner for "what is this job doing now"
("OCR page 3/40"): the runner shows it; nothing depends on it.

A Unix datagram socket in Linux's abstract namespace: each message is one
datagram, so there is no lock shared between processes (a worker killed
mid-send cannot wedge the others, as it could with a multiprocessing.Queue's
write lock), no file to clean up, and a send never blocks: when the runner
is behind, the message is dropped. Elsewhere than Linux the channel is off.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid

MAX_MESSAGE_BYTES = 512


class ProgressInbox:
    """The runner's end: bind, hand `address` to the workers, `drain()` each tick."""

    def __init__(self) -> None:
        self.address: str | None = None
        self._sock: socket.socket | None = None
        if not sys.platform.startswith("linux"):
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = f"\0docutrain-progress-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        sock.bind(address)
        sock.setblocking(False)
        self._sock, self.address = sock, address

    def drain(self, limit: int = 1000) -> list[tuple[int, str]]:
        """(job id, message) pairs received since the last call, oldest first."""
        messages: list[tuple[int, str]] = []
        while self._sock is not None and len(messages) < limit:
            try:
                data = self._sock.recv(MAX_MESSAGE_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            try:
                job_id, message = json.loads(data)
                messages.append((int(job_id), str(message)))
            except (ValueError, TypeError):
                continue  # not ours, or cut short: progress is best effort
        return messages

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ProgressSender:
    """A worker's end. `send` never blocks and never raises."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def send(self, job_id: int, message: str) -> None:
        if self._sock is None:
            return
        data = json.dumps([job_id, message[:200]]).encode()
        try:
            self._sock.sendto(data, self.address)
        except OSError:
            pass  # runner busy or gone: the job goes on regardless

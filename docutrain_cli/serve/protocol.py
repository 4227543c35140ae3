"""The HTTP protocol under uvicorn, with the two limits it lacks.

uvicorn's httptools protocol takes a request head (request line and headers)
of any size (an 8 MB header was accepted) and waits forever for one to end
(300 half-sent requests were all still held after 7 s; its keep-alive
timeout only runs between requests). This subclass adds, per connection:

- `max_head_bytes`: a head larger than this is answered 431 and the
  connection closed (counted as the parser hands over the URL and each
  header, and as raw bytes arrive while a head is incomplete, so at most one
  read more is ever buffered);
- `head_timeout`: a head not complete this many seconds after the
  connection opened or the request began is answered 408 and closed.

The rest (concurrency, keep-alive) are uvicorn's own settings; see
server.uvicorn_config. Bodies have their own timeout where they are read
(body.read_json, the dashboard's forms).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class HeadRefused(Exception):
    """Raised in a parser callback to stop parsing once we have answered."""


class LimitedHttpProtocol(HttpToolsProtocol):
    max_head_bytes = 16 * 1024
    head_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # raw bytes read while the head is incomplete
        self._parsed_head = 0  # bytes of URL and headers the parser handed over
        self._reading_head = True
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing: a read that completed the head (and brought
        # body bytes with it) is not held against the head.
        if self._reading_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, self._too_large)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head, self._head_bytes, self._parsed_head = True, 0, 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count_parsed(self, size: int) -> None:
        self._parsed_head += size
        if self._parsed_head > self.max_head_bytes:
            self._refuse(431, self._too_large)
            raise HeadRefused  # httptools stops; uvicorn would answer 400: see send_400_response

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # we answered already
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head waits while the app answers the one before
            return
        self._refuse(408, f"the request was not sent within {self.head_timeout:g} s")

    @property
    def _too_large(self) -> str:
        return f"the request line and headers are over {self.max_head_bytes // 1024} KB"

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        body = json.dumps({"error": message}).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, REASONS[status], len(body))
        )
        self.transport.write(head + body)
        self.transport.close()


def limited_protocol(max_head_bytes: int, head_timeout: float) -> type[LimitedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return type(
        "LimitedHttpProtocol", (LimitedHttpProtocol,),
        {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout},
    )

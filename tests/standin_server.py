"""The server plumbing every HTTP stand-in in tests/ shares: a threaded
HTTP server on 127.0.0.1 that can be taken down (listening stops and open
keep-alive connections are cut, so clients see the service gone) and
brought up again on the same port, and a quiet HTTP/1.1 handler base."""

from __future__ import annotations

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive, as real clients use it), no request log."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_body(self, status: int, data: bytes, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(status, json.dumps(body, default=str).encode(), headers=headers)


class _Server(ThreadingHTTPServer):
    """Remembers its open connections so `cut_connections` can end them."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any):
        self._open: set = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away mid-request (killed): nothing to answer
        super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Listener:
    """Serves `handler` on 127.0.0.1 from a background thread: a free port
    at the first `up()`, the same port at every later one."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.handler = handler
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def up(self) -> Listener:
        if self._server is None:
            self._server = _Server(("127.0.0.1", self.port), self.handler)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            daemon=True)
            self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening and cut open connections: clients get 'connection
        refused' (or a reset) on this port until the next `up()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.cut_connections()
            self._thread.join(5)
            self._server = self._thread = None


class Served:
    """A stand-in whose server is `self.listener`: its port, `up()` (the same
    port again), `down()` (connections refused) and `close()`."""

    listener: Listener

    @property
    def port(self) -> int:
        return self.listener.port

    def up(self) -> None:
        self.listener.up()

    def down(self) -> None:
        self.listener.down()

    def close(self) -> None:
        self.down()

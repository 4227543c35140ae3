"""Helpers for tests/test_edge_worker.py: the edge Worker (cloudflare/worker.js)
running in workerd through Miniflare (tests/edge_worker_host.mjs), configured
from cloudflare/wrangler.toml, and a pass-through proxy in front of
`docutrain serve` that can be told to answer errors instead."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLOUDFLARE = ROOT / "cloudflare"
HOST_SCRIPT = Path(__file__).resolve().parent / "edge_worker_host.mjs"


def require_miniflare() -> str:
    """The node executable; skips (fails when CI is set) without node or
    without Miniflare installed in cloudflare/ (`npm ci` there; scripts/test does it)."""
    node = shutil.which("node")
    if node is None:
        reason = "node is not installed (needed to run the edge Worker in workerd)"
    elif not (CLOUDFLARE / "node_modules" / "miniflare" / "package.json").exists():
        reason = "Miniflare is not installed: run `npm ci` in cloudflare/"
    else:
        return node
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the edge Worker tests must run)", pytrace=False)
    pytest.skip(reason)


def wrangler_config() -> tuple[dict, dict]:
    """(wrangler.toml as deployed by default, its commented-out push block
    parsed as TOML), so the test runs the Worker as wrangler.toml declares it."""
    text = (CLOUDFLARE / "wrangler.toml").read_text(encoding="utf-8")
    block = re.search(r"^# \[vars\]\n(.*?)^# --- end of B", text, re.S | re.M)
    assert block, "wrangler.toml: the push block (B) is missing"
    uncommented = re.sub(r"^# ?", "", "# [vars]\n" + block.group(1), flags=re.M)
    return tomllib.loads(text), tomllib.loads(uncommented)


@dataclasses.dataclass(frozen=True)
class Forwarded:
    path: str
    headers: dict  # names lower-cased
    body: dict | None
    status: int  # what the Worker got back (0: no answer)
    at: float  # time.monotonic()


class FaultyProxy:
    """Forwards every request to `target` unchanged, records it, and answers
    a scripted error instead for a document told to fail."""

    def __init__(self, target: str):
        self.target = urlsplit(target)
        self.calls: list[Forwarded] = []
        self._failures: dict[str, list[tuple[int, dict]]] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                proxy.handle(self)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def fail(self, document_id: str, status: int, headers: dict | None = None, times: int = 1) -> None:
        """Answer `status` instead of serve, `times` times; status 0 closes the
        connection without an answer."""
        with self._lock:
            self._failures.setdefault(document_id, []).extend([(status, headers or {})] * times)

    def calls_for(self, document_id: str) -> list[Forwarded]:
        with self._lock:
            return [c for c in self.calls if (c.body or {}).get("user_document_id") == document_id]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        raw = request.rfile.read(int(request.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        document_id = body.get("user_document_id") if isinstance(body, dict) else None
        with self._lock:
            scripted = self._failures.get(document_id)
            failure = scripted.pop(0) if scripted else None
        if failure:
            status, headers, answer = failure[0], failure[1], json.dumps({"error": "injected by the test"}).encode()
        else:
            status, headers, answer = self._forward(request, raw)
        with self._lock:
            self.calls.append(Forwarded(request.path, {k.lower(): v for k, v in request.headers.items()},
                                        body, status, time.monotonic()))
        if status == 0:
            request.close_connection = True
            return
        request.send_response(status)
        for name, value in {"content-type": "application/json", **headers}.items():
            request.send_header(name, value)
        request.send_header("content-length", str(len(answer)))
        request.end_headers()
        request.wfile.write(answer)

    def _forward(self, request: BaseHTTPRequestHandler, raw: bytes) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
            conn.request(request.command, request.path, body=raw, headers=headers)
            response = conn.getresponse()
            kept = {k: v for k, v in response.getheaders() if k.lower() in ("content-type", "retry-after")}
            return response.status, kept, response.read()
        finally:
            conn.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class EdgeWorker:
    """tests/edge_worker_host.mjs as a subprocess; every line it prints is kept."""

    def __init__(self, node: str, config: dict):
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [node, str(HOST_SCRIPT), json.dumps(config)], cwd=CLOUDFLARE,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        first = self.proc.stdout.readline()
        try:
            self.url = json.loads(first)["url"].rstrip("/")
        except (ValueError, KeyError):
            self.proc.kill()
            raise AssertionError(f"Miniflare did not start: {first}{self.proc.stdout.read()}") from None
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def dead_letters(self) -> list[dict]:
        prefix = "dead-letter queue got "
        return [json.loads(line.split(prefix, 1)[1]) for line in self.output() if prefix in line]

    def close(self) -> None:
        self.proc.terminate()  # the host disposes of Miniflare, which stops workerd
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

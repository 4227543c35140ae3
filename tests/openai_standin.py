"""An OpenAI-compatible embeddings server for the tests: real HTTP on 127.0.0.1.

It checks requests the way the API does (model, a list of non-empty strings,
at most 2048 inputs, encoding_format, dimensions), answers deterministic float
vectors, records every request, and can be told to fail: 429 with retry
headers, 500, a required bearer key (401), or a token limit per request (400).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODELS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
MAX_INPUTS = 2048


def fake_vector(text: str, dimensions: int) -> list[float]:
    """Deterministic unit vector for a text."""
    seed = hashlib.sha256(text.encode("utf-8")).digest()
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        values.extend(b / 127.5 - 1.0 for b in block)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def count_tokens(text: str) -> int:
    """The stand-in's own token count: one per word or symbol, roughly what OpenAI reports."""
    return max(1, len(text.split()))


@dataclass
class Recorded:
    inputs: list[str]
    tokens: int
    model: str
    dimensions: int | None
    authorization: str | None


@dataclass
class StandIn:
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    failures: list[tuple[int, dict]] = field(default_factory=list)  # queued (status, headers)
    required_key: str | None = None
    max_tokens_per_request: int | None = None
    token_limit_message: str | None = None  # instead of OpenAI's "Requested N tokens, ..."
    hits: int = 0  # every POST, failed ones included
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.requests)

    @property
    def inputs(self) -> list[str]:
        return [text for r in self.requests for text in r.inputs]

    def fail_next(self, n: int, status: int = 429, retry_after: float | None = 0.01) -> None:
        headers = {}
        if retry_after is not None:
            headers = {"retry-after": str(max(1, math.ceil(retry_after))),
                       "retry-after-ms": str(int(retry_after * 1000))}
        with self.lock:
            self.failures.extend([(status, headers)] * n)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.failures.clear()
            self.hits = 0


def _handler(state: StandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: int, message: str, code: str | None = None, headers=None) -> None:
            kind = {400: "invalid_request_error", 401: "invalid_request_error",
                    404: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
            self._send(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            with state.lock:
                state.hits += 1
                failure = state.failures.pop(0) if state.failures else None
            if self.path.rstrip("/") != "/v1/embeddings":
                return self._error(404, f"Invalid URL (POST {self.path})")
            if state.required_key is not None:
                if self.headers.get("authorization") != f"Bearer {state.required_key}":
                    return self._error(401, "Incorrect API key provided.", "invalid_api_key")
            if failure is not None:
                status, headers = failure
                message = "Rate limit reached" if status == 429 else "The server had an error"
                return self._error(status, message, headers=headers)
            try:
                body = json.loads(raw)
            except ValueError:
                return self._error(400, "We could not parse the JSON body of your request.")
            if isinstance(body, dict) and body.get("model") not in MODELS:
                return self._error(
                    404, f"The model `{body.get('model')}` does not exist or you do not have access to it.",
                    "model_not_found",
                )
            problem = self._validate(body)
            if problem:
                return self._error(400, problem)
            model = body["model"]
            inputs = body["input"]
            dimensions = body.get("dimensions") or MODELS[model]
            tokens = sum(count_tokens(t) for t in inputs)
            if state.max_tokens_per_request and tokens > state.max_tokens_per_request:
                return self._error(
                    400,
                    state.token_limit_message
                    or f"Requested {tokens} tokens, max {state.max_tokens_per_request} tokens per request",
                    "max_tokens_per_request",
                )
            with state.lock:
                state.requests.append(
                    Recorded(list(inputs), tokens, model, body.get("dimensions"),
                             self.headers.get("authorization"))
                )
            data = [
                {"object": "embedding", "index": i, "embedding": fake_vector(text, dimensions)}
                for i, text in enumerate(inputs)
            ]
            self._send(200, {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })

        @staticmethod
        def _validate(body) -> str | None:
            if not isinstance(body, dict):
                return "The request body must be a JSON object."
            if body.get("model") not in MODELS:
                return f"The model `{body.get('model')}` does not exist or you do not have access to it."
            inputs = body.get("input")
            if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
                return "'input' must be a list of strings (this stand-in accepts no other shape)."
            if not inputs:
                return "'input' : input must be a non-empty list"
            if len(inputs) > MAX_INPUTS:
                return f"'input' : maximum {MAX_INPUTS} inputs, got {len(inputs)}"
            if any(t == "" for t in inputs):
                return "'input' : input cannot be an empty string"
            if body.get("encoding_format", "float") != "float":
                return "this stand-in answers encoding_format=float only"
            dimensions = body.get("dimensions")
            if dimensions is not None:
                if body["model"] == "text-embedding-ada-002":
                    return "This model does not support specifying dimensions."
                if not isinstance(dimensions, int) or not 1 <= dimensions <= MODELS[body["model"]]:
                    return f"'dimensions' must be between 1 and {MODELS[body['model']]}"
            return None

    return Handler


class Server:
    def __init__(self) -> None:
        self.state = StandIn()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._httpd.daemon_threads = True
        self.state.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self.state

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def float32_roundtrip(values: list[float]) -> list[float]:
    """What a vector looks like after being stored as float32."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))

"""An OpenAI-compatible embeddings server for the tests: real HTTP on 127.0.0.1.

It checks requests the way the API does (model, a list of non-empty strings,
at most 2048 inputs, encoding_format, dimensions), answers deterministic float
vectors, records every request, and can be told to fail: 429 with retry
headers, 500, a required bearer key (401), or a token limit per request (400).

With `limit(tpm=..., rpm=...)` it also enforces an account's rate limit the
way OpenAI does: a token bucket holding one minute of tokens and a request
bucket holding one minute of requests, both refilled continuously; every
answer carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
(resets like `1s`, `6m0s`, `12ms`); a request the buckets cannot cover gets
429 "Rate limit reached ... Please try again in N ms" with `retry-after` and
`retry-after-ms`; one request larger than the whole TPM limit gets 429
"Request too large" (waiting never helps). Switches: `quota_exhausted` (429
insufficient_quota) and `key_revoked` (401 invalid_api_key). Counters:
`rate_limited` (429s sent), `successes`, `tokens_per_minute()`.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
import time
from dataclasses import dataclass, field

from standin_server import Listener, QuietHandler

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


ORGANIZATION = "org-standin0000000000000000"


def go_duration(seconds: float) -> str:
    """Seconds as OpenAI's reset headers write them: 12ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


class Bucket:
    """One minute of capacity, refilled continuously (what OpenAI enforces)."""

    def __init__(self, per_minute: int, level: float = 1.0, clock=time.monotonic):
        self.limit = per_minute
        self.level = per_minute * level  # a fraction of a full bucket
        self.clock = clock
        self.at = clock()

    def refill(self) -> float:
        now = self.clock()
        self.level = min(self.limit, self.level + (now - self.at) * self.limit / 60.0)
        self.at = now
        return self.level

    def wait_for(self, amount: int) -> float:
        """Seconds until `amount` fits (after a refill)."""
        missing = amount - self.level
        return max(0.0, missing * 60.0 / self.limit)

    def until_full(self) -> float:
        return (self.limit - self.level) * 60.0 / self.limit

    def headers(self, kind: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(self.limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, int(self.level))),
            f"x-ratelimit-reset-{kind}": go_duration(self.until_full()),
        }


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
    # The account's rate limit (see limit()); None: unlimited, no headers.
    token_bucket: Bucket | None = None
    request_bucket: Bucket | None = None
    latency: float = 0.0  # seconds before each answer, like a real round trip
    quota_exhausted: bool = False  # 429 insufficient_quota on every request
    key_revoked: bool = False  # 401 invalid_api_key on every request
    rate_limited: int = 0  # 429 "Rate limit reached" answers sent
    too_large: int = 0  # 429 "Request too large" answers sent
    successes: int = 0
    accepted: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, tokens)

    def limit(self, tpm: int | None = None, rpm: int | None = None, latency: float | None = None,
              level: float = 1.0) -> None:
        """Enforce an account limit from now on: full buckets, as for an idle
        account, or partly used ones (`level` < 1), as for one another client just used."""
        with self.lock:
            self.token_bucket = Bucket(tpm, level) if tpm else None
            self.request_bucket = Bucket(rpm, level) if rpm else None
            if latency is not None:
                self.latency = latency

    def tokens_per_minute(self, since: float | None = None, until: float | None = None) -> float:
        """Tokens accepted per minute between two monotonic times (default:
        from the first to the last accepted request)."""
        with self.lock:
            accepted = list(self.accepted)
        if not accepted:
            return 0.0
        since = accepted[0][0] if since is None else since
        until = accepted[-1][0] if until is None else until
        tokens = sum(n for at, n in accepted if since <= at <= until)
        return tokens * 60.0 / (until - since) if until > since else 0.0

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
            self.rate_limited = self.too_large = self.successes = 0
            self.accepted.clear()


class EmbeddingsHandler(QuietHandler):
    """POST /v1/embeddings as OpenAI answers it, for the StandIn `standin`;
    openai_batch_standin's handler inherits it for its sync endpoint."""

    standin: StandIn

    def _error(self, status: int, message: str, code: str | None = None, *, param: str | None = None,
               headers: dict | None = None, kind: str | None = None) -> None:
        """OpenAI's error body, with the account's rate-limit headers."""
        if kind is None and code == "insufficient_quota":
            kind = code
        kind = kind or {400: "invalid_request_error", 401: "invalid_request_error",
                        404: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error")
        headers = {**self._limit_headers(), **(headers or {})}
        self.send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, headers)

    def _limit_headers(self) -> dict[str, str]:
        state = self.standin
        headers: dict[str, str] = {}
        with state.lock:
            for bucket, kind in ((state.request_bucket, "requests"), (state.token_bucket, "tokens")):
                if bucket is not None:
                    bucket.refill()
                    headers.update(bucket.headers(kind))
        return headers

    def _account_refusal(self, model: str, tokens: int) -> bool:
        """Charge the account's buckets, or answer 429 as OpenAI does. True if refused."""
        state = self.standin
        with state.lock:
            tb, rb = state.token_bucket, state.request_bucket
            if tb is not None and tokens > tb.limit:
                state.too_large += 1
                message = (
                    f"Request too large for {model} in organization {ORGANIZATION} on tokens per min "
                    f"(TPM): Limit {tb.limit}, Requested {tokens}. The input or output tokens must be "
                    "reduced in order to run successfully. Visit https://platform.openai.com/account/"
                    "rate-limits to learn more."
                )
                refusal = (message, "tokens", None)
            else:
                refusal = None
                for bucket, amount, kind, unit in ((rb, 1, "requests", "RPM"), (tb, tokens, "tokens", "TPM")):
                    if bucket is None:
                        continue
                    bucket.refill()
                    wait = bucket.wait_for(amount)
                    if wait > 0:
                        used = bucket.limit - int(bucket.level)
                        per = "requests per min" if kind == "requests" else "tokens per min"
                        message = (
                            f"Rate limit reached for {model} in organization {ORGANIZATION} on {per} "
                            f"({unit}): Limit {bucket.limit}, Used {used}, Requested {amount}. Please try "
                            f"again in {go_duration(wait)}. Visit https://platform.openai.com/account/"
                            "rate-limits to learn more."
                        )
                        refusal = (message, kind, wait)
                        break
                if refusal is None:  # both buckets cover it: charge them
                    if rb is not None:
                        rb.level -= 1
                    if tb is not None:
                        tb.level -= tokens
                else:
                    state.rate_limited += 1
        if refusal is None:
            return False
        message, kind, wait = refusal
        headers = {}
        if wait is not None:
            headers = {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(math.ceil(wait * 1000))}
        self._error(429, message, "rate_limit_exceeded", headers=headers, kind=kind)
        return True

    def do_POST(self) -> None:
        raw = self.read_body()
        if self.path.rstrip("/") == "/v1/embeddings":
            return self.answer_embeddings(raw)
        self._count_hit()
        self._error(404, f"Invalid URL (POST {self.path})")

    def _count_hit(self) -> tuple[int, dict] | None:
        """Count a POST; the failure fail_next queued for it, if any."""
        with self.standin.lock:
            self.standin.hits += 1
            return self.standin.failures.pop(0) if self.standin.failures else None

    def answer_embeddings(self, raw: bytes) -> None:
        state = self.standin
        failure = self._count_hit()
        if state.latency:
            time.sleep(state.latency)
        presented = (self.headers.get("authorization") or "").removeprefix("Bearer ")
        if state.key_revoked or (state.required_key is not None and presented != state.required_key):
            # OpenAI names the key it refused, masked in the middle.
            shown = presented[:8] + "*" * 10 + presented[-4:] if len(presented) > 12 else "***"
            return self._error(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_api_key",
            )
        if state.quota_exhausted:
            return self._error(
                429,
                "You exceeded your current quota, please check your plan and billing details. For more "
                "information on this error, read the docs: https://platform.openai.com/docs/guides/"
                "error-codes/api-errors.",
                "insufficient_quota",
            )
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
        if self._account_refusal(model, tokens):
            return
        with state.lock:
            state.requests.append(
                Recorded(list(inputs), tokens, model, body.get("dimensions"),
                         self.headers.get("authorization"))
            )
            state.successes += 1
            state.accepted.append((time.monotonic(), tokens))
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(text, dimensions)}
            for i, text in enumerate(inputs)
        ]
        self.send_json(200, {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }, self._limit_headers())

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


def _handler(state: StandIn) -> type[EmbeddingsHandler]:
    return type("Handler", (EmbeddingsHandler,), {"standin": state})


class Server:
    def __init__(self) -> None:
        self.state = StandIn()
        self._listener = Listener(_handler(self.state))

    def __enter__(self) -> StandIn:
        self.state.port = self._listener.up().port
        return self.state

    def __exit__(self, *exc) -> None:
        self._listener.down()


def float32_roundtrip(values: list[float]) -> list[float]:
    """What a vector looks like after being stored as float32."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))

"""The Cloudflare Queues REST API, as an HTTP pull consumer and producer uses it.

Only documented endpoints (developers.cloudflare.com/queues, "Pull
consumers" and the API reference):
- POST /accounts/{a}/queues/{q}/messages/pull   lease up to 100 messages
- POST /accounts/{a}/queues/{q}/messages/ack    acks and retries, by lease id
- POST /accounts/{a}/queues/{q}/messages/batch  send up to 100 messages / 256 KB
- GET  /accounts/{a}/queues/{q}/metrics         backlog_count, backlog_bytes and
  oldest_message_timestamp_ms (best effort, "may be approximate")
Every answer is the Cloudflare envelope {"success", "errors", "messages", "result"}.

Trouble in transit (connection errors, 5xx) and 429 rate limiting are
retried here with backoff, honouring `retry-after`, for up to `patience`
seconds; after that the caller gets a ServiceUnavailableError. What a
retried request can do twice: a pull whose answer was lost only hides its
messages until their visibility timeout; an ack is keyed by lease id, so
acking again changes nothing; a send whose answer was lost may store the
messages twice (delivery is at least once anyway: jobs are idempotent).

The API token travels in the Authorization header only and is never part
of an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from typing import Any, Sequence

import httpx

from docutrain_cli.errors import ConfigError, DocutrainError, ServiceUnavailableError

MAX_MESSAGE_BYTES = 128_000  # "128 KB"; Cloudflare's KB is 1000 bytes
MAX_BATCH_BYTES = 256_000
MAX_BATCH_MESSAGES = 100
MAX_PULL_BATCH = 100
MAX_VISIBILITY_SECONDS = 12 * 3600
MAX_DELAY_SECONDS = 12 * 3600
# Messages carry up to ~100 bytes of Cloudflare's metadata that count
# towards the limits; leave room for it.
METADATA_BYTES = 100
REQUEST_TIMEOUT = 30.0
PATIENCE = 60.0  # seconds of retrying transient trouble before giving up


class BadMessage(ValueError):
    """A message whose body docutrain cannot read (it is dead-lettered, not lost)."""


class MessageTooLarge(DocutrainError):
    pass


def encoded_size(body: Any) -> int:
    """Bytes a JSON message counts against the limits."""
    return len(json.dumps(body, separators=(",", ":")).encode("utf-8")) + METADATA_BYTES


def decode_body(message: dict[str, Any]) -> Any:
    """A pulled message's body: `json` and `bytes` arrive base64-encoded,
    `text` as is; `v8` is the Workers runtime's own format, unreadable here."""
    kind = (message.get("metadata") or {}).get("CF-Content-Type", "json")
    body = message.get("body")
    if kind == "v8":
        raise BadMessage("sent with content type v8, which only Workers can read; send json")
    if not isinstance(body, str):
        raise BadMessage(f"body is not a string (content type {kind})")
    if kind in ("json", "bytes"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadMessage(f"{kind} body is not valid base64") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadMessage(f"{kind} body is not JSON") from None
    try:  # text: docutrain's own messages are JSON objects
        return json.loads(body)
    except ValueError:
        raise BadMessage("text body is not JSON") from None


class CloudflareAPI:
    """A small client for one account's queues."""

    def __init__(self, base_url: str, account_id: str, token: str, *,
                 timeout: float = REQUEST_TIMEOUT, patience: float = PATIENCE):
        self.base_url = base_url.rstrip("/")
        self.account_id = account_id
        self.patience = patience
        self._http = httpx.Client(
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    # -- the endpoints -------------------------------------------------------
    def pull(self, queue_id: str, batch_size: int, visibility_seconds: float) -> tuple[list[dict], dict | None]:
        """Lease up to `batch_size` messages; returns (messages, metrics)."""
        result = self._post(queue_id, "pull", {
            "batch_size": max(1, min(batch_size, MAX_PULL_BATCH)),
            "visibility_timeout_ms": int(min(visibility_seconds, MAX_VISIBILITY_SECONDS) * 1000),
        }) or {}
        metrics = (result.get("metadata") or {}).get("metrics")
        if metrics is None and result.get("message_backlog_count") is not None:
            metrics = {"backlog_count": result["message_backlog_count"]}
        return list(result.get("messages") or []), metrics

    def ack(self, queue_id: str, acks: Sequence[str], retries: Sequence[tuple[str, int]]) -> dict:
        """Acknowledge and retry (lease id, delay seconds) in one request."""
        return self._post(queue_id, "ack", {
            "acks": [{"lease_id": lease} for lease in acks],
            "retries": [
                {"lease_id": lease, "delay_seconds": max(0, min(int(delay), MAX_DELAY_SECONDS))}
                for lease, delay in retries
            ],
        }) or {}

    def send(self, queue_id: str, bodies: Sequence[Any], delays: Sequence[float] | None = None) -> dict | None:
        """Send JSON bodies in as few batch requests as the limits allow.
        Refuses the whole lot, before sending any, if one is over 128 KB.
        Returns the queue's metrics from the last answer."""
        sizes = [encoded_size(body) for body in bodies]
        for i, size in enumerate(sizes):
            if size > MAX_MESSAGE_BYTES:
                raise MessageTooLarge(
                    f"a message of {size:,} bytes is over Cloudflare Queues' limit of "
                    f"{MAX_MESSAGE_BYTES:,} bytes (message {i + 1} of {len(bodies)})"
                )
        metrics = None
        batch: list[dict] = []
        batch_bytes = 0
        for i, body in enumerate(bodies):
            if batch and (len(batch) == MAX_BATCH_MESSAGES or batch_bytes + sizes[i] > MAX_BATCH_BYTES):
                metrics = self._send_batch(queue_id, batch)
                batch, batch_bytes = [], 0
            item: dict[str, Any] = {"body": body, "content_type": "json"}
            if delays and delays[i] > 0:
                item["delay_seconds"] = min(math.ceil(delays[i]), MAX_DELAY_SECONDS)
            batch.append(item)
            batch_bytes += sizes[i]
        if batch:
            metrics = self._send_batch(queue_id, batch)
        return metrics

    def metrics(self, queue_id: str) -> dict:
        """The queue's backlog: {"backlog_count", "backlog_bytes",
        "oldest_message_timestamp_ms"} (the API gives numbers as floats; counts
        come back as ints, an oldest timestamp of 0 as None)."""
        result = self._call("GET", queue_id, "metrics", None) or {}
        return {
            "backlog_count": _whole(result.get("backlog_count")),
            "backlog_bytes": _whole(result.get("backlog_bytes")),
            "oldest_message_timestamp_ms": _whole(result.get("oldest_message_timestamp_ms")) or None,
        }

    def _send_batch(self, queue_id: str, items: list[dict]) -> dict | None:
        result = self._post(queue_id, "batch", {"messages": items}) or {}
        return (result.get("metadata") or {}).get("metrics")

    # -- the envelope, retries and errors -----------------------------------
    def _post(self, queue_id: str, action: str, payload: dict) -> Any:
        return self._call("POST", queue_id, f"messages/{action}", payload)

    def _call(self, method: str, queue_id: str, tail: str, payload: dict | None) -> Any:
        url = f"{self.base_url}/accounts/{self.account_id}/queues/{queue_id}/{tail}"
        what = f"Cloudflare Queues ({tail.rsplit('/', 1)[-1]} on queue {queue_id})"
        deadline = time.monotonic() + self.patience
        delay = 0.25
        while True:
            limited = False
            try:
                response = self._http.request(method, url, json=payload)
            except httpx.TransportError as exc:
                problem, wait = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, delay
            else:
                if response.status_code == 429:
                    limited, problem, wait = True, "rate limited (429)", _retry_after(response, delay)
                elif response.status_code >= 500:
                    problem, wait = f"server error {response.status_code}", delay
                else:
                    return _result(response, what, queue_id, self.account_id)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceUnavailableError(f"{what}: {problem}; gave up after {self.patience:g} s")
            if limited and wait > left:  # asking sooner only fails again
                raise ServiceUnavailableError(
                    f"{what}: {problem}, retry after {wait:g} s: longer than the {self.patience:g} s we wait"
                )
            time.sleep(min(wait, left))
            delay = min(delay * 2, 8.0)


def _whole(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _retry_after(response: httpx.Response, fallback: float) -> float:
    try:
        return max(float(response.headers.get("retry-after", "")), 0.1)
    except ValueError:
        return fallback


def _result(response: httpx.Response, what: str, queue_id: str, account_id: str) -> Any:
    try:
        envelope = response.json()
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict):
        raise ServiceUnavailableError(f"{what}: HTTP {response.status_code} with a body that is not the API's JSON")
    errors = envelope.get("errors") or []
    if response.is_success and envelope.get("success") is not False:
        return envelope.get("result")
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    detail = f"HTTP {response.status_code}, code {first.get('code', '?')}: {first.get('message', 'no message')}"
    if response.status_code in (401, 403):
        raise ConfigError(
            f"{what}: the API token was refused ({detail}); CLOUDFLARE_API_TOKEN needs "
            "Queues Read and Queues Edit on the account"
        )
    if first.get("code") == 10104 or response.status_code == 404:
        raise ConfigError(f"{what}: no queue {queue_id} in account {account_id} ({detail})")
    raise DocutrainError(f"{what}: refused ({detail})")

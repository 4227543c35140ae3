"""Status webhooks: every document status change POSTed to the app, signed.

With `status_webhook_url` set, each change (`processing`, `ready`, `error`)
of a job that has a document id goes through an outbox of its own
(`<store>.webhooks`, the same Outbox class as the Supabase sync, with this
module's WebhookDelivery as its Delivery), so it has
the same guarantees: committed before anything is sent, nothing lost while
the app is down, the newest change per document only and never an older one
after a newer one, retried with backoff, backlog in `docutrain status`.

The request: `POST <status_webhook_url>` with a JSON body (`payload`) and
`X-Docutrain-Signature: t=<unix seconds>,v1=<hex>`, where hex is
HMAC-SHA256(status_webhook_secret, "<t>.<body>"), as Stripe signs its
webhooks: the app recomputes it over the raw body, compares in constant
time, and rejects an old `t` (a replay). `verify_signature` does that.

The app's answer decides: 2xx delivered; 404 or 410 (the app does not know
the document) dropped; 408, 425, 429 and 5xx or no answer retried with
backoff; any other 4xx set aside and retried slowly (fix the app, and it is
delivered).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

from docutrain_cli.config import Settings
from docutrain_cli.errors import PermanentError, TransientError
from docutrain_cli.status.outbox import StatusChange

SIGNATURE_HEADER = "X-Docutrain-Signature"
EVENT = "document.status"
TOLERANCE_SECONDS = 300
RETRY_STATUSES = {408, 425, 429}
GONE_STATUSES = {404, 410}


def payload(change: StatusChange) -> dict[str, Any]:
    """The JSON body for one status change. `at` is when the change happened:
    an app that may see retried calls keeps the newest `at` per document."""
    return {
        "event": EVENT,
        "user_document_id": change.document_id,
        "status": change.status,
        "error_message": change.error_message if change.status == "error" else None,
        "page_count": change.page_count,
        "chunk_count": change.chunk_count,
        "at": dt.datetime.fromtimestamp(change.at, dt.timezone.utc).isoformat(),
    }


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, *, tolerance: float = TOLERANCE_SECONDS,
                     now: float | None = None) -> bool:
    """What the receiving app does: True if `header` signs `body` with
    `secret` and its timestamp is within `tolerance` seconds of now."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    # Bytes: compare_digest raises TypeError on a non-ASCII str, and the
    # header is whatever the sender put there.
    return hmac.compare_digest(expected.encode(), fields.get("v1", "").encode("utf-8", "replace"))


def describe_url(url: str) -> str:
    """scheme://host[:port]/path without a query string or credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class WebhookDelivery:
    """The outbox's Delivery to the app (see outbox.Delivery)."""

    def __init__(self, settings: Settings, *, timeout: float = 5.0):
        if not settings.status_webhook_url or not settings.status_webhook_secret:
            raise PermanentError("status webhooks need status_webhook_url and status_webhook_secret")
        self.url = settings.status_webhook_url
        self.secret = settings.status_webhook_secret
        self.destination = f"status webhook {describe_url(self.url)}"
        self.timeout = timeout
        self._client = None

    @property
    def client(self):
        if self._client is None:  # made in the process that sends
            import httpx

            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
        return self._client

    def deliver(self, change: StatusChange) -> bool:
        import httpx

        body = json.dumps(payload(change), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "docutrain",
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
        }
        try:
            answer = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:  # refused, reset, timed out, DNS
            raise TransientError(f"{self.destination}: {type(exc).__name__}: {exc}") from None
        status = answer.status_code
        if 200 <= status < 300:
            return True
        if status in GONE_STATUSES:
            return False
        if status in RETRY_STATUSES or status >= 500:
            raise TransientError(f"{self.destination}: answered {status}")
        raise PermanentError(f"{self.destination}: answered {status}: {answer.text[:200]}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

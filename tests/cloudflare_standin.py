"""A local stand-in for Cloudflare Queues' REST API (producer and HTTP pull
consumer), a real HTTP server on 127.0.0.1 port 0, for the tests.

Faithful to the documented behaviour (developers.cloudflare.com/queues:
"Pull consumers", "Limits", "Error codes"; the API reference for
messages/pull, /ack, /messages, /messages/batch):
- the envelope {"success", "errors": [{"code", "message"}], "messages", "result"};
  auth by `Authorization: Bearer <token>` (403, code 10000 otherwise); an
  account can have several tokens (`add_token`), and the stand-in notes
  which one took each lease, so a test can tell its machines' leases apart;
- pull: `batch_size` 1-100 (default 5), `visibility_timeout_ms` up to 12 h
  (default 30 s; the older name `visibility_timeout` is accepted too); each
  delivery increments `attempts`; a lease that lapses makes the message
  visible again; `json` and `bytes` bodies arrive base64-encoded, `text` as is;
  the answer carries `message_backlog_count` and `metadata.metrics`;
- ack: `acks` delete, `retries` put back after `delay_seconds`; late acks are
  accepted (permissive lease ids); a message whose `attempts` reached the
  consumer's `max_retries` when it fails again goes to the dead-letter queue
  (or is dropped when there is none);
- send: 128 KB per message, 100 messages and 256 KB per batch (1 KB = 1000 bytes),
  `delay_seconds` up to 12 h; the answer carries `metadata.metrics`;
- GET /accounts/{a}/queues/{q}/metrics ("Get Queue Metrics"): `backlog_count`,
  `backlog_bytes` and `oldest_message_timestamp_ms` of the unacknowledged
  messages (leased ones included), numbers as the API's floats, 0 for the
  timestamp of an empty queue; any other method is refused;
- 429 with `retry-after` and the `Ratelimit` headers when switched on.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import socket
import threading
import time
from typing import Any

from standin_server import Listener, QuietHandler

MAX_MESSAGE_BYTES = 128_000
MAX_BATCH_BYTES = 256_000
MAX_BATCH_MESSAGES = 100
MAX_PULL_BATCH = 100
MAX_VISIBILITY_MS = 12 * 3600 * 1000
MAX_DELAY_SECONDS = 12 * 3600
METADATA_BYTES = 100  # "up to ~100 bytes of internal metadata" count towards the limits


@dataclasses.dataclass
class Message:
    id: str
    content_type: str
    data: bytes  # the body as published (json: its JSON text)
    timestamp_ms: int
    attempts: int = 0
    visible_at: float = 0.0
    lease_id: str | None = None
    lease_expires: float = 0.0
    leased_by: str | None = None  # the API token of the pull that holds the lease

    @property
    def size(self) -> int:
        return len(self.data) + METADATA_BYTES

    def wire(self) -> dict[str, Any]:
        if self.content_type == "text":
            body = self.data.decode("utf-8")
        else:  # json, bytes: base64 so they fit in the JSON answer
            body = base64.b64encode(self.data).decode("ascii")
        return {
            "id": self.id,
            "body": body,
            "timestamp_ms": self.timestamp_ms,
            "attempts": self.attempts,
            "lease_id": self.lease_id,
            "metadata": {"CF-sourceMessageSource": "api", "CF-Content-Type": self.content_type},
        }


@dataclasses.dataclass
class Queue:
    id: str
    max_retries: int = 3
    dead_letter_queue: str | None = None
    retry_delay: float = 0.0
    messages: list[Message] = dataclasses.field(default_factory=list)
    dead_dropped: int = 0  # failed for good with no dead-letter queue


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class CloudflareStandin:
    def __init__(self, account_id: str = "acc0123456789abcdef0123456789abc", token: str = "test-token"):
        self.account_id = account_id
        self.token = token
        self.tokens = {token}
        self.queues: dict[str, Queue] = {}
        self.lock = threading.RLock()
        self.leases: dict[str, tuple[str, str]] = {}  # every lease id ever given -> (queue, message id)
        self.requests: list[tuple[str, str]] = []  # (path tail, outcome) log
        self.acked: list[str] = []  # message ids deleted by an ack, in order
        self.ack_log: list[tuple[Any, int]] = []  # (decoded body, attempts) of each, in order
        self._limited = 0  # answer this many next requests with 429
        self._retry_after = 1
        self._drop: dict[str, int] = {}  # path tail -> answers to lose after doing the work
        self._listener = Listener(self._handler())

    # -- set-up and inspection (in the test process) ----------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.port}/client/v4"

    def start(self) -> "CloudflareStandin":
        self._listener.up()
        return self

    def stop(self) -> None:
        self._listener.down()

    def create_queue(self, queue_id: str, *, max_retries: int = 3, dead_letter_queue: str | None = None,
                     retry_delay: float = 0.0) -> Queue:
        with self.lock:
            self.queues[queue_id] = Queue(queue_id, max_retries, dead_letter_queue, retry_delay)
            return self.queues[queue_id]

    def rate_limit(self, requests: int, retry_after: int = 1) -> None:
        """Answer the next `requests` requests with 429 Too Many Requests."""
        with self.lock:
            self._limited, self._retry_after = requests, retry_after

    def lose_answer(self, tail: str, times: int = 1) -> None:
        """Do the work of the next `times` requests to `.../messages/<tail>`
        ('pull', 'ack', 'batch', or '' for a single send) but drop the
        connection instead of answering: a network error after the fact."""
        with self.lock:
            self._drop[tail] = times

    def bodies(self, queue_id: str) -> list[Any]:
        """Every message in a queue (leased or not), decoded, oldest first."""
        with self.lock:
            self._expire(self.queues[queue_id], time.time())
            return [_decode(m) for m in self.queues[queue_id].messages]

    def backlog(self, queue_id: str) -> int:
        with self.lock:
            self._expire(self.queues[queue_id], time.time())
            return len(self.queues[queue_id].messages)

    def add_token(self, token: str) -> None:
        """Another API token of the account (one per machine, say)."""
        with self.lock:
            self.tokens.add(token)

    def leased(self, queue_id: str, by: str | None = None) -> list[Any]:
        """Decoded bodies of the messages someone (the holder of token `by`) holds a live lease on."""
        now = time.time()
        with self.lock:
            queue = self.queues[queue_id]
            self._expire(queue, now)
            return [
                _decode(m) for m in queue.messages
                if m.lease_id and m.lease_expires > now and (by is None or m.leased_by == by)
            ]

    # -- the behaviour -----------------------------------------------------
    def _queue(self, account: str, queue_id: str) -> Queue:
        if account != self.account_id or queue_id not in self.queues:
            raise ApiError(404, 10104, "Queue does not exist")
        return self.queues[queue_id]

    def _expire(self, queue: Queue, now: float) -> None:
        """Lapsed leases: the delivery failed; the message is visible again
        or, its retries used up, dead-lettered."""
        for message in list(queue.messages):
            if message.lease_id and message.lease_expires <= now:
                message.lease_id = None
                self._failed(queue, message, now, queue.retry_delay)

    def _failed(self, queue: Queue, message: Message, now: float, delay: float) -> None:
        if message.attempts >= queue.max_retries:
            queue.messages.remove(message)
            target = self.queues.get(queue.dead_letter_queue or "")
            if target is None:
                queue.dead_dropped += 1
            else:
                target.messages.append(
                    Message(secrets.token_hex(16), message.content_type, message.data, int(now * 1000))
                )
        else:
            message.visible_at = now + delay

    def _metrics(self, queue: Queue) -> dict[str, Any]:
        oldest = min((m.timestamp_ms for m in queue.messages), default=0)
        return {
            "backlog_count": len(queue.messages),
            "backlog_bytes": sum(m.size for m in queue.messages),
            "oldest_message_timestamp_ms": oldest,
        }

    def pull(self, queue: Queue, request: dict, token: str | None = None) -> dict:
        batch_size = request.get("batch_size", 5)
        visibility = request.get("visibility_timeout_ms", request.get("visibility_timeout", 30_000))
        if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_PULL_BATCH:
            raise ApiError(400, 10207, "batch_size must be between 1 and 100")
        if not isinstance(visibility, (int, float)) or not 0 < visibility <= MAX_VISIBILITY_MS:
            raise ApiError(400, 10207, "visibility_timeout_ms must be between 1 and 43200000")
        now = time.time()
        self._expire(queue, now)
        taken = []
        for message in queue.messages:
            if len(taken) == batch_size:
                break
            if message.lease_id is None and message.visible_at <= now:
                message.attempts += 1
                message.lease_id = secrets.token_urlsafe(24)
                message.lease_expires = now + visibility / 1000
                message.leased_by = token
                self.leases[message.lease_id] = (queue.id, message.id)
                taken.append(message.wire())
        return {
            "message_backlog_count": len(queue.messages),
            "messages": taken,
            "metadata": {"metrics": self._metrics(queue)},
        }

    def ack(self, queue: Queue, request: dict) -> dict:
        acks, retries = request.get("acks") or [], request.get("retries") or []
        if not isinstance(acks, list) or not isinstance(retries, list):
            raise ApiError(400, 10207, "acks and retries must be arrays")
        now = time.time()
        self._expire(queue, now)
        by_id = {m.id: m for m in queue.messages}
        warnings, acked, retried = [], 0, 0
        for item in acks:
            message = self._leased_message(queue, by_id, item)
            if message is None:
                warnings.append(f"lease {str(item.get('lease_id'))[:8]}…: message already gone")
                continue
            queue.messages.remove(message)
            del by_id[message.id]
            self.acked.append(message.id)
            self.ack_log.append((_decode(message), message.attempts))
            acked += 1
        for item in retries:
            message = self._leased_message(queue, by_id, item)
            delay = item.get("delay_seconds", queue.retry_delay)
            if not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_DELAY_SECONDS:
                raise ApiError(400, 10203, "Invalid message metadata (delay_seconds)")
            # Only the current holder's retry counts: a retry with a lapsed
            # lease of a message someone else holds now would steal it.
            if message is None or message.lease_id != item.get("lease_id"):
                warnings.append(f"lease {str(item.get('lease_id'))[:8]}…: not held")
                continue
            message.lease_id = None
            self._failed(queue, message, now, delay)
            retried += 1
        return {"ackCount": acked, "retryCount": retried, "warnings": warnings}

    def _leased_message(self, queue: Queue, by_id: dict, item: Any) -> Message | None:
        lease_id = item.get("lease_id") if isinstance(item, dict) else None
        where = self.leases.get(lease_id or "")
        if where is None or where[0] != queue.id:
            return None
        return by_id.get(where[1])

    def send(self, queue: Queue, items: list, delay_default: Any) -> dict:
        if len(items) > MAX_BATCH_MESSAGES:
            raise ApiError(400, 10206, "Batch count out of bounds")
        now = time.time()
        made, total = [], 0
        for item in items:
            if not isinstance(item, dict) or "body" not in item:
                raise ApiError(400, 10207, "JSON body does not match the expected schema")
            content_type = item.get("content_type", "json")
            delay = item.get("delay_seconds", delay_default or 0)
            if content_type not in ("json", "text") or not isinstance(delay, (int, float)) \
                    or not 0 <= delay <= MAX_DELAY_SECONDS:
                raise ApiError(400, 10203, "Invalid message metadata (includes invalid content type and invalid delay)")
            if content_type == "text":
                if not isinstance(item["body"], str):
                    raise ApiError(400, 10207, "a text message body must be a string")
                data = item["body"].encode("utf-8")
            else:
                data = json.dumps(item["body"], separators=(",", ":")).encode("utf-8")
            message = Message(secrets.token_hex(16), content_type, data, int(now * 1000), visible_at=now + delay)
            if message.size > MAX_MESSAGE_BYTES:
                raise ApiError(400, 10204, "Message size out of bounds")
            total += message.size
            made.append(message)
        if total > MAX_BATCH_BYTES:
            raise ApiError(400, 10205, "Batch size out of bounds")
        queue.messages.extend(made)
        return {"metadata": {"metrics": self._metrics(queue)}}

    def handle(self, method: str, path: str, headers, raw: bytes) -> tuple[int, dict, dict]:
        """(status, extra headers, JSON answer) for one request."""
        parts = path.split("?", 1)[0].strip("/").split("/")
        # client/v4/accounts/<a>/queues/<q>/messages[/<action>] or .../<q>/metrics
        if len(parts) < 7 or parts[:3] != ["client", "v4", "accounts"] or parts[4] != "queues" \
                or parts[6] not in ("messages", "metrics") or len(parts) > (8 if parts[6] == "messages" else 7):
            raise ApiError(404, 7003, "No route for the URI")
        if method != ("GET" if parts[6] == "metrics" else "POST"):
            raise ApiError(405, 7001, "Method not allowed for this route")
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer" or token not in self.tokens:
            raise ApiError(403, 10000, "Authentication error")
        if parts[6] == "metrics":
            with self.lock:
                queue = self._queue(parts[3], parts[5])
                self._expire(queue, time.time())
                return 200, {}, {k: float(v) for k, v in self._metrics(queue).items()}
        action = parts[7] if len(parts) == 8 else ""
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(400, 10208, "API Gateway request body is not valid JSON") from None
        if not isinstance(request, dict):
            raise ApiError(400, 10207, "JSON body does not match the expected schema")
        with self.lock:
            queue = self._queue(parts[3], parts[5])
            if action == "pull":
                return 200, {}, self.pull(queue, request, token)
            if action == "ack":
                return 200, {}, self.ack(queue, request)
            if action == "batch":
                items = request.get("messages", [])
                if not isinstance(items, list):
                    raise ApiError(400, 10207, "messages must be an array")
                return 200, {}, self.send(queue, items, request.get("delay_seconds"))
            if action == "":
                return 200, {}, self.send(queue, [request], None)
        raise ApiError(404, 7003, "No route for the URI")

    def _handler(self):
        standin = self

        class Handler(QuietHandler):
            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def _serve(self, method: str) -> None:
                raw = self.read_body()
                path = self.path.split("?", 1)[0].rstrip("/")
                tail = "metrics" if path.endswith("/metrics") else path.rsplit("/messages", 1)[-1].lstrip("/")
                with standin.lock:
                    limited = standin._limited > 0
                    if limited:
                        standin._limited -= 1
                extra: dict[str, str] = {"Ratelimit": '"default";r=1000;t=300',
                                         "Ratelimit-Policy": '"default";q=1200;w=300'}
                if limited:
                    status, answer = 429, _envelope(
                        None, [{"code": 971, "message": "Please wait and consider throttling your request speed"}]
                    )
                    extra = {"Retry-After": str(standin._retry_after), "Ratelimit": '"default";r=0;t=1',
                             "Ratelimit-Policy": '"default";q=1200;w=300'}
                else:
                    try:
                        status, more, result = standin.handle(method, self.path, self.headers, raw)
                        extra.update(more)
                        answer = _envelope(result)
                    except ApiError as exc:
                        status, answer = exc.status, _envelope(None, [{"code": exc.code, "message": exc.message}])
                with standin.lock:
                    standin.requests.append((tail, str(status)))
                    drop = standin._drop.get(tail, 0) > 0 and status == 200
                    if drop:
                        standin._drop[tail] -= 1
                if drop:  # the work is done; the answer is lost on the way
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_json(status, answer, extra)

        return Handler


def _envelope(result: Any, errors: list | None = None) -> dict:
    return {"success": not errors, "errors": errors or [], "messages": [], "result": result}


def _decode(message: Message) -> Any:
    text = message.data.decode("utf-8")
    return json.loads(text) if message.content_type == "json" else text

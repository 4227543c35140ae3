"""What docutrain's messages on a Cloudflare queue hold, and how a pulled
message becomes a Job.

Three kinds of body arrive:
- a docutrain job: `Job.payload()` plus `job_id`; its `attempts` are the
  attempts spent before this message was sent (0 when enqueued, one fewer
  than used when a runner gave the job back); the runner adds the message's
  own delivery count. In the dead-letter queue, bodies written by docutrain
  carry `"dead": true` and the attempts used in all.
- an /enqueue request from the edge Worker (cloudflare/intake.js):
  `{job_id, user_document_id, user_id, storage_path}`; the file is
  `supabase://<storage_bucket>/<storage_path>`. In the dead-letter queue the
  Worker's push consumer adds `"dead": true`, `attempts` and `errors` (why
  `docutrain serve` refused it).
- anything else is unreadable (BadMessage): it is dead-lettered with the
  reason and what it held (`unreadable_body`), never dropped.

Job ids are numbers that grow with time (milliseconds * 1000 + a counter);
the edge Worker makes them the same way. A message without one gets one
from its publish time and Cloudflare's message id.
"""

from __future__ import annotations

import random
import time
from typing import Any

from docutrain_cli.jobs import Job, JobState
from docutrain_cli.queues.cloudflare_api import BadMessage

UNKNOWN_DEATH = ("Cloudflare moved it to the dead-letter queue after max_retries deliveries "
                 "without an answer (its runners died or hung on it)")
RAW_BODY_KEPT = 60_000  # characters of an unreadable body kept in its dead-letter record

_last_id = 0


def new_job_ids(count: int) -> list[int]:
    """Ids for new jobs: unique and growing within a process; two producers
    in one millisecond collide with odds of about 1 in 1000, which only makes
    a lookup by id ambiguous."""
    global _last_id
    base = int(time.time() * 1000) * 1000 + random.randrange(1000)
    ids = []
    for _ in range(count):
        _last_id = max(_last_id + 1, base)
        ids.append(_last_id)
    return ids


def message_job_id(message: dict) -> int:
    """An id for a message that came without one (a hand-made message)."""
    tail = int((message.get("id") or "0")[-6:] or "0", 16) % 1000
    return int(message.get("timestamp_ms") or time.time() * 1000) * 1000 + tail


def job_from_message(body: Any, message: dict, state: JobState, storage_bucket: str) -> Job:
    """The job a decoded body describes; BadMessage if it describes none."""
    if not isinstance(body, dict):
        raise BadMessage("body is not a JSON object")
    job_id = body.get("job_id")
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        job_id = message_job_id(message)
    if isinstance(body.get("source"), str) and body["source"]:
        job = Job.from_payload(job_id, state, body)
        job.attempts = int(body.get("attempts") or 0)
        return job
    if body.get("user_document_id"):  # an /enqueue request from the edge Worker
        path = body.get("storage_path")
        if not isinstance(path, str) or not path.strip():
            raise BadMessage(
                f"document {body['user_document_id']}: the request has no storage_path; send it to "
                "/enqueue, or queue pending documents with `docutrain enqueue --from-supabase`"
            )
        from docutrain_cli.errors import PermanentError
        from docutrain_cli.supabase.storage import make_source

        try:
            source = make_source(storage_bucket, path.strip())
        except PermanentError as exc:
            raise BadMessage(f"document {body['user_document_id']}: {exc}") from None
        errors, attempts = body.get("errors"), body.get("attempts")
        return Job(
            id=job_id, state=state, source=source,
            document_id=str(body["user_document_id"]),
            user_id=None if body.get("user_id") is None else str(body["user_id"]),
            enqueued_at=int(message.get("timestamp_ms") or 0) / 1000 or time.time(),
            attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0,
            errors=[str(e) for e in errors] if isinstance(errors, list) else [],
        )
    raise BadMessage("neither a docutrain job nor an /enqueue request (no source, no user_document_id)")


def dead_body(job: Job) -> dict:
    """A dead job as docutrain writes it to the dead-letter queue."""
    return {**job.payload(), "job_id": job.id, "dead": True}


def unreadable_body(message: dict, reason: str) -> dict:
    """The dead-letter record of a message no job could be made of."""
    raw = message.get("body")
    raw = raw if isinstance(raw, str) else repr(raw)
    return {
        "job_id": message_job_id(message), "source": f"cloudflare message {message.get('id')}", "dead": True,
        "errors": [f"unreadable message: {reason}"], "attempts": int(message.get("attempts") or 1),
        "finished_at": time.time(), "raw_body": raw[:RAW_BODY_KEPT],
        "content_type": (message.get("metadata") or {}).get("CF-Content-Type"),
    }

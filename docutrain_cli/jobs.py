"""The job record, its states and transitions, its result, and the retry schedule.

A job is plain data: it is pickled to worker processes and stored as JSON in
the queue, so it holds only str/int/float/list/dict values (its JobResult
is stored as a dict, see `JobResult.to_dict`).

Every change of state is a method on `Job` (`leased`, `completed`, `failed`,
`buried`, `released`, `revived`): the queue backends call one and then only
persist what it wrote.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import random
import time
from typing import Any

MAX_ERROR_HISTORY = 10
# A job's times: epoch seconds inside (queues, workers), ISO 8601 in JSON.
TIME_FIELDS = ("not_before", "enqueued_at", "queued_at", "started_at", "finished_at")


def iso_time(epoch: float | None) -> str | None:
    """Epoch seconds as JSON shows times: ISO 8601 in UTC with its offset
    (`2026-12-03T04:59:16.123+00:00`), as Supabase rows have them; None
    (and 0, "never") stay None."""
    if not epoch:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds")


class JobState(str, enum.Enum):
    QUEUED = "queued"  # waiting for a worker
    RUNNING = "running"  # leased by a runner
    RETRYING = "retrying"  # failed, waiting for its next attempt
    DONE = "done"
    DEAD = "dead"  # failed for good; `docutrain retry` brings it back

    def __str__(self) -> str:
        return self.value

    @classmethod
    def waiting(cls, attempts: int) -> "JobState":
        """A job waiting for a runner: queued if it never started an attempt,
        else retrying. (The SQL backends write this rule as a CASE.)"""
        return cls.QUEUED if attempts == 0 else cls.RETRYING


STATES = [s.value for s in JobState]

# Who is served first (queues/fair.py): a higher priority goes first, and
# within one the users share by tokens. Index 0 is the highest.
PRIORITIES = ("high", "normal", "low")


@dataclasses.dataclass
class Job:
    id: int
    source: str  # a local path, or supabase://bucket/path
    sha256: str | None = None
    user_id: str | None = None
    document_id: str | None = None
    metadata: dict[str, Any] | None = None  # the caller's, kept as given (HTTP intake)
    priority: str = "normal"  # one of PRIORITIES; its default depends on where the job came from
    # Written by the lease order at enqueue (queues/order.py): the estimated
    # embedding tokens, and the virtual start it is leased by (fair share).
    cost: int | None = None
    vstart: float | None = None
    attempts: int = 0  # attempts started so far, this one included
    not_before: float = 0.0  # epoch seconds; a retry waits until then
    errors: list[str] = dataclasses.field(default_factory=list)
    enqueued_at: float = dataclasses.field(default_factory=time.time)
    queued_at: float | None = None  # when `retry` last put it back (None: never); status ages count from it
    started_at: float | None = None
    finished_at: float | None = None
    state: JobState = JobState.QUEUED
    result: "JobResult | None" = None

    @property
    def last_error(self) -> str | None:
        return self.errors[-1] if self.errors else None

    @property
    def document_key(self) -> str:
        """What identifies the document in the output: one set of chunks per key."""
        return self.document_id or self.source

    def payload(self) -> dict[str, Any]:
        """The JSON-able part a queue stores (id and state are the queue's)."""
        # Not dataclasses.asdict: its deep copy is a measurable cost per job
        # in the dispatcher. Values are plain JSON types; copy the containers.
        data = {name: getattr(self, name) for name in _PAYLOAD_FIELDS}
        data["errors"] = list(self.errors)
        data["result"] = self.result.to_dict() if self.result is not None else None
        return data

    @classmethod
    def from_payload(cls, job_id: int, state: JobState, data: dict[str, Any]) -> "Job":
        fields = {k: v for k, v in data.items() if k in _PAYLOAD_NAMES}
        if fields.get("result") is not None:
            fields["result"] = JobResult.from_dict(fields["result"])
        return cls(id=job_id, state=state, **fields)

    def record_error(self, message: str) -> None:
        self.errors = (self.errors + [message])[-MAX_ERROR_HISTORY:]

    # -- transitions: the only code that moves a job between states ---------
    def leased(self, now: float, attempts: int | None = None) -> None:
        """A runner took it: running, from `now`, one attempt more. A backend
        that counts deliveries itself (pgmq's read_ct, Cloudflare's delivery
        count) passes the attempts it counted instead."""
        self.state = JobState.RUNNING
        self.attempts = self.attempts + 1 if attempts is None else attempts
        self.started_at = now

    def completed(self, now: float) -> None:
        """Done; the runner may have set `finished_at` already (it is kept)."""
        self.state = JobState.DONE
        self.finished_at = self.finished_at or now

    def failed(self, error: str, not_before: float) -> None:
        """This attempt failed: retrying, no earlier than `not_before`."""
        self.record_error(error)
        self.not_before = not_before
        self.state = JobState.RETRYING

    def buried(self, error: str, now: float) -> None:
        """Failed for good: dead until someone revives it."""
        self.record_error(error)
        self.state = JobState.DEAD
        self.finished_at = now

    def released(self, not_before: float | None = None) -> None:
        """Given back unfinished: the attempt it was leased for is not
        counted; it waits until `not_before` when given."""
        self.attempts = max(self.attempts - 1, 0)
        self.started_at = None
        if not_before is not None:
            self.not_before = not_before
        self.state = JobState.waiting(self.attempts)

    def revived(self, now: float) -> None:
        """A dead job back in the queue with fresh attempts; its queued age
        counts from `now`."""
        self.attempts, self.not_before, self.finished_at, self.started_at = 0, 0.0, None, None
        self.queued_at = now
        self.state = JobState.QUEUED

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON shows it (`jobs --json`, serve's /v1/jobs): times
        in ISO 8601 (see iso_time); the queue stores `payload()` instead."""
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        data["result"] = self.result.to_dict() if self.result is not None else None
        data.update({name: iso_time(data[name]) for name in TIME_FIELDS})
        return data


@dataclasses.dataclass
class JobResult:
    """What a processor returns for a finished job; the runner sums these.

    Every field has a default, so a processor fills what it knows and a new
    field (e.g. seconds waited for a rate budget) is one line here plus the
    runner's sum if it should be summed.
    """

    pages: int = 0
    chunks: int = 0
    tokens_embedded: int = 0
    tokens_cached: int = 0  # tokens whose vectors came from the embedding cache
    embedder: str | None = None  # "openai" | "offline"
    model: str | None = None  # the embedding model
    dimensions: int | None = None
    cost_usd: float | None = None  # at list price; None when the model has no known price
    rate_limited: int = 0  # 429 answers the embedding API gave this job (waits, never failures)
    rate_wait_seconds: float = 0.0  # time spent waiting for the shared rate budget or after a 429
    document_id: int | None = None  # the local store's row id
    document_key: str | None = None
    sha256: str | None = None  # of the file's bytes
    # Page numbers whose text is not stored: damaged, or OCR output Tesseract rated unreadable.
    unreadable_pages: list[int] = dataclasses.field(default_factory=list)
    seconds: float | None = None  # wall time in the worker
    ocr_pages: int = 0  # scanned pages read by OCR
    ocr_seconds: float = 0.0  # of `seconds`, the time OCR took
    ocr_skipped_pages: int = 0  # scanned pages left unread: OCR off or not installed
    # Batch API mode: distinct texts parked for a batch (the document waits
    # in status 'embedding'), and their tokens; 0 when it is ready now.
    batch_texts: int = 0
    batch_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the queue record and `--json` output."""
        data = {name: getattr(self, name) for name in _RESULT_FIELDS}  # per job: no dataclasses.fields()
        data["unreadable_pages"] = list(self.unreadable_pages)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobResult":
        """Also reads the untyped dicts older versions stored (their
        `embedding_model` / `embedding_dimensions` keys); unknown keys are ignored."""
        data = dict(data)
        for old, new in _OLD_RESULT_KEYS.items():
            if old in data and new not in data:
                data[new] = data.pop(old)
        return cls(**{k: v for k, v in data.items() if k in _RESULT_NAMES and v is not None})


_OLD_RESULT_KEYS = {"embedding_model": "model", "embedding_dimensions": "dimensions"}

_PAYLOAD_FIELDS = [f.name for f in dataclasses.fields(Job) if f.name not in ("id", "state")]
_PAYLOAD_NAMES = frozenset(_PAYLOAD_FIELDS)
_RESULT_FIELDS = [f.name for f in dataclasses.fields(JobResult)]
_RESULT_NAMES = frozenset(_RESULT_FIELDS)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (as in the AWS architecture blog):
    attempt n waits a random time in [delay/2, delay], delay = base * 2**(n-1),
    capped at max_delay."""

    max_attempts: int = 5
    base_delay: float = 10.0
    max_delay: float = 600.0

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(attempts - 1, 0))
        return ceiling * (0.5 + 0.5 * (rng or random).random())

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    @classmethod
    def from_settings(cls, settings: Any) -> "RetryPolicy":
        return cls(settings.max_attempts, settings.retry_base_delay, settings.retry_max_delay)

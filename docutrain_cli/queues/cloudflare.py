"""The edge backend: Cloudflare Queues, consumed over HTTP (a pull consumer).

`--queue cloudflare://<account_id>/<queue_id>`, token in CLOUDFLARE_API_TOKEN
(Queues Read and Edit), dead-letter queue id in `cloudflare_dead_queue`.
Several runners on several machines pull from one queue at once; Cloudflare
hands each message to one of them for a visibility timeout, as pgmq does.

How the contract maps onto what Cloudflare offers:
- lease = pull. A lease cannot be extended, so it is sized to outlast a job
  that waits in the pool's backlog and then runs to its timeout
  (`lease_seconds`). A runner that dies leaves its messages to come back
  when that lease lapses, with `attempts` counted by Cloudflare.
- attempts = the body's `attempts` (attempts spent before this message was
  sent) + the message's own `attempts` (its deliveries).
- complete = ack; retry_later = a retry with `delay_seconds`; both are
  buffered and sent together in one ack request (at the next pull, status
  read or close, at 100, or after ACK_DELAY). A failed ack request keeps its
  lease ids for the next one: acks are keyed by lease id, so sending one
  again is harmless, and a lease is in the buffer once.
- bury = send the job with its errors to the dead-letter queue, then ack.
  Cloudflare's own `max_retries` -> dead-letter queue stays as the backstop
  for a job whose runners keep dying before they can answer.
- release = send the job back (its body says it spent one attempt fewer),
  then ack: a retry would cost a delivery.
- retries re-deliver the body as it was sent, so the error history of
  earlier attempts is what this handle saw (kept in memory per job).
What the messages hold is in cloudflare_messages.py, the REST calls in
cloudflare_api.py.

Who is served first: Cloudflare Queues has no ordering control, so the
lease order of queues/order.py cannot be kept. Priority can: with
`cloudflare_high_queue` set, high-priority jobs are sent to that second
queue and every lease pulls from it first. Fair share between users is not
available on this backend (`lease_order` says "priority", or "none" without
a high queue): within a queue, Cloudflare hands messages out in its own order.

What Cloudflare cannot tell, docutrain does not invent: a queue answers with
its backlog (unacknowledged messages: queued, leased and waiting retries
together) and its oldest message, never per state, and acked messages are
gone. So `stats` reports queued/running/retrying/done as unknown (None),
`unfinished` as the backlog, `dead` as the dead-letter queue's backlog.
Only dead jobs can be listed, looked up and revived: reading the dead-letter
queue pulls its messages, and each one read is sent back as a fresh copy
before it is acked, so listing never uses up the dead-letter queue's own
retries (a crash in between leaves a duplicate, never a loss).
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Sequence

from docutrain_cli.config import CLOUDFLARE_PREFIX as PREFIX
from docutrain_cli.errors import ConfigError, DocutrainError, ServiceUnavailableError
from docutrain_cli.jobs import STATES, Job, JobState
from docutrain_cli.queues.base import JobQueue, QueueStats
from docutrain_cli.queues.cloudflare_api import MAX_MESSAGE_BYTES, MAX_PULL_BATCH, MAX_VISIBILITY_SECONDS, \
    BadMessage, CloudflareAPI, MessageTooLarge, decode_body, encoded_size
from docutrain_cli.queues.cloudflare_messages import UNKNOWN_DEATH, dead_body, job_from_message, new_job_ids, \
    unreadable_body

log = logging.getLogger("docutrain.queue")

ACK_DELAY = 1.0  # seconds an ack may wait in the buffer for company
ACK_BATCH = 100
METRICS_FRESH = 2.0  # seconds a pull's metrics stand in for a fresh read
# The dead-letter count changes only when this handle buries or revives (it
# notes those) or another runner buries: an idle runner need not ask often.
# Each read is an API request, and those are limited to 1,200 per 5 minutes.
DEAD_METRICS_FRESH = 30.0
DEAD_SCAN_LIMIT = 10_000  # dead-letter messages read by one listing / lookup / retry
DEAD_LEASE = 300.0  # seconds a scan holds dead-letter messages
LEASE_MARGIN = 10.0
ERROR_MEMORY = 10_000  # jobs whose error history this handle remembers
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def lease_seconds(job_timeout: float) -> float:
    """How long a pull leases its messages. A leased job may wait in the
    pool's backlog for up to one job timeout, then run for up to another."""
    return min(2 * job_timeout + LEASE_MARGIN, MAX_VISIBILITY_SECONDS)


def parse_queue_url(url: str) -> tuple[str, str]:
    """cloudflare://<account_id>/<queue_id> -> (account_id, queue_id)."""
    account, _, queue = url[len(PREFIX):].strip("/").partition("/")
    if not (_ID.match(account) and _ID.match(queue)):
        raise ConfigError(f"queue: expected cloudflare://<account_id>/<queue_id>, got {url!r}")
    return account, queue


class CloudflareQueue(JobQueue):
    kind = "cloudflare"
    exclusive = False  # many runners pull at once; Cloudflare keeps them apart
    listable_states = frozenset({JobState.DEAD})

    def __init__(self, url: str, *, token: str | None, dead_queue: str | None,
                 api_url: str = "https://api.cloudflare.com/client/v4", job_timeout: float = 600.0,
                 storage_bucket: str = "documents", lease: float | None = None,
                 api: CloudflareAPI | None = None, high_queue: str | None = None):
        """`lease` overrides the lease derived from `job_timeout` (seconds);
        `high_queue` is the id of the queue for high-priority jobs."""
        self.account_id, self.queue_id = parse_queue_url(url)
        if not token:
            raise ConfigError(
                "a cloudflare:// queue needs CLOUDFLARE_API_TOKEN (an API token with Queues Read and Edit)"
            )
        if not dead_queue or not _ID.match(dead_queue):
            raise ConfigError(
                "a cloudflare:// queue needs a dead-letter queue: create one (wrangler queues create "
                "docutrain-dead, then wrangler queues consumer http add docutrain-dead) and set "
                "DOCUTRAIN_CLOUDFLARE_DEAD_QUEUE to its id"
            )
        self.dead_queue = dead_queue
        if high_queue is not None and not _ID.match(high_queue):
            raise ConfigError(f"cloudflare_high_queue: expected a queue id, got {high_queue!r}")
        self.high_queue = high_queue
        # pulled in this order: the high-priority queue first
        self.queue_ids = [high_queue, self.queue_id] if high_queue else [self.queue_id]
        self.lease_seconds = min(lease, MAX_VISIBILITY_SECONDS) if lease else lease_seconds(job_timeout)
        self.storage_bucket = storage_bucket
        self.api = api or CloudflareAPI(api_url, self.account_id, token)
        self._leases: dict[int, tuple[str, str]] = {}  # job id -> (queue id, lease id) of what this handle holds
        self._acks: dict[str, str] = {}  # lease ids waiting to be acked (ordered, unique) -> their queue
        self._retries: dict[str, tuple[str, int]] = {}  # lease id -> (its queue, delay seconds)
        self._first_buffered: float | None = None
        self._history: dict[int, list[str]] = {}
        self._metrics: dict[str, tuple[float, dict | None]] = {}  # queue id -> (read at, metrics)

    @classmethod
    def from_settings(cls, settings) -> "CloudflareQueue":
        return cls(
            settings.queue,
            token=settings.cloudflare_api_token,
            dead_queue=settings.cloudflare_dead_queue,
            api_url=settings.cloudflare_api_url,
            job_timeout=settings.job_timeout,
            storage_bucket=settings.storage_bucket,
            high_queue=settings.cloudflare_high_queue,
        )

    def __repr__(self) -> str:
        return f"CloudflareQueue({PREFIX}{self.account_id}/{self.queue_id})"

    # -- producers -------------------------------------------------------
    @property
    def lease_order(self) -> str:
        return "priority" if self.high_queue else "none"

    def queue_for(self, job: Job) -> str:
        """Where a job is sent: the high-priority queue, when there is one, for high jobs."""
        return self.high_queue if self.high_queue and job.priority == "high" else self.queue_id

    def enqueue(self, jobs: Sequence[Job]) -> list[int]:
        """Cloudflare hands messages out in its own order (it has no
        ordering control): only priority is kept, by the queue a job goes to."""
        if not jobs:
            return []
        self.order.tag(jobs, None)
        ids = new_job_ids(len(jobs))
        bodies = [{**job.payload(), "attempts": 0, "job_id": job_id} for job, job_id in zip(jobs, ids)]
        for job, body in zip(jobs, bodies):  # name the file; the client would only count
            if encoded_size(body) > MAX_MESSAGE_BYTES:
                raise MessageTooLarge(
                    f"{job.source}: its job is {encoded_size(body):,} bytes as a message, over Cloudflare "
                    f"Queues' limit of {MAX_MESSAGE_BYTES:,} bytes; nothing was queued"
                )
        for queue_id in self.queue_ids:
            mine = [body for job, body in zip(jobs, bodies) if self.queue_for(job) == queue_id]
            if mine:
                self._note_metrics(queue_id, self.api.send(queue_id, mine))
        return ids

    def active_hashes(self) -> set[str]:
        """Cloudflare cannot list queued messages: no duplicate check is
        possible, so none is claimed (processing is idempotent)."""
        return set()

    def enqueue_unique(self, job: Job) -> tuple[int, bool]:
        """Cloudflare cannot list queued messages, so it cannot tell whether
        the document already has a job: the job is always sent, and a second
        delivery of a document replaces the same chunks (processing is
        idempotent). `docutrain serve` says `created: true` each time."""
        return self.enqueue([job])[0], True

    # -- the runner ------------------------------------------------------
    def recover(self) -> int:
        """Nothing to do, and nothing to count: a dead runner's messages come
        back by themselves when their lease lapses."""
        return 0

    def lease(self, limit: int, now: float) -> list[Job]:
        self.flush()
        leased: list[Job] = []
        for queue_id in self.queue_ids:  # the high-priority queue first
            leased += self._pull(queue_id, limit - len(leased))
        return leased

    def _pull(self, queue_id: str, limit: int) -> list[Job]:
        leased: list[Job] = []
        unreadable: list[tuple[dict, str]] = []
        while len(leased) < limit:
            want = min(limit - len(leased), MAX_PULL_BATCH)
            messages, metrics = self.api.pull(queue_id, want, self.lease_seconds)
            self._note_metrics(queue_id, metrics)
            for message in messages:
                try:
                    job = job_from_message(decode_body(message), message, JobState.RUNNING, self.storage_bucket)
                except BadMessage as exc:
                    unreadable.append((message, str(exc)))
                    continue
                if job.id in self._leases:  # a duplicate of a job in hand: one run is enough
                    self._buffer_ack(queue_id, message["lease_id"])
                    continue
                # The body's attempts were spent before this message was sent;
                # Cloudflare counts this message's deliveries.
                job.leased(time.time(), attempts=job.attempts + int(message.get("attempts") or 1))
                job.errors = self._history.get(job.id, job.errors)
                self._leases[job.id] = (queue_id, message["lease_id"])
                leased.append(job)
            if len(messages) < want:
                break
        if unreadable:
            self._bury_unreadable(queue_id, unreadable)
        return leased

    def extend_lease(self, jobs: Sequence[Job], seconds: float) -> None:
        """Cloudflare has no way to extend a lease (it was sized up front);
        the runner calls this regularly, so send waiting acks."""
        self.flush()

    def complete(self, job: Job) -> None:
        job.completed(time.time())
        self._history.pop(job.id, None)
        lease = self._leases.pop(job.id, None)
        if lease:
            self._buffer_ack(*lease)
        else:
            log.warning("job %s: not leased through this handle; it runs again when its lease lapses", job.id)

    def retry_later(self, job: Job, error: str, not_before: float) -> None:
        job.failed(error, not_before)
        self._remember(job)
        lease = self._leases.pop(job.id, None)
        if lease:
            queue_id, lease_id = lease
            self._retries[lease_id] = (queue_id, math.ceil(max(not_before - time.time(), 0)))
            self._buffered()

    def bury(self, job: Job, error: str) -> None:
        job.buried(error, time.time())
        self._history.pop(job.id, None)
        lease = self._leases.pop(job.id, None)
        # Sent first, acked after: a crash in between leaves the job to be
        # buried again (a duplicate dead record), never lost.
        self._note_metrics(self.dead_queue, self.api.send(self.dead_queue, [dead_body(job)]))
        if lease:
            self._buffer_ack(*lease)

    def release(self, job: Job, not_before: float | None = None) -> None:
        lease = self._leases.pop(job.id, None)
        job.released(not_before)
        if lease is None:
            return
        delays = [max(not_before - time.time(), 0.0)] if not_before is not None else None
        queue_id = lease[0]  # back where it came from
        self._note_metrics(queue_id, self.api.send(queue_id, [{**job.payload(), "job_id": job.id}], delays))
        self._buffer_ack(*lease)

    def housekeep(self) -> None:
        """Cloudflare deletes acked messages itself; only send waiting acks."""
        self.flush()

    # -- the ack buffer ----------------------------------------------------
    def _buffer_ack(self, queue_id: str, lease: str) -> None:
        self._acks[lease] = queue_id
        self._buffered()

    def _buffered(self) -> None:
        now = time.monotonic()
        if self._first_buffered is None:
            self._first_buffered = now
        if len(self._acks) + len(self._retries) >= ACK_BATCH or now - self._first_buffered >= ACK_DELAY:
            self.flush()

    def flush(self, *, quiet: bool = True) -> bool:
        """Send the buffered acks and retries. On failure they stay buffered
        for the next call (and their messages come back if that never
        comes): returns False, logging why, unless `quiet` is False."""
        if not self._acks and not self._retries:
            return True
        for queue_id in self.queue_ids:
            acks = [lease for lease, where in self._acks.items() if where == queue_id]
            retries = [(lease, delay) for lease, (where, delay) in self._retries.items() if where == queue_id]
            if not acks and not retries:
                continue
            try:
                self.api.ack(queue_id, acks, retries)
            except ServiceUnavailableError as exc:
                if not quiet:
                    raise
                log.warning("acks not sent yet (%d waiting): %s", len(self._acks) + len(self._retries), exc)
                return False
            self._metrics.pop(queue_id, None)  # the backlog changed
            for lease in acks:
                self._acks.pop(lease, None)
            for lease, _ in retries:
                self._retries.pop(lease, None)
        self._first_buffered = None if not (self._acks or self._retries) else time.monotonic()
        return True

    # -- messages <-> jobs ---------------------------------------------------
    def _bury_unreadable(self, queue_id: str, unreadable: list[tuple[dict, str]]) -> None:
        """Messages no job can be made of go to the dead-letter queue with the
        reason and what they held, so that nothing is lost."""
        for message, reason in unreadable:
            log.warning("cloudflare message %s: %s; moved to the dead-letter queue", message.get("id"), reason)
        bodies = [unreadable_body(message, reason) for message, reason in unreadable]
        self._note_metrics(self.dead_queue, self.api.send(self.dead_queue, bodies))
        for message, _ in unreadable:
            self._buffer_ack(queue_id, message["lease_id"])

    def _remember(self, job: Job) -> None:
        self._history.pop(job.id, None)
        self._history[job.id] = list(job.errors)
        while len(self._history) > ERROR_MEMORY:
            self._history.pop(next(iter(self._history)))

    # -- readers and operators -------------------------------------------
    def _note_metrics(self, queue_id: str, metrics: dict | None) -> None:
        if metrics is not None:
            self._metrics[queue_id] = (time.monotonic(), metrics)

    def _read_metrics(self, queue_id: str, *, required: bool) -> dict | None:
        """The queue's backlog metrics (GET .../metrics): the last ones seen if
        fresh, else read now. A figure is not worth stopping a runner for:
        when the API cannot be reached or refuses, stale metrics are used, or
        none; only a `required` read with nothing to fall back on raises."""
        read_at, metrics = self._metrics.get(queue_id, (None, None))
        fresh = DEAD_METRICS_FRESH if queue_id == self.dead_queue else METRICS_FRESH
        if read_at is not None and time.monotonic() - read_at <= fresh:
            return metrics
        try:
            latest = self.api.metrics(queue_id)
        except ConfigError:
            raise
        except DocutrainError as exc:  # ServiceUnavailableError included
            if read_at is not None or not required:
                log.info("cloudflare: backlog figures of %s not read (%s)", queue_id, exc)
                return metrics
            raise
        self._note_metrics(queue_id, latest)
        return latest

    def stats(self, now: float) -> QueueStats:
        self.flush()
        main = self._read_metrics(self.queue_id, required=True) or {}
        high = (self._read_metrics(self.high_queue, required=True) or {}) if self.high_queue else {}
        dead = self._read_metrics(self.dead_queue, required=False) or {}
        counts: dict[str, int | None] = {s: None for s in STATES}
        counts["dead"] = dead.get("backlog_count")
        return QueueStats(
            counts=counts,
            oldest_queued_age=None,  # the oldest *unacknowledged* message may be running
            next_retry_at=None,
            runner=None,
            unfinished=_total(main.get("backlog_count"), high.get("backlog_count") if self.high_queue else 0),
            details={
                "backend": "cloudflare",
                "queue": self.queue_id,
                "backlog": main.get("backlog_count"),
                "backlog_bytes": main.get("backlog_bytes"),
                "oldest_message_age_seconds": _age(now, main),
                "dead_letter_queue": self.dead_queue,
                "dead_letter_backlog": dead.get("backlog_count"),
                "dead_letter_backlog_bytes": dead.get("backlog_bytes"),
                "dead_letter_oldest_message_age_seconds": _age(now, dead),
                "high_priority_queue": self.high_queue,
                "high_priority_backlog": high.get("backlog_count"),
                "unknown": ["queued", "running", "retrying", "done"],
            },
        )

    def _read_dead(self) -> list[tuple[str, Job, dict]]:
        """Lease every dead-letter message (up to DEAD_SCAN_LIMIT): (lease id,
        job, the record as stored, which may hold more than the job)."""
        taken: list[tuple[str, Job, dict]] = []
        while len(taken) < DEAD_SCAN_LIMIT:
            messages, metrics = self.api.pull(self.dead_queue, MAX_PULL_BATCH, DEAD_LEASE)
            self._note_metrics(self.dead_queue, metrics)
            for message in messages:
                try:
                    record = decode_body(message)
                    job = job_from_message(record, message, JobState.DEAD, self.storage_bucket)
                    if not record.get("dead"):  # dead-lettered by Cloudflare, not by a runner
                        job.record_error(UNKNOWN_DEATH)
                except BadMessage as exc:
                    record = unreadable_body(message, str(exc))
                    job = job_from_message(record, message, JobState.DEAD, self.storage_bucket)
                taken.append((message["lease_id"], job, record))
            if len(messages) < MAX_PULL_BATCH:
                break
        return taken

    def _settle_dead(self, taken: list[tuple[str, Job, dict]], revive: set[int]) -> list[int]:
        """Send the revived jobs to the queue and fresh copies of the other
        records (all they held) back to the dead-letter queue, then ack every
        message read. Unreadable messages are never revived: no runner could
        make a job of them; their record keeps the original body."""
        back, again, revived = [], [], set()
        for _, job, record in sorted(taken, key=lambda t: t[1].id):
            if job.id in revived:
                continue  # a duplicate dead record of a job revived just now
            if job.id in revive and "raw_body" not in record:
                revived.add(job.id)
                job.revived(time.time())
                again.append((self.queue_for(job), {**job.payload(), "job_id": job.id}))
            else:
                back.append({**record, **dead_body(job)})
        for queue_id in self.queue_ids:
            mine = [body for where, body in again if where == queue_id]
            if mine:
                self._note_metrics(queue_id, self.api.send(queue_id, mine))
        if back:
            self.api.send(self.dead_queue, back)
        leases = [lease for lease, _, _ in taken]
        for start in range(0, len(leases), ACK_BATCH):
            self.api.ack(self.dead_queue, leases[start:start + ACK_BATCH], [])
        self._metrics.pop(self.dead_queue, None)
        return [body["job_id"] for _, body in again]

    def jobs(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        """Dead jobs only (None lists them too): nothing else can be read back."""
        if state not in (None, JobState.DEAD):
            return []
        taken = self._read_dead()
        self._settle_dead(taken, set())
        return sorted((job for _, job, _ in taken), key=lambda j: j.id, reverse=True)[:limit]

    def job(self, job_id: int) -> Job | None:
        """A dead job; None for any other (Cloudflare cannot look them up)."""
        taken = self._read_dead()
        self._settle_dead(taken, set())
        return next((job for _, job, _ in taken if job.id == job_id), None)

    def document_jobs(self, document_id: str, limit: int = 20) -> list[Job]:
        """Nothing: Cloudflare cannot look messages up, and reading the
        dead-letter queue means pulling and re-sending all of it."""
        return []

    def revive(self, job_ids: Sequence[int] | None = None) -> list[int]:
        taken = self._read_dead()
        wanted = {job.id for _, job, _ in taken} if job_ids is None else set(job_ids)
        return sorted(set(self._settle_dead(taken, wanted)))

    def close(self) -> None:
        try:
            if not self.flush():
                log.error("cloudflare: %d acks could not be sent; their jobs will run again "
                          "when their leases lapse", len(self._acks) + len(self._retries))
        finally:
            self.api.close()


def _total(*counts: int | None) -> int | None:
    return None if any(n is None for n in counts) else sum(counts)


__all__ = ["CloudflareQueue", "lease_seconds", "parse_queue_url", "UNKNOWN_DEATH"]


def _age(now: float, metrics: dict) -> float | None:
    """Seconds since the oldest unacknowledged message was sent; None when
    the queue is empty or the figure unknown (the API says 0 then)."""
    oldest_ms = metrics.get("oldest_message_timestamp_ms")
    return max(now - oldest_ms / 1000, 0.0) if oldest_ms else None

"""The many-machines backend: pgmq (Supabase Queues) in Postgres.

Several runners on several machines lease from one queue at once. pgmq does
the hard parts:
- `pgmq.read(queue, vt, qty)` hands each message to one reader (FOR UPDATE
  SKIP LOCKED) and hides it for `vt` seconds; a runner that dies leaves its
  messages to reappear when that visibility timeout lapses. The runner keeps
  long jobs hidden with `extend_lease` (`pgmq.set_vt`).
- `read_ct` counts reads, which are our attempts.
- the archive table `pgmq.a_<name>` is the record of done jobs;
  a second queue `<name>_dead` holds dead jobs; `pgmq.docutrain_tally_<name>`
  counts the records that left either (queues/tally.py).

What pgmq does not have is kept in the message JSON (`Job.payload()` plus):
- `job_id`: the first msg_id. A job moves between messages (main queue ->
  dead-letter queue -> main queue again) but keeps the id users type.
- `uncounted_reads`: reads that did not cost an attempt (`release`), so
  attempts = read_ct - uncounted_reads.
- `returned_at_read`: the read_ct at which a runner last gave the message
  back (`retry_later`, `release`). While read_ct equals it nobody holds the
  message; the next read makes them differ again. That tells a waiting
  retry (retrying) from a leased job (running) without an extra write at
  lease time.

Who is leased next is not pgmq's msg_id order but the lease order
(queues/order.py), kept in a docutrain-owned ordering table beside pgmq's
(queues/pgmq_order.py); the order's book is in the same database
(queues/fair_book.py), written in the transaction that sends.

Producers NOTIFY `docutrain_<name>` in the transaction that sends; idle
runners LISTEN (NotifyWaiter), so a new job starts without a poll delay.
`enqueue_unique` holds a transaction-scoped advisory lock on the document id.

pgmq has no "update message" function, so those fields are written with an
UPDATE on pgmq's own table, in the same transaction as the move they go with.
Only SQL functions that pgmq has had since 1.4 (what Supabase ships) are used.

This module writes (producers, the runner, operators); what the queue
answers readers with (states, records, totals, the line) is the mixin
`PgmqReads` in queues/pgmq_read.py.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Sequence, TypeVar

from docutrain_cli.config import redact_url
from docutrain_cli.errors import ConfigError, ServiceUnavailableError
from docutrain_cli.jobs import Job, JobState
from docutrain_cli.queues.base import Finished, JobQueue, QueueDescription, Waiter, finished_record
from docutrain_cli.queues import pgmq_order, pgmq_read
from docutrain_cli.queues.pgmq_read import ATTEMPTS, DOCUMENT_ID, HELD, JOB_ID, PgmqReads
from docutrain_cli.queues.fair import order_for
from docutrain_cli.queues.fair_book import SqlBook
from docutrain_cli.queues.order import FIFO, LeaseOrder
from docutrain_cli.queues.tally import Tally, create_sql, fold_sql
from docutrain_cli.queues.pgmq_setup import (
    DEAD_SUFFIX,
    check_name,
    connect,
    one_line,
    psycopg_module,
    scrub,
    tally_table,
)

KEEP_DONE_RECORDS = 100_000
SEND_BATCH = 1_000  # messages per pgmq.send_batch call
T = TypeVar("T")

class PgmqQueue(PgmqReads, JobQueue):
    kind = "pgmq"
    exclusive = False  # many runners lease at once; pgmq keeps them apart

    def __init__(self, url: str, queue_name: str = "docutrain", visibility_timeout: float = 120.0,
                 order: LeaseOrder = FIFO):
        self.url = url
        self.order = order
        self.name = check_name(queue_name)
        self.dead_name = queue_name + DEAD_SUFFIX
        self.visibility_timeout = visibility_timeout
        self._q = f"pgmq.q_{self.name}"  # pgmq's tables; the name is checked above
        self._a = f"pgmq.a_{self.name}"
        self._dq = f"pgmq.q_{self.dead_name}"
        self._tally = tally_table(self.name)
        # msg_id and read_ct of what this handle leased: a settle only acts
        # on the message if nobody has read it since (see _locked).
        self._leases: dict[int, tuple[int, int]] = {}
        self._conn = connect(url)
        self._check_installed()

    @classmethod
    def from_settings(cls, settings) -> "PgmqQueue":
        return cls(settings.queue, settings.queue_name, settings.visibility_timeout, order=order_for(settings))

    @classmethod
    def describe(cls, settings) -> QueueDescription:
        target = redact_url(settings.queue)  # the URL may hold a password
        return QueueDescription(cls.kind, target, f"pgmq queue {settings.queue_name} at {target}")

    def __repr__(self) -> str:
        return f"PgmqQueue({redact_url(self.url)!r}, {self.name!r})"

    # -- plumbing ----------------------------------------------------------
    def _check_installed(self) -> None:
        row = self._conn.execute(
            "SELECT to_regnamespace('pgmq') IS NOT NULL, to_regclass(%s), to_regclass(%s),"
            " to_regclass(%s), to_regclass('public.docutrain_fair_user'), to_regclass(%s),"
            " obj_description(to_regproc(%s), 'pg_proc')",
            (self._q, self._dq, pgmq_order.TABLE, self._tally, pgmq_order.function_name(self.name)),
        ).fetchone()
        if not row[0]:
            raise ConfigError(
                f"pgmq is not installed in {redact_url(self.url)}: run `docutrain queue init`"
            )
        if row[1] is None or row[2] is None:
            raise ConfigError(
                f"queue {self.name!r} does not exist in {redact_url(self.url)}: "
                "run `docutrain queue init`"
            )
        if (row[3] is None or row[4] is None or row[6] != pgmq_order.function_version(self._q, self.name)
                or pgmq_order.needs_rows(self._conn, self._q, self.name)):
            pgmq_order.ensure_tables(self._conn, self._q, self.name)  # a queue an older docutrain made
        if row[5] is None:  # a queue made before the tally existed
            with contextlib.suppress(psycopg_module().errors.UniqueViolation):  # made by another handle now
                self._conn.execute(create_sql(self._tally))

    def _db(self, work: Callable[[Any], T]) -> T:
        """Run `work(conn)`; on a dropped connection reconnect and try once more.

        Repeating is harmless: a failed transaction was rolled back; if a
        commit went through but its answer was lost, a repeated settle finds
        the message moved and does nothing, a repeated enqueue queues the
        documents twice (processing is idempotent), and a read whose answer
        was lost only hides messages until their timeout.
        """
        psycopg = psycopg_module()
        try:
            return work(self._conn)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction):
            raise ConfigError(
                f"queue {self.name!r} or pgmq is gone from {redact_url(self.url)}: "
                "run `docutrain queue init`"
            ) from None
        except psycopg.OperationalError:
            if not self._conn.closed and not self._conn.broken:
                raise
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = connect(self.url)
        try:
            return work(self._conn)
        except psycopg.OperationalError as exc:
            raise ServiceUnavailableError(
                f"lost the queue database {redact_url(self.url)}: {scrub(one_line(exc), self.url)}"
            ) from None

    def _json(self, data: dict[str, Any]):
        from psycopg.types.json import Jsonb

        return Jsonb(data)

    def _message(self, job: Job, **extra: Any) -> dict[str, Any]:
        return {**job.payload(), "job_id": job.id, **extra}

    def _locked(self, cur, job: Job) -> tuple[int, int, dict] | None:
        """Lock the job's message in the main queue (inside a transaction).

        Returns (msg_id, read_ct, message), or None when the message is gone
        or was read again after this lease: then another runner owns it (our
        lease lapsed) and our outcome must not overwrite theirs.
        """
        lease = self._leases.pop(job.id, None)
        if lease:
            row = cur.execute(
                f"SELECT msg_id, read_ct, message FROM {self._q} WHERE msg_id = %s FOR UPDATE",
                (lease[0],),
            ).fetchone()
            return row if row and row[1] == lease[1] else None
        # Leased through another handle: the message must still be held, at
        # the attempt this job object was leased for.
        return cur.execute(
            f"SELECT msg_id, read_ct, message FROM {self._q}"
            f" WHERE {JOB_ID} = %s AND {HELD} AND {ATTEMPTS} = %s FOR UPDATE",
            (job.id, job.attempts),
        ).fetchone()

    # -- producers -------------------------------------------------------
    def enqueue(self, jobs: Sequence[Job]) -> list[int]:
        self.order.prepare(jobs)  # reads files: before the transaction

        def work(conn) -> list[int]:
            with conn.transaction(), conn.cursor() as cur:
                ids = self._send(cur, jobs)
                self._notify(cur)
            return ids

        ids = self._db(work) if jobs else []
        if len(ids) >= pgmq_order.ANALYZE_AFTER:
            self._db(lambda conn: conn.execute(pgmq_order.ANALYZE))
        return sorted(ids)  # send_batch inserts in order; the ids are too

    def _book(self, cur) -> SqlBook | None:
        return SqlBook(cur, self.name, postgres=True) if self.order.uses_book else None

    def _send(self, cur, jobs: Sequence[Job], *, keep_ids: bool = False) -> list[int]:
        """Tag and send `jobs` and give them their ordering rows (inside a
        transaction). The first msg_id becomes a job's id for good, unless
        `keep_ids` (a revived job keeps the id it has)."""
        self.order.tag(jobs, self._book(cur))
        ids: list[int] = []
        for start in range(0, len(jobs), SEND_BATCH):
            part = jobs[start : start + SEND_BATCH]
            messages = [self._json(self._message(job) if keep_ids else job.payload()) for job in part]
            rows = cur.execute(
                "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[], 0)", (self.name, messages)
            ).fetchall()
            ids += [r[0] for r in rows]
        if not keep_ids:  # nobody can read these rows before this transaction commits
            cur.execute(
                f"UPDATE {self._q} SET message = message || jsonb_build_object('job_id', msg_id)"
                " WHERE msg_id = ANY(%s)",
                (ids,),
            )
        cur.execute(pgmq_order.rows_from_messages(self._q, "m.msg_id = ANY(%(ids)s)"),
                    {"queue": self.name, "ids": ids})
        return ids

    def enqueue_unique(self, job: Job) -> tuple[int, bool]:
        # A transaction-scoped advisory lock on (queue, document id) makes the
        # check and the send one step for every machine using this database;
        # every message in the main queue is queued, running or retrying
        # (done ones are archived, dead ones moved to the dead-letter queue).
        if not job.document_id:
            raise ValueError("enqueue_unique needs a job with a document_id")

        def work(conn) -> tuple[int, bool]:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"docutrain:{self.name}:{job.document_id}",),
                )
                row = cur.execute(
                    f"SELECT {JOB_ID} FROM {self._q} WHERE {DOCUMENT_ID} = %s ORDER BY msg_id LIMIT 1",
                    (job.document_id,),
                ).fetchone()
                if row:
                    return int(row[0]), False
                [msg_id] = self._send(cur, [job])
                self._notify(cur)
            return int(msg_id), True

        self.order.prepare([job])
        return self._db(work)

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel producers announce new jobs on."""
        return f"docutrain_{self.name}"

    def _notify(self, cur) -> None:
        # Delivered at commit, and only if the transaction commits.
        cur.execute("SELECT pg_notify(%s, '')", (self.channel,))

    def active_hashes(self) -> set[str]:
        rows = self._db(
            lambda c: c.execute(
                f"SELECT DISTINCT message->>'sha256' FROM {self._q} WHERE message ? 'sha256'"
            ).fetchall()
        )
        return {sha for (sha,) in rows if sha}

    # -- the runner ------------------------------------------------------
    def recover(self) -> int:
        """Nothing to do: a dead runner's messages come back by themselves
        when their visibility timeout lapses. Returns how many such jobs are
        available again right now (for the run summary)."""
        (count,) = self._db(
            lambda c: c.execute(
                f"SELECT count(*) FROM {self._q} WHERE {HELD} AND vt <= clock_timestamp()"
            ).fetchone()
        )
        return count

    def lease(self, limit: int, now: float) -> list[Job]:
        """`now` is not used: what is due is decided by the database clock,
        as pgmq does. The order is the ordering table's (queues/pgmq_order.py)."""
        if limit <= 0:
            return []
        vt = max(1, math.ceil(self.visibility_timeout))

        params = {"limit": limit, "vt": vt, "max_wait": self.order.max_wait, "advance": self.order.uses_book}
        rows = self._db(lambda conn: conn.execute(pgmq_order.lease(self.name), params).fetchall())
        leased = []
        for msg_id, read_ct, message in rows:
            job = Job.from_payload(int(message.get("job_id") or msg_id), JobState.RUNNING, message)
            job.leased(time.time(), attempts=read_ct - int(message.get("uncounted_reads") or 0))
            self._leases[job.id] = (msg_id, read_ct)
            leased.append(job)
        return leased

    def waiter(self) -> Waiter:
        from docutrain_cli.queues.wake import NotifyWaiter

        return NotifyWaiter(self.url, self.channel)

    def extend_lease(self, jobs: Sequence[Job], seconds: float) -> None:
        msg_ids = [self._leases[j.id][0] for j in jobs if j.id in self._leases]
        if not msg_ids:
            return
        vt = max(1, math.ceil(seconds))
        self._db(
            lambda c: c.execute(
                "WITH moved AS (SELECT m.id FROM unnest(%(ids)s::bigint[]) AS m(id),"
                " LATERAL pgmq.set_vt(%(queue)s, m.id, %(vt)s))"
                f" UPDATE {pgmq_order.TABLE} SET due = clock_timestamp() + make_interval(secs => %(vt)s)"
                " WHERE queue = %(queue)s AND msg_id IN (SELECT id FROM moved)",
                {"ids": msg_ids, "queue": self.name, "vt": vt},
            )
        )

    def _settle(self, job: Job, change: Callable[[Any, int, int, dict], None]) -> None:
        """Run `change(cur, msg_id, read_ct, message)` in one transaction on
        the job's message, if this runner still holds it; otherwise another
        runner holds it now and will settle it (a lapsed lease is not ours)."""

        def work(conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                found = self._locked(cur, job)
                if found is not None:
                    change(cur, *found)

        self._db(work)

    def complete(self, job: Job) -> None:
        job.completed(time.time())

        def change(cur, msg_id: int, read_ct: int, message: dict) -> None:
            keep = {k: message[k] for k in ("uncounted_reads",) if k in message}
            cur.execute(
                f"UPDATE {self._q} SET message = %s WHERE msg_id = %s",
                (self._json(self._message(job, **keep)), msg_id),
            )
            cur.execute("SELECT pgmq.archive(%s, %s::bigint)", (self.name, msg_id))
            self._left_queue(cur, msg_id)
            self.order.finished(job, self._book(cur))

        self._settle(job, change)

    def _left_queue(self, cur, msg_id: int) -> None:
        cur.execute(pgmq_order.DELETE, {"queue": self.name, "ids": [msg_id]})

    def _returned(self, cur, msg_id: int) -> None:
        cur.execute(pgmq_order.returned(self._q), {"queue": self.name, "ids": [msg_id]})

    def retry_later(self, job: Job, error: str, not_before: float) -> None:
        job.failed(error, not_before)

        def change(cur, msg_id: int, read_ct: int, message: dict) -> None:
            data = self._message(
                job,
                uncounted_reads=int(message.get("uncounted_reads") or 0),
                returned_at_read=read_ct,
            )
            cur.execute(
                f"UPDATE {self._q} SET message = %s, vt = to_timestamp(%s) WHERE msg_id = %s",
                (self._json(data), not_before, msg_id),
            )
            self._returned(cur, msg_id)

        self._settle(job, change)

    def bury(self, job: Job, error: str) -> None:
        job.buried(error, time.time())

        def change(cur, msg_id: int, read_ct: int, message: dict) -> None:
            cur.execute("SELECT pgmq.send(%s, %s, 0)", (self.dead_name, self._json(self._message(job))))
            cur.execute("SELECT pgmq.delete(%s, %s::bigint)", (self.name, msg_id))
            self._left_queue(cur, msg_id)

        self._settle(job, change)

    def bury_done(self, job: Job, error: str) -> None:
        def work(conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.name}:{job.id}",))
                active = cur.execute(
                    f"SELECT 1 FROM {self._q} WHERE {JOB_ID} = %s UNION ALL"
                    f" SELECT 1 FROM {self._dq} WHERE {JOB_ID} = %s LIMIT 1", (job.id, job.id),
                ).fetchone()
                if active:
                    return  # queued, running or dead again: not a done job any more
                record = cur.execute(
                    f"SELECT msg_id, message FROM {self._a} WHERE {JOB_ID} = %s"
                    " ORDER BY archived_at DESC LIMIT 1 FOR UPDATE", (job.id,),
                ).fetchone()
                dead = job
                if record is not None:  # its full record: attempts, errors, result
                    self._fold(cur, [finished_record(Job.from_payload(job.id, JobState.DONE, record[1]))])
                    cur.execute(f"DELETE FROM {self._a} WHERE msg_id = %s", (record[0],))
                    dead = Job.from_payload(job.id, JobState.DONE, record[1])
                dead.record_error(error)
                dead.state = JobState.DEAD
                dead.finished_at = time.time()
                cur.execute("SELECT pgmq.send(%s, %s, 0)", (self.dead_name, self._json(self._message(dead))))

        self._db(work)

    def release(self, job: Job, not_before: float | None = None) -> None:
        def change(cur, msg_id: int, read_ct: int, message: dict) -> None:
            # The job changes only if this runner still held it (_locked
            # found its lease, so read_ct - uncounted_reads == job.attempts).
            job.released(not_before)
            uncounted = int(message.get("uncounted_reads") or 0) + 1
            data = {**message, "uncounted_reads": uncounted, "returned_at_read": read_ct}
            if not_before is not None:
                data["not_before"] = not_before
            cur.execute(
                f"UPDATE {self._q} SET message = %s,"
                " vt = greatest(clock_timestamp(), to_timestamp(%s)) WHERE msg_id = %s",
                (self._json(data), not_before or 0, msg_id),
            )
            self._returned(cur, msg_id)

        self._settle(job, change)

    def housekeep(self) -> None:
        """Keep the latest KEEP_DONE_RECORDS done records in the archive."""
        def work(conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                where = (f"archived_at < (SELECT archived_at FROM {self._a}"
                         " ORDER BY archived_at DESC OFFSET %s LIMIT 1)")
                pruned = cur.execute(
                    pgmq_read.finished_done(self._a, f"{where} FOR UPDATE"), (KEEP_DONE_RECORDS - 1,)
                ).fetchall()
                if pruned:
                    self._fold(cur, [Finished(*row) for row in pruned])
                    cur.execute(f"DELETE FROM {self._a} WHERE {where}", (KEEP_DONE_RECORDS - 1,))

        self._db(work)

    def _fold(self, cur, records: list[Finished]) -> None:
        """Count records that are about to leave (in the caller's transaction)."""
        cur.executemany(fold_sql(self._tally, "%s"), list(Tally.of(records).rows()))

    # -- operators ---------------------------------------------------------
    def revive(self, job_ids: Sequence[int] | None = None) -> list[int]:
        def work(conn) -> list[int]:
            with conn.transaction(), conn.cursor() as cur:
                if job_ids is None:
                    rows = cur.execute(f"SELECT msg_id, message FROM {self._dq} FOR UPDATE").fetchall()
                else:
                    rows = cur.execute(
                        f"SELECT msg_id, message FROM {self._dq} WHERE {JOB_ID} = ANY(%s) FOR UPDATE",
                        (list(job_ids),),
                    ).fetchall()
                if not rows:
                    return []
                fresh, deaths = [], []
                for msg_id, message in sorted(rows, key=lambda r: int(r[1].get("job_id") or r[0])):
                    job = Job.from_payload(int(message.get("job_id") or msg_id), JobState.DEAD, message)
                    deaths.append(finished_record(job))  # still counted once it leaves the dead queue
                    # A new message starts at read_ct 0: attempts start afresh,
                    # and pgmq's enqueued_at of the new message agrees with queued_at.
                    job.revived(time.time())
                    fresh.append(job)
                self._fold(cur, deaths)
                self._send(cur, fresh, keep_ids=True)  # back in line as if new
                cur.execute(
                    "SELECT * FROM pgmq.delete(%s, %s::bigint[])", (self.dead_name, [r[0] for r in rows])
                )
                self._notify(cur)
            return [job.id for job in fresh]

        return self._db(work)

    def close(self) -> None:
        self._conn.close()


__all__ = ["PgmqQueue", "KEEP_DONE_RECORDS"]

"""The default backend: one SQLite file managed by persist-queue.

persist-queue is used in one way only (see docs/design notes in README):
- exactly one dispatcher leases jobs, guarded by an flock()ed `<file>.lock`,
  because its get() is a SELECT then an UPDATE and two consumers would both
  receive the same row;
- every handle opens with auto_resume=False; only the lock holder resumes
  jobs a dead runner left in flight (`recover`);
- rows are written as persist-queue's put() writes them (JSON bytes, status
  inited), but by our own statements wherever the lease order's book
  (queues/fair_book.py, two small tables in the same file) must change in
  the same transaction: enqueue, lease, complete and revive run under
  BEGIN IMMEDIATE on our connection (persist-queue's own calls commit on
  theirs, so they cannot share it);
- leasing picks due rows in the lease order (queues/order.py): the levels
  in turn, and within a level by vstart then _id, each an index walk
  (`docutrain_lease_order`, `docutrain_lease_oldest`: expression indexes
  over the waiting rows only, so they stay small and ordered);
- retry state (attempts, not_before, errors) lives in the JSON payload,
  written with update(); dead jobs are persist-queue's ack_failed rows;
- counts come from SQL, never qsize() (an in-process counter);
- a done job's row is deleted as its record goes into a small
  `docutrain_done` table in the same file (one transaction), so the queue
  table holds only live and dead jobs; housekeeping still clears acked rows
  (clear_acked_data) that older versions left;
- `enqueue_unique` (one job per active document id) checks and inserts in
  one such transaction;
- producers wake the lock holder through `<file>.wake` (queues/wake.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterator, Sequence

import persistqueue.serializers.json as json_serializer
from persistqueue.sqlackqueue import AckStatus, SQLiteAckQueue

from docutrain_cli.errors import ConfigError, DocutrainError
from docutrain_cli.jobs import PRIORITIES, STATES, Job, JobState
from docutrain_cli import sqlite
from docutrain_cli.queues.base import Ahead, Finished, JobQueue, QueueStats, UserBacklog, finished_record
from docutrain_cli.queues.tally import Tally, create_sql, fold_sql
from docutrain_cli.queues.lock import RunnerLock, describe_holder
from docutrain_cli.paths import runner_lock_path, wake_path
from docutrain_cli.queues.fair import order_for
from docutrain_cli.queues.fair_book import SQLITE_SCHEMA, SqlBook
from docutrain_cli.queues.order import (
    FIFO, LeaseOrder, latest_vstarts, level_of, level_sql, levels_before, priority_counts,
)
from docutrain_cli.queues.wake import Poker, SocketWaiter

TABLE = "ack_queue_default"  # persist-queue's table for name="default"
DONE_TABLE = "docutrain_done"
TALLY_TABLE = "docutrain_tally"  # finished records that left (queues/tally.py)
KEEP_DONE_RECORDS = 100_000

READY = (int(AckStatus.inited), int(AckStatus.ready))
RUNNING = int(AckStatus.unack)
DEAD = int(AckStatus.ack_failed)
_WAITING = f"status IN ({READY[0]}, {READY[1]})"


def _payload_field(path: str) -> str:
    """A payload field (dotted path) in SQL. persist-queue's JSON serializer stores bytes."""
    return f"json_extract(CAST(data AS TEXT), '$.{path}')"


# Payload fields read in SQL.
_ATTEMPTS = f"coalesce({_payload_field('attempts')}, 0)"
_NOT_BEFORE = f"coalesce({_payload_field('not_before')}, 0)"
_SHA256 = _payload_field("sha256")
# When a job last entered the queue: a revived job's queued_at, else the put time.
_QUEUED_AT = f"coalesce({_payload_field('queued_at')}, timestamp)"
_DOCUMENT_ID = _payload_field("document_id")
# The lease order (queues/order.py): a job's level, and its place in it.
_LEVEL = level_sql(_payload_field("priority"))
_VSTART = f"coalesce({_payload_field('vstart')}, 0)"
_COST = f"coalesce({_payload_field('cost')}, 0)"
_DONE_DOCUMENT_ID = "json_extract(data, '$.document_id')"


class _AckQueue(SQLiteAckQueue):
    """persist-queue's ack queue with our connection pragmas."""

    def _new_db_connection(self, path, multithreading, timeout):  # noqa: D401
        # Not super(): it switches to WAL without waiting for the lock, which
        # fails when processes open a fresh file together (see use_wal).
        # check_same_thread=False: a handle may move between threads (serve
        # lends handles to request threads) but is never used by two at once.
        conn = sqlite3.connect(os.path.join(path, self.db_file_name), timeout=timeout, check_same_thread=False)
        # WAL + synchronous=NORMAL: a commit survives a killed process (even
        # kill -9); only a power loss can drop the last few commits. FULL would
        # fsync on every put/get/ack and cap enqueue at a few hundred jobs/s.
        return sqlite.configure(conn)


class LocalQueue(JobQueue):
    kind = "local"
    exclusive = True

    @classmethod
    def from_settings(cls, settings) -> "LocalQueue":
        return cls(settings.queue, order=order_for(settings))

    def __init__(self, path: str | os.PathLike[str], order: LeaseOrder = FIFO):
        self.path = Path(path)
        self.order = order
        if self.path.is_dir():
            raise ConfigError(f"{self.path}: is a folder; --queue takes a file such as queue.db")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._q = _AckQueue(
                str(self.path.parent),
                db_file_name=self.path.name,
                auto_resume=False,  # never reset a live runner's jobs
                serializer=json_serializer,
                timeout=sqlite.BUSY_TIMEOUT,
            )
            self._db = sqlite.connect(self.path, check_same_thread=False)
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {DONE_TABLE} ("
                " id INTEGER PRIMARY KEY, data TEXT NOT NULL, finished_at REAL NOT NULL)"
            )
            self._db.execute(create_sql(TALLY_TABLE))
            # Only the waiting rows, in lease order within each level, and by
            # when they entered (the aging of queues/order.py): `lease` walks
            # these instead of scanning past running, dead or done rows.
            self._db.execute(
                f"CREATE INDEX IF NOT EXISTS docutrain_lease_order ON {TABLE} ({_LEVEL}, {_VSTART}, _id)"
                f" WHERE {_WAITING}"
            )
            self._db.execute(
                f"CREATE INDEX IF NOT EXISTS docutrain_lease_oldest ON {TABLE} ({_LEVEL}, {_QUEUED_AT})"
                f" WHERE {_WAITING}"
            )
            self._db.execute("DROP INDEX IF EXISTS docutrain_waiting")  # the arrival-only order of older versions
            self._db.executescript(SQLITE_SCHEMA)
            # Jobs by document id: the uniqueness check of enqueue_unique and
            # GET /v1/documents/<id> stay index lookups however long the queue.
            self._db.execute(f"CREATE INDEX IF NOT EXISTS docutrain_document ON {TABLE} ({_DOCUMENT_ID})")
            self._db.execute(
                f"CREATE INDEX IF NOT EXISTS docutrain_done_document ON {DONE_TABLE} ({_DONE_DOCUMENT_ID})"
            )
        except sqlite3.DatabaseError as exc:
            raise DocutrainError(f"{self.path}: not a docutrain queue file: {exc}") from None
        self._lock = RunnerLock(runner_lock_path(self.path))
        self._poker = Poker(wake_path(self.path))
        self._batched = False  # inside batch(): the runner's writes share its transaction

    # -- producers -------------------------------------------------------
    def enqueue(self, jobs: Sequence[Job]) -> list[int]:
        if not jobs:
            return []
        self.order.prepare(jobs)  # reads files: before the transaction
        with sqlite.transaction(self._db):
            ids = self._insert(jobs)
        self._poker.poke()
        return ids

    def enqueue_unique(self, job: Job) -> tuple[int, bool]:
        # BEGIN IMMEDIATE takes the file's write lock before the check, so
        # check and insert are one step for every process that writes this file.
        if not job.document_id:
            raise ValueError("enqueue_unique needs a job with a document_id")
        self.order.prepare([job])
        with sqlite.transaction(self._db):
            row = self._db.execute(
                f"SELECT _id FROM {TABLE} INDEXED BY docutrain_document"
                f" WHERE {_DOCUMENT_ID} = ? AND status IN ({READY[0]}, {READY[1]}, {RUNNING})"
                " ORDER BY _id LIMIT 1",
                (job.document_id,),
            ).fetchone()
            if row is None:
                [job_id] = self._insert([job])
        if row is not None:
            return row[0], False
        self._poker.poke()
        return job_id, True

    def _book(self) -> SqlBook | None:
        return SqlBook(self._db) if self.order.uses_book else None

    def _insert(self, jobs: Sequence[Job]) -> list[int]:
        """Tag and insert the jobs (inside a transaction), as persist-queue's put() writes a row."""
        self.order.tag(jobs, self._book())
        now = time.time()
        return [
            self._db.execute(
                f"INSERT INTO {TABLE} (data, timestamp, status) VALUES (?, ?, ?)",
                (json_serializer.dumps(job.payload()), now, READY[0]),
            ).lastrowid
            for job in jobs
        ]

    def active_hashes(self) -> set[str]:
        rows = self._db.execute(
            f"SELECT {_SHA256} FROM {TABLE} WHERE status IN (?, ?, ?)", (*READY, RUNNING)
        )
        return {sha for (sha,) in rows if sha}

    # -- the runner ------------------------------------------------------
    @contextlib.contextmanager
    def runner_lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def waiter(self) -> SocketWaiter:
        return SocketWaiter(wake_path(self.path))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        # One BEGIN IMMEDIATE ... COMMIT for everything the runner writes in
        # one pass of its loop (completions, retries, the next lease), not one
        # per job: a commit costs more than the statements it holds.
        if self._batched:
            yield
            return
        with sqlite.transaction(self._db):
            self._batched = True
            try:
                yield
            finally:
                self._batched = False

    def _write(self) -> contextlib.AbstractContextManager:
        """The transaction a runner's write goes in: its own, or the batch's."""
        return contextlib.nullcontext() if self._batched else sqlite.transaction(self._db)

    def recover(self) -> int:
        (count,) = self._db.execute(f"SELECT count(*) FROM {TABLE} WHERE status = ?", (RUNNING,)).fetchone()
        if count:
            self._q.resume_unack_tasks()
        return count

    def lease(self, limit: int, now: float) -> list[Job]:
        if limit <= 0:
            return []
        leased: list[Job] = []
        with self._write():
            for level in self._turns(now):
                rows = self._db.execute(
                    f"SELECT _id, data FROM {TABLE} INDEXED BY docutrain_lease_order"
                    f" WHERE {_WAITING} AND {_LEVEL} = :level AND {_NOT_BEFORE} <= :now"
                    f" ORDER BY {_VSTART}, _id LIMIT :limit",
                    {"level": level, "now": now, "limit": limit - len(leased)},
                ).fetchall()
                jobs = [Job.from_payload(job_id, JobState.RUNNING, json.loads(data)) for job_id, data in rows]
                for job in jobs:
                    job.leased(now)
                # What Job.leased wrote (attempts, started_at; the state is the
                # status column), set in the stored JSON by SQLite: the whole
                # record rewritten in Python cost more than the rest of a lease.
                # The time goes in as Python writes it (SQLite's own rounds it).
                self._db.executemany(
                    f"UPDATE {TABLE} SET status = {RUNNING}, data = CAST(json_set(CAST(data AS TEXT),"
                    " '$.attempts', ?, '$.started_at', json(?)) AS BLOB) WHERE _id = ?",
                    [(job.attempts, json.dumps(job.started_at), job.id) for job in jobs],
                )
                leased += jobs
                if len(leased) >= limit:
                    break
            if leased and self.order.uses_book:
                self._book().advance(latest_vstarts(leased))
        return leased

    def _turns(self, now: float) -> list[int]:
        """The levels with due jobs, in the order they are served (queues/order.py)."""
        oldest = " UNION ALL ".join(
            f"SELECT {level} AS level, (SELECT {_QUEUED_AT} FROM {TABLE} INDEXED BY docutrain_lease_oldest"
            f" WHERE {_WAITING} AND {_LEVEL} = {level} AND {_NOT_BEFORE} <= :now"
            f" ORDER BY {_QUEUED_AT} LIMIT 1) AS oldest"
            for level in range(len(PRIORITIES))
        )
        return [level for (level,) in self._db.execute(
            f"SELECT level FROM ({oldest}) WHERE oldest IS NOT NULL"
            f" ORDER BY {self.order.turn_order('level', 'oldest', ':now')}", {"now": now}
        )]

    def complete(self, job: Job) -> None:
        job.completed(time.time())
        # The record, the end of the live row and what the lease order learns: one transaction.
        with self._write():
            self._db.execute(
                f"INSERT OR REPLACE INTO {DONE_TABLE} (id, data, finished_at) VALUES (?, ?, ?)",
                (job.id, json.dumps(job.payload()), job.finished_at),
            )
            self._db.execute(f"DELETE FROM {TABLE} WHERE _id = ?", (job.id,))
            self.order.finished(job, self._book())

    def retry_later(self, job: Job, error: str, not_before: float) -> None:
        job.failed(error, not_before)
        self._store_row(job, int(AckStatus.ready))

    def bury(self, job: Job, error: str) -> None:
        job.buried(error, time.time())
        self._store_row(job, DEAD)

    def _store_row(self, job: Job, status: int) -> None:
        """The row as persist-queue's update() and then nack() or ack_failed()
        leave it, in one statement (and in the runner's batch)."""
        with self._write():
            self._db.execute(
                f"UPDATE {TABLE} SET data = ?, status = ? WHERE _id = ?",
                (json_serializer.dumps(job.payload()), status, job.id),
            )

    def bury_done(self, job: Job, error: str) -> None:
        with sqlite.transaction(self._db):
            row = self._db.execute(f"SELECT status FROM {TABLE} WHERE _id = ?", (job.id,)).fetchone()
            if row is not None and row[0] != int(AckStatus.acked):
                return  # queued, running or dead again: not a done job any more
            record = self._db.execute(f"SELECT data FROM {DONE_TABLE} WHERE id = ?", (job.id,)).fetchone()
            if record is not None:  # its full record: attempts, errors, result
                self._fold(self._finished_rows(f"SELECT * FROM {DONE_TABLE} WHERE id = ?", (job.id,), dead=False))
                self._db.execute(f"DELETE FROM {DONE_TABLE} WHERE id = ?", (job.id,))
                job = Job.from_payload(job.id, JobState.DONE, json.loads(record[0]))
            job.record_error(error)
            job.state = JobState.DEAD
            job.finished_at = time.time()
            # The row persist-queue's ack_failed would leave, under the same id.
            self._db.execute(
                f"INSERT OR REPLACE INTO {TABLE} (_id, data, timestamp, status) VALUES (?, ?, ?, ?)",
                (job.id, json_serializer.dumps(job.payload()), job.enqueued_at, DEAD),
            )

    def release(self, job: Job, not_before: float | None = None) -> None:
        job.released(not_before)
        self._store_row(job, int(AckStatus.ready))

    def housekeep(self) -> None:
        self._q.clear_acked_data(max_delete=None, keep_latest=None)
        with sqlite.transaction(self._db):
            (cutoff,) = self._db.execute(
                f"SELECT coalesce((SELECT id FROM {DONE_TABLE} ORDER BY id DESC LIMIT 1 OFFSET ?), 0)",
                (KEEP_DONE_RECORDS,),
            ).fetchone()
            if cutoff:
                self._fold(self._finished_rows(f"SELECT * FROM {DONE_TABLE} WHERE id <= ?", (cutoff,), dead=False))
                self._db.execute(f"DELETE FROM {DONE_TABLE} WHERE id <= ?", (cutoff,))

    def _fold(self, records: list[Finished]) -> None:
        """Count records that are about to leave (inside the caller's transaction)."""
        self._db.executemany(fold_sql(TALLY_TABLE), list(Tally.of(records).rows()))

    # -- readers and operators -------------------------------------------
    # A waiting row's state is JobState.waiting(attempts), written in SQL.
    _STATE_SQL = (
        f"CASE WHEN status IN ({READY[0]}, {READY[1]}) AND {_ATTEMPTS} = 0 THEN 'queued'"
        f" WHEN status IN ({READY[0]}, {READY[1]}) THEN 'retrying'"
        f" WHEN status = {RUNNING} THEN 'running'"
        f" WHEN status = {DEAD} THEN 'dead' ELSE 'done' END"
    )

    def stats(self, now: float) -> QueueStats:
        counts = {s: 0 for s in STATES}
        for state, n in self._db.execute(
            f"SELECT {self._STATE_SQL} AS state, count(*) FROM {TABLE}"
            f" WHERE status != {int(AckStatus.acked)} GROUP BY state"
        ):
            counts[state] = n
        (counts["done"],) = self._db.execute(f"SELECT count(*) FROM {DONE_TABLE}").fetchone()
        oldest, next_retry = self._db.execute(
            f"SELECT min(CASE WHEN {_ATTEMPTS} = 0 THEN {_QUEUED_AT} END),"
            f" min(CASE WHEN {_ATTEMPTS} > 0 THEN {_NOT_BEFORE} END)"
            f" FROM {TABLE} WHERE status IN (?, ?)",
            READY,
        ).fetchone()
        holder = self._lock.holder_info()
        return QueueStats(
            counts=counts,
            oldest_queued_age=None if oldest is None else max(now - oldest, 0.0),
            next_retry_at=next_retry,
            runner=None if holder is None else describe_holder(holder),
            runner_info=holder,
        )

    def finished(self, since: float = 0.0) -> list[Finished]:
        # In SQL: /metrics reads every kept record at each scrape.
        done = self._finished_rows(f"SELECT * FROM {DONE_TABLE} WHERE finished_at >= ?", (since,), dead=False)
        dead = self._finished_rows(
            f"SELECT * FROM {TABLE} WHERE status = {DEAD}"
            " AND coalesce(json_extract(CAST(data AS TEXT), '$.finished_at'), 0) >= ?",
            (since,), dead=True,
        )
        return sorted(done + dead, key=lambda f: f.finished_at)

    def _finished_rows(self, rows_sql: str, params: tuple, *, dead: bool) -> list[Finished]:
        """Finished records of the done records (or dead rows) `rows_sql` selects."""
        field = _payload_field
        if dead:
            columns = (f"_id, 'dead', {field('finished_at')}, {field('finished_at')} - {field('started_at')},"
                       f" 0, 0, NULL, {field('user_id')}, {field('cost')}")
        else:
            columns = (f"id, 'done', finished_at, finished_at - {field('started_at')},"
                       f" coalesce({field('result.pages')}, 0), coalesce({field('result.tokens_embedded')}, 0),"
                       # `model` in JobResult records; `embedding_model` in older ones
                       f" coalesce({field('result.model')}, {field('result.embedding_model')}),"
                       f" {field('user_id')}, {field('cost')}")
        return [Finished(*row) for row in self._db.execute(f"SELECT {columns} FROM ({rows_sql})", params)]

    def totals(self) -> Tally:
        with sqlite.transaction(self._db, "DEFERRED"):  # one snapshot: a fold between reads would count twice
            folded = Tally.from_rows(self._db.execute(f"SELECT name, label, value FROM {TALLY_TABLE}"))
            kept = Tally.of(self.finished())
        return folded.plus(kept)

    # -- the line ----------------------------------------------------------------
    def ahead_of(self, job: Job, now: float) -> Ahead | None:
        if job.state not in (JobState.QUEUED, JobState.RETRYING):
            return None
        level = level_of(job)
        before = levels_before(self._turns(now), level)
        jobs, tokens = self._db.execute(
            # a retry not due yet starts before nobody (until it is due)
            f"SELECT count(*), coalesce(sum({_COST}), 0) FROM {TABLE} WHERE {_WAITING} AND {_NOT_BEFORE} <= :now"
            f" AND ({_LEVEL} IN ({', '.join(str(lv) for lv in before) or 'NULL'}) OR ({_LEVEL} = :level AND"
            f" ({_VSTART} < :vstart OR ({_VSTART} = :vstart AND _id < :id))))",
            {"level": level, "vstart": job.vstart or 0.0, "id": job.id, "now": now},
        ).fetchone()
        (running,) = self._db.execute(
            f"SELECT coalesce(sum({_COST}), 0) FROM {TABLE} WHERE status = {RUNNING}"
        ).fetchone()
        return Ahead(jobs, int(tokens), int(running))

    def waiting_by_user(self) -> list[UserBacklog]:
        rows = self._db.execute(
            f"SELECT {_payload_field('user_id')} AS user, count(*), coalesce(sum({_COST}), 0) AS tokens"
            f" FROM {TABLE} WHERE {_WAITING} GROUP BY user ORDER BY tokens DESC, user"
        )
        return [UserBacklog(user, jobs, int(tokens)) for user, jobs, tokens in rows]

    def depth_by_priority(self) -> dict[str, int]:
        rows = self._db.execute(
            f"SELECT {_LEVEL}, count(*) FROM {TABLE} INDEXED BY docutrain_lease_order WHERE {_WAITING} GROUP BY 1"
        )
        return priority_counts(rows)

    def _from_row(self, job_id: int, state: str, data: bytes | str) -> Job:
        return Job.from_payload(job_id, JobState(state), json.loads(data))

    def jobs(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        found: list[Job] = []
        if state in (None, JobState.DONE):
            found += [
                self._from_row(i, "done", d)
                for i, d in self._db.execute(
                    f"SELECT id, data FROM {DONE_TABLE} ORDER BY id DESC LIMIT ?", (limit,)
                )
            ]
        if state != JobState.DONE:
            where = f"WHERE {self._STATE_SQL} = ?" if state else ""
            params = (state.value,) if state else ()
            found += [
                self._from_row(i, s, d)
                for i, s, d in self._db.execute(
                    f"SELECT _id, {self._STATE_SQL}, data FROM {TABLE} {where}"
                    f"{' AND' if where else ' WHERE'} status != {int(AckStatus.acked)}"
                    " ORDER BY _id DESC LIMIT ?",
                    (*params, limit),
                )
            ]
        return sorted(found, key=lambda j: j.id, reverse=True)[:limit]

    def job(self, job_id: int) -> Job | None:
        row = self._db.execute(
            f"SELECT _id, {self._STATE_SQL}, data FROM {TABLE}"
            f" WHERE _id = ? AND status != {int(AckStatus.acked)}",
            (job_id,),
        ).fetchone()
        if row:
            return self._from_row(*row)
        row = self._db.execute(f"SELECT id, data FROM {DONE_TABLE} WHERE id = ?", (job_id,)).fetchone()
        return self._from_row(row[0], "done", row[1]) if row else None

    def document_jobs(self, document_id: str, limit: int = 20) -> list[Job]:
        found = [
            self._from_row(*row)
            for row in self._db.execute(
                f"SELECT _id, {self._STATE_SQL}, data FROM {TABLE} INDEXED BY docutrain_document"
                f" WHERE {_DOCUMENT_ID} = ? AND status != {int(AckStatus.acked)} ORDER BY _id DESC LIMIT ?",
                (document_id, limit),
            )
        ]
        found += [
            self._from_row(i, "done", d)
            for i, d in self._db.execute(
                f"SELECT id, data FROM {DONE_TABLE} WHERE {_DONE_DOCUMENT_ID} = ? ORDER BY id DESC LIMIT ?",
                (document_id, limit),
            )
        ]
        return sorted(found, key=lambda j: j.id, reverse=True)[:limit]

    def revive(self, job_ids: Sequence[int] | None = None) -> list[int]:
        if job_ids is None:
            job_ids = [i for (i,) in self._db.execute(f"SELECT _id FROM {TABLE} WHERE status = ?", (DEAD,))]
        jobs = [job for job in map(self.job, dict.fromkeys(job_ids)) if job is not None and job.state == JobState.DEAD]
        # Counted before they leave the dead rows, in the same transaction
        # (the counter must not fall).
        deaths = [finished_record(job) for job in jobs]
        now = time.time()
        for job in jobs:
            job.revived(now)
        # Back in line as if new: the lease order tags them again.
        with sqlite.transaction(self._db):
            self._fold(deaths)
            self.order.tag(jobs, self._book())
            for job in jobs:
                self._db.execute(
                    f"UPDATE {TABLE} SET status = ?, data = ? WHERE _id = ? AND status = ?",
                    (int(AckStatus.ready), json_serializer.dumps(job.payload()), job.id, DEAD),
                )
        revived = [job.id for job in jobs]
        if revived:
            self._poker.poke()
        return revived

    def close(self) -> None:
        self._poker.close()
        self._lock.release()
        self._q.close()
        self._db.close()

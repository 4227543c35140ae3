"""The default backend: one SQLite file managed by persist-queue.

persist-queue is used in one way only (see docs/design notes in README):
- exactly one dispatcher leases jobs, guarded by an flock()ed `<file>.lock`,
  because its get() is a SELECT then an UPDATE and two consumers would both
  receive the same row;
- every handle opens with auto_resume=False; only the lock holder resumes
  jobs a dead runner left in flight (`recover`);
- leasing picks due rows with our own SELECT (persist-queue has no delays),
  in the order the queue's `order` names (queues/order.py), and then takes
  each one with get(id=...);
- retry state (attempts, not_before, errors) lives in the JSON payload,
  written with update(); dead jobs are persist-queue's ack_failed rows;
- counts come from SQL, never qsize() (an in-process counter);
- acked rows are deleted (clear_acked_data) so get() stays fast; a small
  `docutrain_done` table in the same file keeps the record of finished jobs;
- `enqueue_unique` (one job per active document id) checks and inserts under
  BEGIN IMMEDIATE, writing the row as persist-queue's put() would: its put
  commits on its own connection, so it cannot share our transaction;
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
from docutrain_cli.jobs import STATES, Job, JobState
from docutrain_cli import sqlite
from docutrain_cli.queues.base import Finished, JobQueue, QueueStats
from docutrain_cli.queues.lock import RunnerLock, describe_holder
from docutrain_cli.paths import runner_lock_path, wake_path
from docutrain_cli.queues.order import Columns
from docutrain_cli.queues.wake import Poker, SocketWaiter

TABLE = "ack_queue_default"  # persist-queue's table for name="default"
DONE_TABLE = "docutrain_done"
KEEP_DONE_RECORDS = 100_000

READY = (int(AckStatus.inited), int(AckStatus.ready))
RUNNING = int(AckStatus.unack)
DEAD = int(AckStatus.ack_failed)


def _payload_field(path: str) -> str:
    """A payload field (dotted path) in SQL. persist-queue's JSON serializer stores bytes."""
    return f"json_extract(CAST(data AS TEXT), '$.{path}')"


# What a lease order may sort by (queues/order.py); `lease` binds :now.
_ORDER_COLUMNS = Columns(arrival="_id", field=_payload_field, now=":now")
# Payload fields read in SQL.
_ATTEMPTS = f"coalesce({_payload_field('attempts')}, 0)"
_NOT_BEFORE = f"coalesce({_payload_field('not_before')}, 0)"
_SHA256 = _payload_field("sha256")
# When a job last entered the queue: a revived job's queued_at, else the put time.
_QUEUED_AT = f"coalesce({_payload_field('queued_at')}, timestamp)"
_DOCUMENT_ID = _payload_field("document_id")
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

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
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
            # Only the waiting rows, in queue order: `lease` walks this instead
            # of scanning past every running, dead or not-yet-cleared done row.
            self._db.execute(
                f"CREATE INDEX IF NOT EXISTS docutrain_waiting ON {TABLE} (_id)"
                f" WHERE status IN ({READY[0]}, {READY[1]})"
            )
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

    # -- producers -------------------------------------------------------
    def enqueue(self, jobs: Sequence[Job]) -> list[int]:
        self.order.tag(jobs)
        ids = [self._q.put(job.payload()) for job in jobs]
        if ids:
            self._poker.poke()
        return ids

    def enqueue_unique(self, job: Job) -> tuple[int, bool]:
        # BEGIN IMMEDIATE takes the file's write lock before the check, so
        # check and insert are one step for every process that writes this
        # file; the row goes into persist-queue's table exactly as its put()
        # writes it (JSON bytes, status inited).
        if not job.document_id:
            raise ValueError("enqueue_unique needs a job with a document_id")
        with sqlite.transaction(self._db):
            row = self._db.execute(
                f"SELECT _id FROM {TABLE} INDEXED BY docutrain_document"
                f" WHERE {_DOCUMENT_ID} = ? AND status IN ({READY[0]}, {READY[1]}, {RUNNING})"
                " ORDER BY _id LIMIT 1",
                (job.document_id,),
            ).fetchone()
            if row is None:
                self.order.tag([job])
                cursor = self._db.execute(
                    f"INSERT INTO {TABLE} (data, timestamp, status) VALUES (?, ?, ?)",
                    (json_serializer.dumps(job.payload()), time.time(), READY[0]),
                )
        if row is not None:
            return row[0], False
        self._poker.poke()
        return cursor.lastrowid, True

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

    def recover(self) -> int:
        (count,) = self._db.execute(f"SELECT count(*) FROM {TABLE} WHERE status = ?", (RUNNING,)).fetchone()
        if count:
            self._q.resume_unack_tasks()
        return count

    def lease(self, limit: int, now: float) -> list[Job]:
        rows = self._db.execute(
            f"SELECT _id FROM {TABLE} INDEXED BY docutrain_waiting"
            f" WHERE status IN ({READY[0]}, {READY[1]}) AND {_NOT_BEFORE} <= :now"
            f" ORDER BY {self.order.order_by(_ORDER_COLUMNS)} LIMIT :limit",
            {"now": now, "limit": limit},
        ).fetchall()
        leased = []
        for (job_id,) in rows:
            item = self._q.get(id=job_id, raw=True, block=False)
            job = Job.from_payload(item["pqid"], JobState.RUNNING, item["data"])
            job.leased(now)
            self._q.update(job.payload(), id=job.id)
            leased.append(job)
        return leased

    def complete(self, job: Job) -> None:
        job.completed(time.time())
        # Record first, then ack: a crash in between only re-runs an
        # idempotent job, and the record is replaced, not doubled.
        self._db.execute(
            f"INSERT OR REPLACE INTO {DONE_TABLE} (id, data, finished_at) VALUES (?, ?, ?)",
            (job.id, json.dumps(job.payload()), job.finished_at),
        )
        self._q.ack(id=job.id)

    def retry_later(self, job: Job, error: str, not_before: float) -> None:
        job.failed(error, not_before)
        self._q.update(job.payload(), id=job.id)
        self._q.nack(id=job.id)

    def bury(self, job: Job, error: str) -> None:
        job.buried(error, time.time())
        self._q.update(job.payload(), id=job.id)
        self._q.ack_failed(id=job.id)

    def release(self, job: Job, not_before: float | None = None) -> None:
        job.released(not_before)
        self._q.update(job.payload(), id=job.id)
        self._q.nack(id=job.id)

    def housekeep(self) -> None:
        self._q.clear_acked_data(max_delete=None, keep_latest=None)
        self._db.execute(
            f"DELETE FROM {DONE_TABLE} WHERE id <= "
            f"(SELECT id FROM {DONE_TABLE} ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (KEEP_DONE_RECORDS,),
        )

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
        field = _payload_field
        rows = self._db.execute(
            f"SELECT id, 'done', finished_at, finished_at - {field('started_at')},"
            f" coalesce({field('result.pages')}, 0), coalesce({field('result.tokens_embedded')}, 0),"
            # `model` in JobResult records; `embedding_model` in older ones
            f" coalesce({field('result.model')}, {field('result.embedding_model')})"
            f" FROM {DONE_TABLE} WHERE finished_at >= ?"
            " UNION ALL"
            f" SELECT _id, 'dead', {field('finished_at')}, {field('finished_at')} - {field('started_at')},"
            f" 0, 0, NULL FROM {TABLE} WHERE status = {DEAD} AND coalesce({field('finished_at')}, 0) >= ?"
            " ORDER BY 3",
            (since, since),
        )
        return [Finished(*row) for row in rows]

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
        revived = []
        for job_id in job_ids:
            job = self.job(job_id)
            if job is None or job.state != JobState.DEAD:
                continue
            job.revived(time.time())
            self._q.update(job.payload(), id=job_id)
            self._q.nack(id=job_id)  # ack_failed -> ready
            revived.append(job_id)
        if revived:
            self._poker.poke()
        return revived

    def close(self) -> None:
        self._poker.close()
        self._lock.release()
        self._q.close()
        self._db.close()

"""Reading pgmq's tables back: job states, counts and records, in SQL.

What PgmqQueue (queues/pgmq.py) answers readers and operators with, as the
mixin `PgmqReads`: `stats`, jobs by state, id or document, the records of
finished jobs and their totals, and the line (queues/pgmq_order.py). Nothing
here writes. The message fields docutrain adds (pgmq.py's docstring says
why) are read here as SQL expressions.
"""

from __future__ import annotations

from typing import Any, Callable

from docutrain_cli.jobs import STATES, Job, JobState
from docutrain_cli.queues import pgmq_order
from docutrain_cli.queues.base import Ahead, Finished, QueueStats, UserBacklog
from docutrain_cli.queues.order import LeaseOrder, level_of, levels_before, priority_counts
from docutrain_cli.queues.tally import Tally

ATTEMPTS = "(read_ct - coalesce((message->>'uncounted_reads')::int, 0))"
HELD = "(read_ct > coalesce((message->>'returned_at_read')::int, 0))"
DOCUMENT_ID = "(message->>'document_id')"
# Every message we write carries job_id (enqueue adds it in the sending
# transaction); the same expression is indexed by init_queue.
JOB_ID = "((message->>'job_id')::bigint)"
# State of a message in the main queue, by the database clock (which is
# what pgmq.read goes by). A lapsed lease is a started attempt that never
# finished: visible again, so it counts as retrying, as in the local queue.
# A waiting message's state is JobState.waiting(attempts), written in SQL.
STATE = (
    f"CASE WHEN {HELD} AND vt > clock_timestamp() THEN 'running'"
    f" WHEN {ATTEMPTS} <= 0 THEN 'queued' ELSE 'retrying' END"
)


def epoch(value) -> float | None:
    return None if value is None else value.timestamp()


def read_stats(conn, name: str, dead_name: str, now: float) -> QueueStats:
    """Counts per state, the oldest queued job, the next retry and pgmq's own figures."""
    main, archive = f"pgmq.q_{name}", f"pgmq.a_{name}"
    with conn.transaction(), conn.cursor() as cur:  # one snapshot
        by_state = cur.execute(
            f"SELECT state, count(*), min(enqueued_at), min(vt) FROM"
            f" (SELECT {STATE} AS state, enqueued_at, vt FROM {main}) s GROUP BY state"
        ).fetchall()
        (done,) = cur.execute(f"SELECT count(*) FROM {archive}").fetchone()
        metrics = cur.execute(
            "SELECT queue_length, oldest_msg_age_sec, total_messages FROM pgmq.metrics(%s)", (name,)
        ).fetchone()
        dead = cur.execute("SELECT queue_length, oldest_msg_age_sec FROM pgmq.metrics(%s)", (dead_name,)).fetchone()
    counts = {s: 0 for s in STATES}
    oldest = next_retry = None
    for state, n, first_enqueued, first_vt in by_state:
        counts[state] = n
        if state == "queued":
            oldest = first_enqueued
        elif state == "retrying":
            next_retry = first_vt
    counts["done"], counts["dead"] = done, dead[0]
    return QueueStats(
        counts=counts,
        oldest_queued_age=None if oldest is None else max(now - oldest.timestamp(), 0.0),
        next_retry_at=epoch(next_retry),
        runner=None,  # runners are not tracked: any number may lease
        details={
            "backend": "pgmq",
            "queue": name,
            "queue_length": metrics[0],
            "oldest_message_age_seconds": metrics[1],
            "messages_ever_sent": metrics[2],
            "dead_letter_queue": dead_name,
            "dead_letter_length": dead[0],
        },
    )


def main_jobs(cur, table: str, where: str, params: tuple, limit: int | None = None) -> list[Job]:
    """Jobs in the main queue `table` that `where` selects, newest first, in their state now."""
    rows = cur.execute(
        f"SELECT {JOB_ID}, {STATE}, {ATTEMPTS}, message FROM {table} WHERE {where}"
        f" ORDER BY {JOB_ID} DESC" + (" LIMIT %s" if limit else ""),
        params + ((limit,) if limit else ()),
    ).fetchall()
    found = []
    for job_id, state, attempts, message in rows:
        job = Job.from_payload(job_id, JobState(state), message)
        job.attempts = max(attempts, 0)
        found.append(job)
    return found


def archived_jobs(cur, table: str, state: JobState, where: str, params: tuple,
                  limit: int | None = None) -> list[Job]:
    """Jobs in an archive (done) or the dead-letter queue (dead), newest first."""
    rows = cur.execute(
        f"SELECT {JOB_ID}, message FROM {table} WHERE {where}"
        f" ORDER BY {JOB_ID} DESC" + (" LIMIT %s" if limit else ""),
        params + ((limit,) if limit else ()),
    ).fetchall()
    return [Job.from_payload(job_id, state, message) for job_id, message in rows]


_FINISHED_AT = "(message->>'finished_at')::float8"
_SECONDS = f"{_FINISHED_AT} - (message->>'started_at')::float8"
_OWNER_AND_COST = "message->>'user_id', (message->>'cost')::bigint"


def finished_done(archive: str, where: str) -> str:
    """The records of done jobs (the archive) that `where` selects, as `Finished` rows."""
    return (
        f"SELECT {JOB_ID}, 'done', {_FINISHED_AT}, {_SECONDS},"
        " coalesce((message->'result'->>'pages')::int, 0),"
        " coalesce((message->'result'->>'tokens_embedded')::bigint, 0),"
        # `model` in JobResult records; `embedding_model` in older ones
        " coalesce(message->'result'->>'model', message->'result'->>'embedding_model'),"
        f" {_OWNER_AND_COST}"
        f" FROM {archive} WHERE {where}"
    )


def finished_dead(dead_queue: str, where: str) -> str:
    """The records of dead jobs (the dead-letter queue) that `where` selects."""
    return f"SELECT {JOB_ID}, 'dead', {_FINISHED_AT}, {_SECONDS}, 0, 0, NULL, {_OWNER_AND_COST} FROM {dead_queue} WHERE {where}"


def finished_since(archive: str, dead_queue: str) -> str:
    """The records of done and dead jobs finished since %s (twice), as `Finished` rows."""
    since = f"coalesce({_FINISHED_AT}, 0) >= %s"
    return f"{finished_done(archive, since)} UNION ALL {finished_dead(dead_queue, since)} ORDER BY 3"


class PgmqReads:
    """The read side of PgmqQueue, a mixin: it reads the handle's tables
    (`_q` main, `_a` archive, `_dq` dead letters, `_tally`) through its `_db`."""

    name: str
    dead_name: str
    order: LeaseOrder
    _q: str
    _a: str
    _dq: str
    _tally: str
    _db: Callable[[Callable[[Any], Any]], Any]  # run work(conn), reconnecting once

    def stats(self, now: float) -> QueueStats:
        return self._db(lambda conn: read_stats(conn, self.name, self.dead_name, now))

    def jobs(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        def work(conn) -> list[Job]:
            found: list[Job] = []
            with conn.transaction(), conn.cursor() as cur:
                if state in (None, JobState.DONE):
                    found += archived_jobs(cur, self._a, JobState.DONE, "true", (), limit)
                if state in (None, JobState.DEAD):
                    found += archived_jobs(cur, self._dq, JobState.DEAD, "true", (), limit)
                if state not in (JobState.DONE, JobState.DEAD):
                    where, params = (f"{STATE} = %s", (state.value,)) if state else ("true", ())
                    found += main_jobs(cur, self._q, where, params, limit)
            return found

        return sorted(self._db(work), key=lambda j: j.id, reverse=True)[:limit]

    def job(self, job_id: int) -> Job | None:
        def work(conn) -> Job | None:
            with conn.transaction(), conn.cursor() as cur:
                where, params = f"{JOB_ID} = %s", (job_id,)
                found = (
                    main_jobs(cur, self._q, where, params)
                    or archived_jobs(cur, self._dq, JobState.DEAD, where, params)
                    or archived_jobs(cur, self._a, JobState.DONE, where, params)
                )
            return found[0] if found else None

        return self._db(work)

    def finished(self, since: float = 0.0) -> list[Finished]:
        # In SQL: /metrics reads every kept record at each scrape.
        rows = self._db(lambda conn: conn.execute(finished_since(self._a, self._dq), (since, since)).fetchall())
        return [Finished(*row) for row in rows]

    def totals(self) -> Tally:
        def work(conn) -> Tally:
            with conn.transaction(), conn.cursor() as cur:
                # One snapshot: a fold between two reads would count twice.
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                folded = Tally.from_rows(cur.execute(f"SELECT name, label, value FROM {self._tally}").fetchall())
                kept = cur.execute(
                    f"{finished_done(self._a, 'true')} UNION ALL {finished_dead(self._dq, 'true')}"
                ).fetchall()
            return folded.plus(Tally.of(Finished(*row) for row in kept))

        return self._db(work)

    # -- the line (queues/pgmq_order.py) ---------------------------------------
    def ahead_of(self, job: Job, now: float) -> Ahead | None:
        if job.state not in (JobState.QUEUED, JobState.RETRYING):
            return None

        def work(conn) -> Ahead | None:
            turns = conn.execute(f"SELECT level FROM ({pgmq_order.turns(self.order)}) t ORDER BY turn",
                                 {"queue": self.name}).fetchall()
            before = levels_before([level for (level,) in turns], level_of(job))
            row = conn.execute(pgmq_order.ahead(self._q), {"queue": self.name, "job_id": job.id, "before": before}).fetchone()
            return None if row is None else Ahead(*row)

        return self._db(work)

    def waiting_by_user(self) -> list[UserBacklog]:
        rows = self._db(lambda conn: conn.execute(pgmq_order.BY_USER, {"queue": self.name}).fetchall())
        return [UserBacklog(user or None, jobs, int(tokens)) for user, jobs, tokens in rows]

    def depth_by_priority(self) -> dict[str, int]:
        return priority_counts(self._db(lambda conn: conn.execute(pgmq_order.BY_LEVEL, {"queue": self.name}).fetchall()))

    def document_jobs(self, document_id: str, limit: int = 20) -> list[Job]:
        def work(conn) -> list[Job]:
            with conn.transaction(), conn.cursor() as cur:
                where, params = f"{DOCUMENT_ID} = %s", (document_id,)
                return (
                    main_jobs(cur, self._q, where, params, limit)
                    + archived_jobs(cur, self._dq, JobState.DEAD, where, params, limit)
                    + archived_jobs(cur, self._a, JobState.DONE, where, params, limit)
                )

        return sorted(self._db(work), key=lambda j: j.id, reverse=True)[:limit]

"""Reading pgmq's tables back: job states, counts and records, in SQL.

What PgmqQueue (queues/pgmq.py) answers readers and operators with:
`stats`, the jobs of a where-clause in the main queue or an archive, and the
records of finished jobs. The message fields docutrain adds (pgmq.py's
docstring says why) are read here as SQL expressions.
"""

from __future__ import annotations

from docutrain_cli.jobs import STATES, Job, JobState
from docutrain_cli.queues.base import QueueStats

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


def stats(conn, name: str, dead_name: str, now: float) -> QueueStats:
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


def finished(archive: str, dead_queue: str) -> str:
    """The records of done and dead jobs finished since %s (twice), as `Finished` rows."""
    since = f"coalesce({_FINISHED_AT}, 0) >= %s"
    return f"{finished_done(archive, since)} UNION ALL {finished_dead(dead_queue, since)} ORDER BY 3"

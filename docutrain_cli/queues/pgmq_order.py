"""pgmq's lease order: a docutrain-owned ordering table in the same Postgres.

pgmq.read hands out by msg_id only, and its read_grouped_rr (pgmq >= 1.9)
rotates over groups but lets each group have one batch outstanding, so a
user's own jobs would run one at a time. So every message in a main queue
has a row here, written in the transaction that sends it:

    public.docutrain_lease_order
      (queue, msg_id)   the message
      level, vstart     its place in the lease order (queues/order.py)
      entered           when it entered the queue (aging between levels)
      due, held         pgmq's vt, mirrored here, and whether a runner holds it
      cost, user_key    estimated tokens and owner: `status` and `position`

A lease walks `(queue, level, vstart, msg_id) WHERE NOT held` for the levels
in turn (held rows leave that index, so the walk never passes the jobs
running now), locks the first due rows with FOR UPDATE SKIP LOCKED (two
runners never wait for each other and take the next rows of the one order),
and takes those messages from pgmq the way pgmq.read does: vt moved on,
read_ct + 1 (the attempts). A dead runner's messages still come back when
their visibility timeout lapses: a lease also takes held rows whose `due`
has passed, in their place in the order (found by `(queue, due) WHERE held`,
a walk over lapsed leases only). pgmq's vt stays the truth: a row whose message is still hidden is not
taken (and its mirror is put right). The row goes when the message leaves
the main queue (done: archived; dead: moved to the dead-letter queue).

A lease is one statement (the turns of the levels, the rows taken, the
messages hidden, the level clocks of the order's book moved), run in
autocommit inside the queue's lease function `public.docutrain_lease_<queue>`:
one round trip, and no transaction held open across round trips. The
function is there so that the statement is planned once per session rather
than at every lease: planning it took longer than running it (about 1 ms),
and a server-side prepared statement would not survive Supabase's
transaction pooler. `lease_function` says when that plan is kept.
"""

from __future__ import annotations

import hashlib
import re

from docutrain_cli.jobs import PRIORITIES
from docutrain_cli.queues.fair_book import advance_from
from docutrain_cli.queues.order import FIFO, level_sql

TABLE = "public.docutrain_lease_order"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    queue text NOT NULL,
    msg_id bigint NOT NULL,
    level smallint NOT NULL,
    vstart double precision NOT NULL,
    entered timestamptz NOT NULL,
    due timestamptz NOT NULL,
    held boolean NOT NULL DEFAULT false,
    cost bigint NOT NULL,
    user_key text NOT NULL,
    PRIMARY KEY (queue, msg_id));
CREATE INDEX IF NOT EXISTS docutrain_lease_order_next ON {TABLE} (queue, level, vstart, msg_id) WHERE NOT held;
CREATE INDEX IF NOT EXISTS docutrain_lease_order_oldest ON {TABLE} (queue, level, entered) WHERE NOT held;
CREATE INDEX IF NOT EXISTS docutrain_lease_order_lapse ON {TABLE} (queue, due) WHERE held;
"""
# The lease's index walks are the right plan only when the planner knows
# how many rows a queue has (without statistics it sorts all of a level's
# rows: 170 ms a lease at 100,000 queued): a big enqueue refreshes them at
# once rather than waiting for autovacuum.
ANALYZE = f"ANALYZE {TABLE}"
ANALYZE_AFTER = 1_000  # jobs in one enqueue


def rows_from_messages(qtable: str, where: str) -> str:
    """INSERT the ordering rows of the messages of `qtable` that `where`
    selects, read from the messages themselves (the job's tags); params: queue."""
    level = level_sql("(m.message->>'priority')")
    return (
        f"INSERT INTO {TABLE} (queue, msg_id, level, vstart, entered, due, cost, user_key)"
        f" SELECT %(queue)s, m.msg_id, {level},"
        " coalesce((m.message->>'vstart')::float8, 0), m.enqueued_at, m.vt,"
        " coalesce((m.message->>'cost')::bigint, 0), coalesce(m.message->>'user_id', '')"
        f" FROM {qtable} m WHERE {where} ON CONFLICT (queue, msg_id) DO NOTHING"
    )


def backfill(cur, qtable: str, queue: str) -> int:
    """Rows for messages that have none (sent by a docutrain before this table)."""
    cur.execute(
        rows_from_messages(qtable, f"NOT EXISTS (SELECT 1 FROM {TABLE} o WHERE o.queue = %(queue)s"
                                   " AND o.msg_id = m.msg_id)"),
        {"queue": queue},
    )
    return cur.rowcount


def returned(qtable: str) -> str:
    """Messages %(ids)s of queue %(queue)s were given back (a retry, a
    release): nobody holds them, and they are due at pgmq's vt."""
    return (
        f"UPDATE {TABLE} o SET due = m.vt, held = false FROM {qtable} m"
        " WHERE o.queue = %(queue)s AND o.msg_id = ANY(%(ids)s) AND m.msg_id = o.msg_id"
    )


DELETE = f"DELETE FROM {TABLE} WHERE queue = %(queue)s AND msg_id = ANY(%(ids)s)"

# What is due is compared with the statement's start, not clock_timestamp():
# a stable value bounds an index walk, a volatile one only filters it (a
# lease then read every held row four times: 4,000 rows with 1,000 running).
_DUE = "o.due <= statement_timestamp()"
# Rows whose lease lapsed (a dead runner's): due again, though still marked held.
_LAPSED = f"o.queue = %(queue)s AND o.held AND {_DUE}"



def turns(order, max_wait: str | None = None) -> str:
    """A CTE body: the levels with due messages of queue %(queue)s and
    their turn (1 first), by the database clock (queues/order.py `turn_order`;
    `max_wait` as SQL, or the order's own)."""
    now = "extract(epoch FROM clock_timestamp())"
    return (
        "SELECT level, row_number() OVER (ORDER BY "
        f"{order.turn_order('level', 'oldest', now, max_wait)}) AS turn FROM ("
        "SELECT l.level::smallint AS level, extract(epoch FROM least("
        f"(SELECT o.entered FROM {TABLE} o WHERE o.queue = %(queue)s AND o.level = l.level AND NOT o.held"
        f" AND {_DUE} ORDER BY o.entered LIMIT 1),"
        f" (SELECT min(o.entered) FROM {TABLE} o WHERE {_LAPSED} AND o.level = l.level))) AS oldest"
        f" FROM unnest(ARRAY[{', '.join(str(i) for i in range(len(PRIORITIES)))}]) AS l(level)"
        # OFFSET 0 keeps `heads` a subquery: pulled up, its two subqueries were
        # copied into each of the four places `oldest` is used, planned and run there.
        " OFFSET 0) heads WHERE oldest IS NOT NULL"
    )


def _lease() -> str:
    """Take up to %(limit)s due messages of queue %(queue)s in the lease
    order, hiding them for %(vt)s seconds; returns (msg_id, read_ct, message)
    in lease order. Levels take turns by %(max_wait)s; when %(advance)s (an
    order that keeps a book), the level clocks move to the vstarts taken."""
    return f"""
WITH turns AS (
    {turns(FIFO, "%(max_wait)s")}
), waiting AS (
    SELECT c.msg_id, c.vstart, t.turn FROM turns t CROSS JOIN LATERAL (
        SELECT o.msg_id, o.vstart FROM {TABLE} o
        WHERE o.queue = %(queue)s AND o.level = t.level AND NOT o.held AND {_DUE}
        ORDER BY o.vstart, o.msg_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) c
), lapsed AS (
    SELECT o.msg_id, o.vstart, o.level FROM {TABLE} o WHERE {_LAPSED}
    ORDER BY o.due LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT * FROM (SELECT * FROM waiting UNION ALL
                   SELECT l.msg_id, l.vstart, t.turn FROM lapsed l JOIN turns t USING (level)) c
    ORDER BY turn, vstart, msg_id LIMIT %(limit)s
), free AS (
    SELECT m.msg_id FROM %(qtable)s m JOIN chosen c USING (msg_id)
    WHERE m.vt <= clock_timestamp() FOR UPDATE OF m SKIP LOCKED
), taken AS (
    UPDATE %(qtable)s m SET vt = clock_timestamp() + make_interval(secs => %(vt)s), read_ct = m.read_ct + 1
    FROM free f WHERE m.msg_id = f.msg_id
    RETURNING m.msg_id, m.read_ct, m.message, m.vt
), marked AS (
    UPDATE {TABLE} o SET due = coalesce(t.vt, m.vt), held = t.msg_id IS NOT NULL OR m.vt > clock_timestamp()
    FROM chosen c JOIN %(qtable)s m USING (msg_id) LEFT JOIN taken t USING (msg_id)
    WHERE o.queue = %(queue)s AND o.msg_id = c.msg_id
), orphans AS (  -- rows whose message is gone would block the head of the line
    DELETE FROM {TABLE} o USING chosen c
    WHERE o.queue = %(queue)s AND o.msg_id = c.msg_id AND NOT EXISTS (SELECT 1 FROM %(qtable)s m WHERE m.msg_id = c.msg_id)
), clock AS (
    {advance_from(f"SELECT %(queue)s, o.level, max(o.vstart) FROM {TABLE} o JOIN taken t USING (msg_id)"
                  " WHERE %(advance)s AND o.queue = %(queue)s GROUP BY o.level")}
)
SELECT t.msg_id, t.read_ct, t.message FROM taken t JOIN chosen c USING (msg_id) ORDER BY c.turn, c.vstart, c.msg_id"""


def function_name(queue: str) -> str:
    return f"public.docutrain_lease_{queue}"


# The plan is made once per session and kept (force_generic_plan). It must
# then serve the queue at every size it grows to, where only index walks and
# key lookups (nested loops) read a few rows, so the planner is offered
# nothing else: left free, it chose hash joins over whole tables at some
# sizes (4 ms a lease at 30,000 queued, against 0.6 ms).
_ONE_PLAN = (
    "SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off"
    " SET enable_hashjoin = off SET enable_mergejoin = off"
)
# While the statistics give either table fewer rows than this, each lease is
# planned for the tables as they are, as the plain statement was: a plan made
# while a table looked empty cannot tell an index walk from a walk over the
# whole table, and would be kept (47 ms a lease once 20,000 were queued).
KEEP_PLAN_FROM = 1_000
_ARGUMENTS = "integer, integer, double precision, boolean"


def lease_function(qtable: str, queue: str) -> str:
    """CREATE the lease function of `queue` (main queue table `qtable`): its
    arguments are the lease's limit, visibility timeout, max wait and whether
    to advance the book's clocks; the statement is `_lease`'s."""
    # The kept plan sees the queue as a variable, so it is planned for a
    # queue's share of the table: the statistics may not know this queue's
    # name yet (13 ms a lease once it held 30,000 beside another queue).
    spelled = {"queue": "v_queue", "qtable": qtable, "limit": "p_limit", "vt": "p_vt",
               "max_wait": "p_max_wait", "advance": "p_advance"}
    kept = re.sub(r"%\((\w+)\)s", lambda m: spelled[m.group(1)], _lease())
    numbered = {**spelled, "queue": f"'{queue}'", "limit": "$1", "vt": "$2", "max_wait": "$3", "advance": "$4"}
    planned_now = re.sub(r"%\((\w+)\)s", lambda m: numbered[m.group(1)], _lease())
    return f"""CREATE OR REPLACE FUNCTION {function_name(queue)}(
    p_limit integer, p_vt integer, p_max_wait double precision, p_advance boolean)
RETURNS TABLE (msg_id bigint, read_ct integer, message jsonb) LANGUAGE plpgsql {_ONE_PLAN} AS $lease$
#variable_conflict use_column
DECLARE
    v_queue constant text := '{queue}';
BEGIN
    IF (SELECT min(reltuples) FROM pg_class WHERE oid IN ('{TABLE}'::regclass, '{qtable}'::regclass)) >= {KEEP_PLAN_FROM} THEN
        RETURN QUERY {kept};
    ELSE
        RETURN QUERY EXECUTE $planned_now${planned_now}$planned_now$ USING p_limit, p_vt, p_max_wait, p_advance;
    END IF;
END
$lease$"""


def function_version(qtable: str, queue: str) -> str:
    """The comment the lease function of this docutrain carries: a function
    with any other was made by another version and is replaced."""
    return "docutrain lease " + hashlib.sha256(lease_function(qtable, queue).encode()).hexdigest()[:16]


def lease(queue: str) -> str:
    """Call the lease function; params: limit, vt, max_wait, advance."""
    return (f"SELECT msg_id, read_ct, message FROM {function_name(queue)}("
            "%(limit)s::integer, %(vt)s::integer, %(max_wait)s::float8, %(advance)s::boolean)")


def ensure_tables(conn, qtable: str, queue: str) -> None:
    """Create the ordering table and the order's book if missing, (re)make
    the queue's lease function, and give every message of `queue` its row.
    Safe to run again, and from several processes at once (an advisory lock
    makes them take turns)."""
    from docutrain_cli.queues.fair_book import POSTGRES_SCHEMA

    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('docutrain:lease-order-tables', 0))")
        cur.execute(SCHEMA)
        cur.execute(POSTGRES_SCHEMA)
        cur.execute(lease_function(qtable, queue))
        cur.execute(f"COMMENT ON FUNCTION {function_name(queue)}({_ARGUMENTS})"
                    f" IS '{function_version(qtable, queue)}'")
        backfill(cur, qtable, queue)
        cur.execute(ANALYZE)


def needs_rows(conn, qtable: str, queue: str) -> bool:
    """Whether messages of `queue` lack their rows (sent by a docutrain before
    this table): its oldest message tells, as every later one was sent with its row."""
    (missing,) = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM (SELECT msg_id FROM {qtable} ORDER BY msg_id LIMIT 1) m"
        f" WHERE NOT EXISTS (SELECT 1 FROM {TABLE} o WHERE o.queue = %s AND o.msg_id = m.msg_id))",
        (queue,),
    ).fetchone()
    return missing


def forget_if_present(conn, queue: str) -> None:
    """Drop what the order kept for `queue` (for a queue made afresh under an old name)."""
    with conn.transaction(), conn.cursor() as cur:
        for table in (TABLE, "public.docutrain_fair_clock", "public.docutrain_fair_user"):
            if cur.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]:
                cur.execute(f"DELETE FROM {table} WHERE queue = %s", (queue,))


def ahead(qtable: str) -> str:
    """(jobs, tokens) waiting and due before job %(job_id)s under the levels
    that go before its own (%(before)s), and the tokens of the jobs held now
    (a retry not due yet starts before nobody until it is due)."""
    return f"""
WITH mine AS (
    SELECT o.level, o.vstart, o.msg_id FROM {TABLE} o JOIN {qtable} m USING (msg_id)
    WHERE o.queue = %(queue)s AND (m.message->>'job_id')::bigint = %(job_id)s AND NOT o.held
)
SELECT count(*) FILTER (WHERE NOT o.held AND {_DUE}),
       coalesce(sum(o.cost) FILTER (WHERE NOT o.held AND {_DUE}), 0)::bigint,
       coalesce(sum(o.cost) FILTER (WHERE o.held), 0)::bigint
FROM mine, {TABLE} o
WHERE o.queue = %(queue)s AND (o.held OR o.level = ANY(%(before)s::int[])
      OR (o.level = mine.level AND (o.vstart, o.msg_id) < (mine.vstart, mine.msg_id)))
HAVING EXISTS (SELECT 1 FROM mine)
"""


# Waiting jobs (not held by a runner) per user and per level.
BY_USER = (f"SELECT user_key, count(*), coalesce(sum(cost), 0) AS tokens FROM {TABLE}"
           " WHERE queue = %(queue)s AND NOT held GROUP BY user_key ORDER BY tokens DESC, user_key")
BY_LEVEL = f"SELECT level, count(*) FROM {TABLE} WHERE queue = %(queue)s AND NOT held GROUP BY level"

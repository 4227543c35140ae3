"""The pgmq lease function (queues/pgmq_order.py): made again when missing
or made by another version, and a plan that reads a few rows whatever the
queue held when it was made. Real PostgreSQL (tests/pg.py).

Rows read are counted by PostgreSQL itself (pg_stat_xact_user_tables, in
the lease's own transaction), not timed: a plan that walks a whole table
reads every row of it."""

from __future__ import annotations

import time

import psycopg
import pytest

import pg
from docutrain_cli.jobs import Job
from docutrain_cli.queues import pgmq_order
from docutrain_cli.queues.fair import FairShare
from docutrain_cli.queues.pgmq import PgmqQueue
from docutrain_cli.queues.pgmq_setup import bundled_sql, init_queue

pytestmark = pytest.mark.postgres


@pytest.fixture
def quiet_db(pg_admin):
    """A database of its own, where only the test makes statistics (autovacuum off)."""
    with pg.fresh_database(*pg_admin) as url:
        pg.admin_execute(url, bundled_sql()[0].read_text(encoding="utf-8"))
        yield url


def make_queue(url: str, name: str) -> None:
    init_queue(url, name)
    pg.admin_execute(url, *(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"
                            for table in (pgmq_order.TABLE, f"pgmq.q_{name}")))


def fill(url: str, name: str, n: int, start: int = 0) -> None:
    """Enqueue in calls of 500, each too small to refresh the statistics (ANALYZE_AFTER)."""
    with PgmqQueue(url, name, order=FairShare(estimate=lambda job: 1000)) as queue:
        for first in range(start, start + n, 500):
            queue.enqueue([Job(id=0, source=f"/d/{name}{i}.pdf", user_id=f"u{i % 7}", cost=1000,
                               priority=("high", "normal", "low")[i % 3]) for i in range(first, first + 500)])


def lease_sql(name: str) -> str:
    return f"SELECT msg_id FROM {pgmq_order.function_name(name)}(1, 60, 900, true)"


def rows_read_by_a_lease(conn, name: str) -> int:
    with conn.transaction():
        assert len(conn.execute(lease_sql(name)).fetchall()) == 1
        (rows,) = conn.execute(
            "SELECT coalesce(sum(seq_tup_read + idx_tup_fetch), 0) FROM pg_stat_xact_user_tables"
            " WHERE relid IN (%s::regclass, %s::regclass)", (pgmq_order.TABLE, f"pgmq.q_{name}"),
        ).fetchone()
    return rows


def test_a_lease_planned_while_the_queue_was_empty_reads_a_few_rows_once_it_fills(quiet_db):
    make_queue(quiet_db, "filling")
    pg.admin_execute(quiet_db, f"ANALYZE {pgmq_order.TABLE}", "ANALYZE pgmq.q_filling")  # empty
    with psycopg.connect(quiet_db, autocommit=True) as runner:
        assert runner.execute(lease_sql("filling")).fetchall() == []  # its plans are made now, on nothing
        fill(quiet_db, "filling", 6_000)
        assert rows_read_by_a_lease(runner, "filling") < 100


def test_a_kept_plan_reads_a_few_rows_of_a_queue_the_statistics_do_not_know(quiet_db):
    """The table's statistics hold another queue's rows only; this queue grows after its plan is kept."""
    make_queue(quiet_db, "known")
    make_queue(quiet_db, "newer")
    fill(quiet_db, "known", 3_000)
    pg.admin_execute(quiet_db, f"ANALYZE {pgmq_order.TABLE}")
    fill(quiet_db, "newer", 2_000)
    pg.admin_execute(quiet_db, "ANALYZE pgmq.q_newer")  # both tables now big enough to keep a plan
    with psycopg.connect(quiet_db, autocommit=True) as runner:
        assert len(runner.execute(lease_sql("newer")).fetchall()) == 1
        fill(quiet_db, "newer", 8_000, start=2_000)
        assert rows_read_by_a_lease(runner, "newer") < 100


def test_opening_a_queue_makes_its_lease_function_again_when_missing_or_older(pg_url, pgmq_queue_name):
    function = pgmq_order.function_name(pgmq_queue_name)
    with PgmqQueue(pg_url, pgmq_queue_name) as queue:
        ids = queue.enqueue([Job(id=0, source=f"/data/{i}.pdf") for i in range(2)])
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as an older docutrain left it
        conn.execute(
            f"CREATE OR REPLACE FUNCTION {function}(p_limit integer, p_vt integer,"
            " p_max_wait double precision, p_advance boolean)"
            " RETURNS TABLE (msg_id bigint, read_ct integer, message jsonb)"
            " LANGUAGE sql AS 'SELECT 1::bigint, 1, ''{}''::jsonb WHERE false'"
        )
        conn.execute(f"COMMENT ON FUNCTION {function}(integer, integer, double precision, boolean)"
                     " IS 'docutrain lease older'")
    with PgmqQueue(pg_url, pgmq_queue_name) as queue:
        assert [j.id for j in queue.lease(1, time.time())] == ids[:1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP FUNCTION {function}")
    with PgmqQueue(pg_url, pgmq_queue_name) as queue:
        assert [j.id for j in queue.lease(1, time.time())] == ids[1:]

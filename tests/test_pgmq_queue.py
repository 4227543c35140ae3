"""What only the pgmq backend does: shared leasing, visibility timeouts,
`docutrain queue init`, and its errors. Real PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time

import psycopg
import pytest

import pg
from conftest import wait_for
from docutrain_cli.config import Settings, redact_url
from docutrain_cli.errors import ConfigError, DocutrainError, ServiceUnavailableError
from docutrain_cli.jobs import Job, JobResult, JobState
from docutrain_cli.queues import open_queue
from docutrain_cli.queues.pgmq import PgmqQueue
from docutrain_cli.queues.pgmq_setup import ENABLE_HINT, init_queue, looks_like_supabase


def make_jobs(n: int) -> list[Job]:
    return [Job(id=0, source=f"/data/{i}.pdf", sha256=f"sha-{i}") for i in range(n)]


@pytest.fixture
def open_pgmq(pg_url, pgmq_queue_name):
    handles = []

    def opener(visibility_timeout: float = 30.0) -> PgmqQueue:
        handles.append(PgmqQueue(pg_url, pgmq_queue_name, visibility_timeout))
        return handles[-1]

    yield opener
    for handle in handles:
        handle.close()


# -- no server needed ------------------------------------------------------------
def test_importing_the_backend_does_not_import_psycopg():
    code = "import sys, docutrain_cli.queues.pgmq, docutrain_cli.cli; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unreachable_database_is_one_line_without_the_password():
    url = "postgresql://alice:hunter2secret@127.0.0.1:1/docs"  # nothing listens on port 1
    with pytest.raises(ServiceUnavailableError) as err:
        PgmqQueue(url)
    message = str(err.value)
    assert "hunter2secret" not in message and "\n" not in message
    assert message.startswith("cannot reach the queue database postgresql://alice:…@127.0.0.1:1/docs")
    with pytest.raises(ServiceUnavailableError) as err:
        init_queue(url)
    assert "hunter2secret" not in str(err.value)


def test_a_password_in_the_urls_query_is_never_shown():
    # libpq takes ?password= (and ?sslpassword=) as well as user:password@
    url = "postgresql://alice@127.0.0.1:1/docs?sslmode=disable&password=qs-hunter2&sslpassword=qs-key"
    with pytest.raises(ServiceUnavailableError) as err:
        PgmqQueue(url)
    message = str(err.value)
    assert "qs-hunter2" not in message and "qs-key" not in message
    assert "postgresql://alice@127.0.0.1:1/docs?sslmode=disable&password=…&sslpassword=…" in message
    assert redact_url("postgresql://a:b@h/d?PassWord=c#x") == "postgresql://a:…@h/d?PassWord=…#x"


@pytest.mark.parametrize("name", ["", "Docs", "has-dash", "x" * 43, "a;drop"])
def test_queue_names_pgmq_cannot_take_are_refused(name):
    with pytest.raises(ConfigError, match="queue_name"):
        PgmqQueue("postgresql://u@127.0.0.1:1/x", name)


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql://postgres:pw@db.abcdefgh.supabase.co:5432/postgres", True),
        ("postgresql://postgres.abcdefgh:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres", True),
        ("postgres://db.example.com/postgres?host=x.supabase.co", False),
        ("postgresql://user@127.0.0.1/postgres", False),
    ],
)
def test_looks_like_supabase(url, expected):
    assert looks_like_supabase(url) is expected


# -- against PostgreSQL --------------------------------------------------------------
@pytest.mark.postgres
def test_open_queue_picks_pgmq_for_postgres_urls(pg_url, pgmq_queue_name):
    settings = Settings(queue=pg_url, queue_name=pgmq_queue_name, visibility_timeout=7)
    with open_queue(settings) as queue:
        assert isinstance(queue, PgmqQueue)
        assert (queue.kind, queue.exclusive, queue.name, queue.visibility_timeout) == ("pgmq", False, pgmq_queue_name, 7)


@pytest.mark.postgres
def test_missing_queue_names_queue_init(pg_url):
    with pytest.raises(ConfigError, match=r"queue 'nosuchqueue' does not exist .*run `docutrain queue init`"):
        PgmqQueue(pg_url, "nosuchqueue")


@pytest.mark.postgres
def test_init_queue_installs_pgmq_then_is_idempotent(pg_admin):
    with pg.fresh_database(*pg_admin) as url:
        with pytest.raises(ConfigError, match=r"pgmq is not installed .*run `docutrain queue init`"):
            PgmqQueue(url)
        first = init_queue(url)
        assert "installed pgmq" in first and "SQL-only" in first
        assert "queue docutrain created" in first and "queue docutrain_dead created" in first
        second = init_queue(url)
        assert "already present" in second and "queue docutrain already there" in second
        with PgmqQueue(url) as queue:
            (job_id,) = queue.enqueue(make_jobs(1))
            assert queue.job(job_id).state == JobState.QUEUED
        assert "installed" not in init_queue(url, "second")  # another queue, same pgmq


@pytest.mark.postgres
def test_init_queue_explains_how_to_enable_pgmq_when_it_may_not_install(pg_admin):
    admin_url, _ = pg_admin
    role = f"docutrain_test_{secrets.token_hex(4)}"
    pg.admin_execute(admin_url, f'CREATE ROLE "{role}" LOGIN')
    try:
        with pg.fresh_database(*pg_admin) as url:
            as_role = pg.url(role, url.rsplit("/", 1)[1])
            with pytest.raises(DocutrainError) as err:
                init_queue(as_role)
            message = str(err.value)
            assert message.startswith("could not install pgmq in ") and "\n" not in message
            assert ENABLE_HINT in message and "Integrations -> Queues" in message
    finally:
        pg.admin_execute(admin_url, f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.postgres
def test_a_message_is_leased_by_one_handle_at_a_time(open_pgmq):
    handles = [open_pgmq() for _ in range(4)]
    ids = handles[0].enqueue(make_jobs(200))
    seen: list[int] = []
    while True:
        got = [j.id for h in handles for j in h.lease(7, time.time())]
        if not got:
            break
        seen += got
    assert sorted(seen) == ids  # every job once, none twice


@pytest.mark.postgres
def test_extend_lease_keeps_a_long_job_hidden(open_pgmq):
    runner, other = open_pgmq(visibility_timeout=2), open_pgmq(visibility_timeout=2)
    (job_id,) = runner.enqueue(make_jobs(1))
    (job,) = runner.lease(1, time.time())
    for _ in range(4):  # 2.4 s in all, past the 2 s timeout; each extension has 1.4 s to spare
        time.sleep(0.6)
        runner.extend_lease([job], 2)
        assert other.lease(1, time.time()) == []
        assert other.job(job_id).state == JobState.RUNNING
    # Stopped extending: it comes back.
    (again,) = wait_for(lambda: other.lease(1, time.time()), timeout=10, what="the lease to lapse")
    assert (again.id, again.attempts) == (job_id, 2)


@pytest.mark.postgres
def test_a_lapsed_lease_does_not_overwrite_the_new_owner(open_pgmq):
    slow, fast = open_pgmq(visibility_timeout=1), open_pgmq(visibility_timeout=30)
    (job_id,) = slow.enqueue(make_jobs(1))
    (stale,) = slow.lease(1, time.time())
    (owned,) = wait_for(lambda: fast.lease(1, time.time()), timeout=10, what="the slow lease to lapse")
    assert owned.attempts == 2
    slow.bury(stale, "slow runner gave up")  # too late: fast owns it now
    slow.retry_later(stale, "late", time.time() + 3600)
    assert fast.job(job_id).state == JobState.RUNNING
    owned.result = JobResult(chunks=3)
    fast.complete(owned)
    done = fast.job(job_id)
    assert (done.state, done.result, done.errors) == (JobState.DONE, JobResult(chunks=3), [])
    assert fast.stats(time.time()).counts["dead"] == 0


@pytest.mark.postgres
def test_stats_show_pgmq_metrics(open_pgmq):
    queue = open_pgmq()
    queue.enqueue(make_jobs(3))
    (job,) = queue.lease(1, time.time())
    queue.bury(job, "bad")
    details = queue.stats(time.time()).details
    assert details["backend"] == "pgmq"
    assert details["queue_length"] == 2 and details["dead_letter_length"] == 1
    assert details["messages_ever_sent"] == 3
    assert details["oldest_message_age_seconds"] is not None
    assert details["dead_letter_queue"] == queue.name + "_dead"


@pytest.mark.postgres
def test_messages_carry_the_stable_job_id(open_pgmq, pg_url):
    queue = open_pgmq()
    ids = queue.enqueue(make_jobs(2))
    (job,) = queue.lease(1, time.time())
    queue.bury(job, "bad")
    assert queue.revive([ids[0]]) == [ids[0]]
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            f"SELECT msg_id, message->>'job_id' FROM pgmq.q_{queue.name} ORDER BY msg_id"
        ).fetchall()
    assert [int(j) for _, j in rows] == sorted(ids, key=lambda i: i != ids[1])  # ids[1] first, then revived ids[0]
    assert rows[-1][0] > max(ids)  # a new message, the old id


@pytest.mark.postgres
def test_a_dropped_connection_is_reopened(open_pgmq, pg_url):
    queue = open_pgmq()
    (job_id,) = queue.enqueue(make_jobs(1))
    pid = queue._conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert queue.job(job_id).state == JobState.QUEUED
    assert queue._conn.info.backend_pid != pid


@pytest.mark.postgres
def test_a_job_leased_through_one_handle_can_be_settled_through_another(open_pgmq):
    runner, operator = open_pgmq(), open_pgmq()
    (job_id,) = runner.enqueue(make_jobs(1))
    (job,) = runner.lease(1, time.time())
    operator.retry_later(job, "flaky", time.time() - 1)
    assert runner.job(job_id).state == JobState.RETRYING
    (job,) = runner.lease(1, time.time())
    operator.complete(job)
    assert runner.job(job_id).state == JobState.DONE


def test_messages_an_older_docutrain_sent_get_their_place_in_line(pg_url, pgmq_queue_name):
    """Queued before the ordering table existed: given rows when the queue is opened, and leased."""
    from docutrain_cli.queues import pgmq_order
    from docutrain_cli.queues.pgmq import PgmqQueue

    with PgmqQueue(pg_url, pgmq_queue_name) as queue:
        ids = queue.enqueue([Job(id=0, source=f"/data/old{i}.pdf") for i in range(3)])
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as if sent before this table
        conn.execute(f"DELETE FROM {pgmq_order.TABLE} WHERE queue = %s", (pgmq_queue_name,))
    with PgmqQueue(pg_url, pgmq_queue_name) as queue:
        assert [j.id for j in queue.lease(5, time.time())] == ids

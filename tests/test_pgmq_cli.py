"""The operator's commands work on a pgmq queue as on the local file:
enqueue, run, status, jobs, jobs show, retry. Real subprocesses, real
PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.postgres


@pytest.fixture
def pgmq_cli(docutrain, pg_url, pgmq_queue_name):
    docutrain.env.update(
        DOCUTRAIN_QUEUE=pg_url,
        DOCUTRAIN_QUEUE_NAME=pgmq_queue_name,
        DOCUTRAIN_PROCESSOR="tests.processors:by_name",
        DOCUTRAIN_VISIBILITY_TIMEOUT="5s",
    )
    return docutrain


def test_enqueue_run_jobs_retry_status_on_pgmq(pgmq_cli, tmp_path):
    d = pgmq_cli
    for name in ("good-1.txt", "good-2.txt", "permanent-1.txt"):
        (tmp_path / name).write_text(name)
    queued = d("enqueue", "good-1.txt", "good-2.txt", "permanent-1.txt", "--json")
    assert queued.returncode == 0, queued.stderr
    again = d("enqueue", "good-1.txt", "--json")  # same content already queued
    assert json.loads(again.stdout)["duplicates"], again.stdout

    status = d.status()
    assert (status["queued"], status["done"], status["dead"]) == (3, 0, 0)

    run = d("run", "--workers", "2", "--drain", "--json")
    assert run.returncode == 3, run.stderr  # one job dead on purpose
    summary = json.loads(run.stdout)
    assert (summary["done"], summary["dead"]) == (2, 1)

    dead = json.loads(d("jobs", "--state", "dead", "--json").stdout)
    assert [j["source"].rsplit("/", 1)[1] for j in dead] == ["permanent-1.txt"]
    dead_id = dead[0]["id"]
    shown = json.loads(d("jobs", "show", str(dead_id), "--json").stdout)
    assert shown["state"] == "dead" and "not a PDF" in shown["errors"][-1] and shown["attempts"] == 1

    done = json.loads(d("jobs", "--state", "done", "--json").stdout)
    assert len(done) == 2 and all((j["result"]["pages"], j["result"]["chunks"]) == (1, 1) for j in done)
    shown_done = d("jobs", "show", str(done[0]["id"]))
    assert shown_done.returncode == 0 and "done" in shown_done.stdout

    retried = d("retry", str(dead_id), str(done[0]["id"]), "--json")
    assert retried.returncode == 3  # the done one is refused
    assert json.loads(retried.stdout) == {"retried": [dead_id], "refused": [done[0]["id"]]}
    back = json.loads(d("jobs", "show", str(dead_id), "--json").stdout)
    assert (back["state"], back["attempts"]) == ("queued", 0)

    status = d.status()
    assert (status["queued"], status["done"], status["dead"]) == (1, 2, 0)
    assert d("jobs", "show", "999999").returncode == 2


def test_a_queue_that_was_never_initialised_names_queue_init(docutrain, pg_url):
    docutrain.env.update(DOCUTRAIN_QUEUE=pg_url, DOCUTRAIN_QUEUE_NAME="never_created")
    result = docutrain("status")
    assert result.returncode != 0
    assert "docutrain queue init" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_postgres_exits_5_without_the_password(docutrain):
    docutrain.env.update(DOCUTRAIN_QUEUE="postgresql://bob:pa55word-xyz@127.0.0.1:1/docs")
    result = docutrain("status")
    assert result.returncode == 5, result.stderr
    assert "pa55word-xyz" not in result.stderr + result.stdout
    assert "cannot reach the queue database postgresql://bob:…@127.0.0.1:1/docs" in result.stderr

"""One rate budget for every machine on a pgmq queue: the bucket is a row in
the same PostgreSQL, so two runners (two "machines") share one limit.
Real PostgreSQL on 127.0.0.1:5432 (skips without it; fails when CI is set)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import pdfs
from budget_line import answered
from test_pgmq_runners import Fleet

from docutrain_cli.ratelimit.budget import RateBudget
from docutrain_cli.ratelimit.postgres import PostgresBudgetStore

pytestmark = pytest.mark.postgres

KEY = "sk-proj-shared-budget-0123456789abcdef"


def test_two_processes_queue_their_reservations_in_one_row(pg_url, tmp_path):
    key = f"test-{tmp_path.name}"
    budget = answered(RateBudget(PostgresBudgetStore(pg_url), key, tpm=6000, margin=0.0))  # 100 tokens a second
    assert budget.reserve(6000).wait == 0  # the first minute's burst
    assert budget.reserve(100).wait == pytest.approx(1, abs=0.1)
    # Another process, its own connection: it queues behind the first one's turn.
    code = (
        "import sys\n"
        "from docutrain_cli.ratelimit.budget import RateBudget\n"
        "from docutrain_cli.ratelimit.postgres import PostgresBudgetStore\n"
        f"b = RateBudget(PostgresBudgetStore({pg_url!r}), {key!r}, tpm=6000, margin=0.0)\n"
        "print(b.reserve(100).wait)\n"
    )
    started = time.monotonic()
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    # Two turns ahead of it, less what refilled while that process started.
    assert 2 - (time.monotonic() - started) - 0.1 <= float(other.stdout) <= 2.1
    assert budget.snapshot()["tokens_per_minute_limit"] == 6000


def test_worker_processes_on_two_machines_share_the_row_and_stay_under_the_limit(pg_url, openai_standin):
    from budget_workers import run_workers

    # As in test_ratelimit's process test, but the budget is the Postgres row.
    openai_standin.limit(tpm=6_000, level=0.05)
    run_workers(openai_standin.base_url, [("postgres", pg_url)] * 6, requests=3, words=50)
    assert openai_standin.successes == 18 and openai_standin.rate_limited <= 1


def test_two_runners_on_one_queue_share_one_limit(tmp_path, pg_url, pgmq_queue_name, openai_standin):
    # Each runner alone would think it may use the whole limit; together
    # they must not, or they get refused. The account's bucket is a tenth
    # full, so most of the ~10,000 tokens must be paced at 60,000 a minute.
    openai_standin.limit(tpm=60_000, latency=0.05, level=0.1)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for i in range(12):
        pdfs.multi_page(uploads / f"doc{i:03}.pdf", pages=5, seed=i + 1)
    fleet = Fleet(tmp_path, pg_url, pgmq_queue_name, OPENAI_API_KEY=KEY, OPENAI_BASE_URL=openai_standin.base_url)
    try:
        assert fleet("enqueue", "uploads").returncode == 0
        runners = [fleet.start("run", "--workers", "2", "--drain", "--json") for _ in range(2)]
        summaries = []
        for proc in runners:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            summaries.append(json.loads(out))
    finally:
        fleet.stop_all()
    assert sum(s["done"] for s in summaries) == 12 and all(s["dead"] == 0 for s in summaries)
    assert all(s["done"] for s in summaries), "one runner did everything: not a test of sharing"
    assert openai_standin.rate_limited <= 2  # paced, not refused
    status = json.loads(fleet("status", "--json").stdout)
    [budget] = [b for b in status["embedding_budget"] if openai_standin.base_url.rstrip("/") in b["key"]]
    assert budget["tokens_total"] == openai_standin.tokens and budget["limit_source"] == "headers"

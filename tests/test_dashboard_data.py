"""What the dashboard and /metrics read: the workers file (real processes,
real kill -9), per-minute throughput, search, login sessions, and the
Prometheus collector on pgmq compared with `status --json`'s object."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness import ROOT, child_env
from docutrain_cli.run.activity import WorkerBoard
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.queues.base import Finished
from docutrain_cli.serve.overview import bar_chart, chart_window, matches, throughput
from docutrain_cli.serve.guard import host_is_loopback
from docutrain_cli.serve.session import Sessions, safe_next



def test_a_worker_killed_mid_job_disappears_from_the_board(tmp_path):
    store = tmp_path / "docutrain.db"
    code = (
        "import sys, time\n"
        "from docutrain_cli.run import activity\n"
        "from docutrain_cli.jobs import Job\n"
        f"activity.start_worker({str(store)!r})\n"
        "activity.current().job_started(Job(id=7, source='/data/a.pdf', document_id='d7'))\n"
        "print('busy', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env=child_env(),
    )
    try:
        assert proc.stdout.readline().strip() == "busy"
        board = WorkerBoard.for_store(store)
        (worker,) = board.workers()
        assert (worker.pid, worker.job_id, worker.source, worker.document_id, worker.busy) == (
            proc.pid, 7, "/data/a.pdf", "d7", True
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert board.workers() == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_reused_pid_is_not_taken_for_the_old_worker(tmp_path):
    board = WorkerBoard.for_store(tmp_path / "docutrain.db")
    board.worker_started()  # this process, alive
    assert [w.pid for w in board.workers()] == [os.getpid()]
    # the same pid, but a process that started at another time
    board.conn.execute("UPDATE workers SET proc_start = '1'")
    assert board.workers() == []


def test_a_worker_goes_idle_after_its_job_and_counts_it(tmp_path):
    board = WorkerBoard.for_store(tmp_path / "docutrain.db")
    board.worker_started()
    board.job_started(Job(id=3, source="/x.pdf"))
    board.job_finished()
    (worker,) = board.workers()
    assert (worker.busy, worker.jobs_done, worker.job_id) == (False, 1, None)


def test_a_worker_shows_what_its_job_reported_and_only_for_that_job(tmp_path):
    board = WorkerBoard.for_store(tmp_path / "docutrain.db")
    board.worker_started()
    board.job_started(Job(id=3, source="/scan.pdf"))
    board.job_progress(3, "OCR page 3/40")
    (worker,) = board.workers()
    assert (worker.job_id, worker.progress) == (3, "OCR page 3/40")
    board.job_finished()
    board.job_started(Job(id=4, source="/next.pdf"))
    (worker,) = board.workers()
    assert (worker.job_id, worker.progress) == (4, None)  # job 3's progress is not job 4's


def test_a_file_from_an_older_version_gains_the_progress_table(tmp_path):
    import sqlite3

    path = tmp_path / "docutrain.db.workers"
    with sqlite3.connect(path) as conn:  # the workers table as it was, without progress
        conn.execute("CREATE TABLE workers (host TEXT NOT NULL, pid INTEGER NOT NULL, proc_start TEXT,"
                     " started_at REAL NOT NULL, jobs_done INTEGER NOT NULL DEFAULT 0, job_id INTEGER,"
                     " source TEXT, document_id TEXT, job_since REAL, PRIMARY KEY (host, pid))")
    board = WorkerBoard.for_store(tmp_path / "docutrain.db")
    board.worker_started()
    board.job_started(Job(id=1, source="/a.pdf"))
    board.job_progress(1, "OCR page 1/2")
    assert [w.progress for w in board.workers()] == ["OCR page 1/2"]


def test_the_charts_window_is_the_shortest_that_holds_the_data():
    now = 1_000_000 * 60 + 30.0

    def done(seconds_ago: float) -> Finished:
        return Finished(1, "done", now - seconds_ago, 1.0, 1, 1, "m")

    assert chart_window([], now) == 5  # nothing yet: "last 5 minutes", not an empty hour
    assert chart_window([done(20)], now) == 5
    assert chart_window([done(20), done(4 * 60)], now) == 5
    assert chart_window([done(20), done(6 * 60)], now) == 15
    assert chart_window([done(40 * 60)], now) == 60
    minutes = throughput([done(20)], now, chart_window([done(20)], now))
    chart = bar_chart("Jobs", "jobs", minutes, lambda m: m.done)
    assert (len(chart.bars), chart.window, chart.window_label, chart.total) == (5, 5, "last 5 minutes", 1)
    assert chart.bars[-1].width == pytest.approx(chart.WIDTH / 5 - 1)  # a fifth of the chart, not a sixtieth


def test_throughput_buckets_the_last_hour_by_minute():
    now = 1_000_000 * 60 + 30.0  # 30 s into a minute
    records = [
        Finished(1, "done", now - 5, 1.0, 10, 1000, "m"),
        Finished(2, "done", now - 20, 1.0, 5, 500, "m"),
        Finished(3, "dead", now - 40, 1.0, 0, 0, None),  # the minute before
        Finished(4, "done", now - 3600 - 60, 1.0, 99, 99, "m"),  # too old
    ]
    minutes = throughput(records, now)
    assert len(minutes) == 60 and minutes[-1].start == now - 30
    last, before = minutes[-1], minutes[-2]
    assert (last.done, last.dead, last.pages, last.tokens) == (2, 0, 15, 1500)
    assert (before.done, before.dead) == (0, 1)
    assert sum(m.done for m in minutes) == 2
    chart = bar_chart("t", "tokens", minutes, lambda m: m.tokens, limit=4000)
    assert chart.total == 1500 and chart.peak == 5000  # a readable top above the limit
    assert chart.bars[-1].height == pytest.approx(chart.HEIGHT * 1500 / 5000)
    assert chart.limit_y == pytest.approx(chart.HEIGHT * (1 - 4000 / 5000))


def test_search_matches_file_document_id_or_job_id():
    job = Job(id=42, source="/uploads/Invoice-March.pdf", document_id="doc-9f3")
    assert matches(job, "invoice") and matches(job, "9F3") and matches(job, "42") and matches(job, " ")
    assert not matches(job, "4")  # a job id matches whole, not by its digits
    assert not matches(job, "april")


def test_sessions_expire_and_refuse_tampering():
    sessions = Sessions("secret-token")
    now = 1_700_000_000
    cookie = sessions.new_session(now)
    assert "secret-token" not in cookie
    assert sessions.session_ok(cookie, now + 60)
    assert not sessions.session_ok(cookie, now + 13 * 3600)  # expired
    issued, _, signature = cookie.partition(".")
    assert not sessions.session_ok(f"{int(issued) + 1000}.{signature}", now)  # moved forward
    assert not Sessions("another-token").session_ok(cookie, now + 60)  # token changed
    assert sessions.csrf_ok(cookie, sessions.csrf_for(cookie))
    assert not sessions.csrf_ok(cookie, sessions.csrf_for(sessions.new_session(now + 1)))
    assert sessions.bearer_ok("Bearer secret-token") and not sessions.bearer_ok("Bearer secret")
    assert not Sessions(None).session_ok(cookie)


def test_loopback_hosts_and_safe_redirects():
    for host in ("127.0.0.1:8080", "localhost", "[::1]:80", "LOCALHOST:1"):
        assert host_is_loopback(host), host
    for host in ("evil.example", "127.0.0.1.evil.example:80", "", None, "[::1]x", "127.0.0.1:８０"):
        assert not host_is_loopback(host), host
    assert host_is_loopback("localhost:8080", 8080) and host_is_loopback("[::1]", 80)
    assert not host_is_loopback("localhost:8081", 8080) and not host_is_loopback("localhost", 8080)
    assert safe_next("/jobs/3?x=1") == "/jobs/3?x=1"
    for bad in ("https://evil.example", "//evil.example", "/\\evil.example", None, "jobs"):
        assert safe_next(bad) == "/"


@pytest.mark.postgres
def test_metrics_on_pgmq_match_the_status_object(pg_url, pgmq_queue_name, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from docutrain_cli.config import load_settings
    from docutrain_cli.queues import open_queue
    from docutrain_cli.serve import metrics
    from docutrain_cli.status.reports import status_report

    settings = load_settings(
        {"queue": pg_url, "queue_name": pgmq_queue_name, "store": str(tmp_path / "docutrain.db")}
    )
    with open_queue(settings) as queue:
        ids = queue.enqueue([Job(id=0, source=f"/d/{i}.pdf", sha256=f"s{i}") for i in range(4)])
        leased = {j.id: j for j in queue.lease(3, time.time())}
        leased[ids[0]].result = JobResult(pages=2, tokens_embedded=300, model="text-embedding-3-small")
        queue.complete(leased[ids[0]])
        queue.bury(leased[ids[1]], "corrupt")
        report = status_report(settings, queue.stats(time.time()))
    body, _ = metrics.render(metrics.registry_for(settings))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    for state in ("queued", "running", "retrying", "done", "dead"):
        assert samples[("docutrain_jobs", (("state", state),))] == report[state]
    assert (report["queued"], report["running"], report["done"], report["dead"]) == (1, 1, 1, 1)
    assert samples[("docutrain_jobs_finished_total", (("outcome", "done"),))] == 1
    assert samples[("docutrain_jobs_finished_total", (("outcome", "dead"),))] == 1
    assert samples[("docutrain_embedding_tokens_total", (("model", "text-embedding-3-small"),))] == 300
    assert samples[("docutrain_oldest_queued_age_seconds", ())] == pytest.approx(
        report["oldest_queued_age_seconds"], abs=5
    )
    assert samples[("docutrain_runner_up", ())] == 0  # no workers on this machine

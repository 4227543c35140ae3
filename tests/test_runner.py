"""The runner with real worker processes: crashes, timeouts, retries,
locks, signals and kill -9 of a running `docutrain run`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from conftest import make_files

BY_NAME = {"DOCUTRAIN_PROCESSOR": "tests.processors:by_name"}
RECORD = {"DOCUTRAIN_PROCESSOR": "tests.processors:record"}


def test_drain_processes_every_job_once(docutrain, tmp_path):
    make_files(tmp_path / "in", [f"doc{i}.txt" for i in range(20)])
    assert docutrain("enqueue", "in").returncode == 0
    result = docutrain("run", "--workers", "2", "--drain", "--json", **RECORD)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["done"] == 20 and summary["dead"] == 0
    assert len(docutrain.output_rows()) == 20
    assert docutrain.status()["done"] == 20
    assert docutrain.status()["queued"] == 0


def test_crashing_and_hanging_workers_cost_one_attempt_each(docutrain, tmp_path):
    names = ["crash-kill.txt", "crash-segv.txt", "crash-exit.txt", "hang.txt"]
    names += [f"ok{i}.txt" for i in range(8)]
    make_files(tmp_path / "in", names)
    docutrain("enqueue", "in")
    result = docutrain(
        "run", "--workers", "2", "--drain", "--job-timeout", "1s", "--json",
        DOCUTRAIN_MAX_ATTEMPTS="2", **BY_NAME,
    )
    assert result.returncode == 3, result.stderr  # some jobs ended dead
    summary = json.loads(result.stdout)
    assert summary["done"] == 8
    assert summary["dead"] == 4
    assert summary["retried"] == 4  # each bad job: one retry, then dead
    dead = json.loads(docutrain("jobs", "--state", "dead", "--json").stdout)
    reasons = {os.path.basename(j["source"]): j["errors"][-1] for j in dead}
    assert "killed by signal 9" in reasons["crash-kill.txt"]
    assert "killed by signal 11" in reasons["crash-segv.txt"]
    assert "exited with code 3" in reasons["crash-exit.txt"]
    assert "timed out after 1 s" in reasons["hang.txt"]
    assert all("gave up after 2 attempts" in r for r in reasons.values())
    assert all(j["attempts"] == 2 for j in dead)


def test_transient_failures_retry_then_succeed(docutrain, tmp_path):
    make_files(tmp_path / "in", ["transient-2.txt"])
    docutrain("enqueue", "in")
    result = docutrain("run", "--workers", "1", "--drain", "--json", **BY_NAME)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["retried"] == 2
    job = json.loads(docutrain("jobs", "show", "1", "--json").stdout)
    assert job["state"] == "done" and job["attempts"] == 3
    assert len(job["errors"]) == 2 and "service unavailable" in job["errors"][0]
    runs = docutrain.runs()
    assert [attempt for _, attempt in runs] == [1, 2, 3]


def test_permanent_failure_goes_dead_at_once_and_retry_brings_it_back(docutrain, tmp_path):
    (path,) = make_files(tmp_path / "in", ["permanent.txt"])
    docutrain("enqueue", str(path))
    result = docutrain("run", "--workers", "1", "--drain", **BY_NAME)
    assert result.returncode == 3
    assert f"{path}: not a PDF: cannot open" in result.stderr
    job = json.loads(docutrain("jobs", "show", "1", "--json").stdout)
    assert job["state"] == "dead" and job["attempts"] == 1
    # Fix the "file" and retry it: a fresh attempt count.
    assert docutrain("retry", "1").returncode == 0
    job = json.loads(docutrain("jobs", "show", "1", "--json").stdout)
    assert job["state"] == "queued" and job["attempts"] == 0
    assert docutrain("retry", "--all-dead").stdout.startswith("0 job(s)")


def test_retry_schedule_survives_a_runner_restart(docutrain, tmp_path):
    make_files(tmp_path / "in", ["transient-1.txt"])
    docutrain("enqueue", "in")
    slow_retry = {"DOCUTRAIN_RETRY_BASE_DELAY": "30", "DOCUTRAIN_RETRY_MAX_DELAY": "30", **BY_NAME}
    result = docutrain("run", "--workers", "1", "--drain", "--max-time", "2s", **slow_retry)
    assert result.returncode == 0, result.stderr
    status = docutrain.status()
    assert status["retrying"] == 1
    assert status["next_retry_at"] > time.time() + 10  # 15-30 s away
    # A new runner honours the schedule: nothing is due, so it runs nothing.
    docutrain("run", "--workers", "1", "--drain", "--max-time", "1s", **slow_retry)
    assert len(docutrain.runs()) == 1
    assert docutrain.status()["retrying"] == 1


def test_second_runner_says_who_holds_the_queue_and_exits(docutrain, tmp_path):
    make_files(tmp_path / "in", ["sleep-3.txt"])
    docutrain("enqueue", "in")
    first = docutrain.start("run", "--workers", "1", "--drain", **BY_NAME)
    try:
        docutrain.wait_for(lambda: docutrain.status()["running"] == 1, what="first runner to start the job")
        started = time.monotonic()
        second = docutrain("run", "--workers", "1", "--drain", **BY_NAME)
        assert time.monotonic() - started < 3  # includes interpreter start-up
        assert second.returncode == 4
        assert f"held by runner pid {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        # status and enqueue are safe while the runner works: nothing reset.
        status = docutrain.status()
        assert status["running"] == 1 and status["runner"].startswith("held by runner")
        make_files(tmp_path / "more", ["late.txt"])
        assert docutrain("enqueue", "more").returncode == 0
        job = json.loads(docutrain("jobs", "show", "1", "--json").stdout)
        assert job["state"] == "running" and job["attempts"] == 1
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert len(docutrain.runs()) == 2  # sleep-3 once, late.txt once
    assert docutrain.status()["done"] == 2


def test_sigterm_lets_running_jobs_finish(docutrain, tmp_path):
    make_files(tmp_path / "in", ["sleep-1.5.txt"] + [f"sleep-1.5-{i}.txt" for i in range(4)])
    docutrain("enqueue", "in")
    runner = docutrain.start("run", "--workers", "2", **BY_NAME)  # service mode
    docutrain.wait_for(lambda: docutrain.status()["running"] >= 2, what="jobs to start")
    time.sleep(0.3)
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    assert "stopping (terminated)" in err
    status = docutrain.status()
    assert status["running"] == 0
    assert status["done"] >= 2  # the running ones finished
    assert status["done"] + status["queued"] == 5  # the rest went back untouched
    assert status["retrying"] == 0 and status["dead"] == 0


def test_second_ctrl_c_stops_at_once_and_loses_nothing(docutrain, tmp_path):
    make_files(tmp_path / "in", [f"sleep-30-{i}.txt" for i in range(3)])
    docutrain("enqueue", "in")
    runner = docutrain.start("run", "--workers", "2", **BY_NAME)
    docutrain.wait_for(lambda: docutrain.status()["running"] >= 2, what="jobs to start")
    started = time.monotonic()
    runner.send_signal(signal.SIGINT)
    time.sleep(0.5)
    runner.send_signal(signal.SIGINT)
    out, err = runner.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert runner.returncode == 130, err
    status = docutrain.status()
    assert status["queued"] == 3  # returned without costing an attempt
    assert status["running"] == status["dead"] == status["retrying"] == 0
    jobs = json.loads(docutrain("jobs", "--json").stdout)
    assert all(j["attempts"] == 0 for j in jobs)


def test_kill_9_mid_run_then_restart_processes_everything_once(docutrain, tmp_path):
    make_files(tmp_path / "in", [f"doc{i:03}.txt" for i in range(60)])
    docutrain("enqueue", "in")
    slow = {"DOCUTRAIN_TEST_SLEEP": "0.1", **RECORD}
    runner = docutrain.start("run", "--workers", "2", "--drain", **slow)
    docutrain.wait_for(lambda: len(docutrain.output_rows()) >= 10, what="some jobs to finish")
    runner.kill()  # SIGKILL: no cleanup at all
    runner.wait(timeout=10)
    assert docutrain.status()["running"] >= 1  # left in flight by the dead runner
    result = docutrain("run", "--workers", "2", "--drain", "--json", **slow)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["recovered"] >= 1
    rows = docutrain.output_rows()
    assert len(rows) == 60 == len({doc for doc, _ in rows})
    status = docutrain.status()
    assert status["done"] == 60
    assert status["queued"] == status["running"] == status["retrying"] == status["dead"] == 0
    # No orphaned worker outlived its runner and kept working.
    time.sleep(0.5)
    last_run = max(at for (at,) in sqlite3.connect(docutrain.output).execute("SELECT at FROM runs"))
    assert last_run < time.time() - 0.4


def test_enqueue_from_several_processes_while_a_runner_drains(docutrain, tmp_path):
    folders = []
    for p in range(4):
        folders.append(make_files(tmp_path / f"in{p}", [f"p{p}-{i}.txt" for i in range(25)]))
    runner = docutrain.start("run", "--workers", "2", **RECORD)  # service mode: keeps polling
    try:
        producers = [
            subprocess.Popen(
                docutrain.argv("enqueue", f"in{p}"), cwd=tmp_path, env=docutrain.env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for p in range(4)
        ]
        for producer in producers:
            assert producer.wait(timeout=60) == 0, producer.stderr.read()
        docutrain.wait_for(lambda: docutrain.status()["done"] == 100, what="all 100 jobs done")
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=30)
    assert len(docutrain.output_rows()) == 100
    assert len(docutrain.runs()) == 100  # each job ran exactly once


def test_max_time_stops_taking_jobs_and_exits_cleanly(docutrain, tmp_path):
    make_files(tmp_path / "in", [f"sleep-0.5-{i}.txt" for i in range(20)])
    docutrain("enqueue", "in")
    started = time.monotonic()
    result = docutrain("run", "--workers", "2", "--drain", "--max-time", "1s", "--json", **BY_NAME)
    assert time.monotonic() - started < 15
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["stop_reason"] == "max-time"
    assert 0 < summary["done"] < 20
    assert summary["remaining"]["queued"] == 20 - summary["done"]

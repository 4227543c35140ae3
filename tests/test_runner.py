"""The runner with real worker processes: crashes, timeouts, retries,
locks, signals and kill -9 of a running `docutrain run`."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import make_files
from docutrain_cli.config import Settings
from docutrain_cli.jobs import JobState
from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.run.runner import Runner

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


def test_the_live_display_counts_jobs_that_arrive_while_a_service_runs(docutrain, tmp_path, monkeypatch):
    """Issue 26: as a service, jobs queued while it runs showed a full bar
    and `0 remaining`. A real runner (in process), a real queue, jobs
    enqueued from another connection mid-run, as `serve` does."""
    import io
    import re
    import threading

    from rich.console import Console

    from harness import wait_for
    from docutrain_cli.cli.progress import RichObserver
    from docutrain_cli.jobs import Job

    monkeypatch.setenv("DOCUTRAIN_TEST_OUTPUT", str(docutrain.output))
    monkeypatch.setenv("DOCUTRAIN_TEST_SLEEP", "0.2")
    files = make_files(tmp_path / "in", [f"doc{i}.txt" for i in range(20)])
    settings = Settings(queue=str(docutrain.queue), store=str(docutrain.store), processor="tests.processors:record",
                        workers=1, poll_interval=0.1)
    console = Console(width=100, file=io.StringIO(), force_terminal=True, color_system=None, record=True)
    observer = RichObserver(console)
    with LocalQueue(settings.queue) as queue:
        queue.enqueue([Job(id=0, source=str(f)) for f in files[:10]])  # busy from here to the end: never idle
        runner = Runner(settings, queue, observer, in_process=True)
        service = threading.Thread(target=runner.run)  # no drain: a service
        service.start()
        try:
            wait_for(lambda: observer.counts.done >= 1, 30, "the first job done")
            with LocalQueue(settings.queue) as other:
                other.enqueue([Job(id=0, source=str(f)) for f in files[10:]])
            wait_for(lambda: observer.counts.total == 20, 30, "the display to count the 10 new jobs")
            observer.live.refresh()
            frame = console.export_text(clear=False).splitlines()[-1]
            done, remaining = map(int, re.search(r"(\d+) done 0 dead (\d+) remaining", frame).groups())
            assert done + remaining == 20 and remaining > 0, frame
            wait_for(lambda: observer.counts.done == 20 and observer.counts.idle, 60, "all done, idle")
            observer.live.refresh()
            last = console.export_text(clear=False)
        finally:
            runner.request_stop("terminated")
            service.join(60)
    assert "20 done 0 dead 0 remaining  idle, waiting for jobs" in last


@pytest.fixture
def in_process(docutrain, monkeypatch):
    """Runs the runner in this process (Runner(in_process=True)): for tests
    about the dispatcher's decisions, where a worker subprocess adds nothing.
    Returns run(processor, **settings) -> (RunSummary, queue)."""
    monkeypatch.setenv("DOCUTRAIN_TEST_OUTPUT", str(docutrain.output))
    queues = []

    def run(processor: str, drain: bool = True, max_time: float | None = None, **changes):
        fast = dict(retry_base_delay=0.05, retry_max_delay=0.2, poll_interval=0.1)
        settings = Settings(
            queue=str(docutrain.queue), store=str(docutrain.store), processor=processor, workers=1,
            **{**fast, **changes},
        )
        queue = LocalQueue(settings.queue)
        queues.append(queue)
        return Runner(settings, queue, in_process=True).run(drain=drain, max_time=max_time), queue

    yield run
    for queue in queues:
        queue.close()


def test_transient_failures_retry_then_succeed(docutrain, tmp_path, in_process):
    make_files(tmp_path / "in", ["transient-2.txt"])
    docutrain("enqueue", "in")
    summary, queue = in_process(BY_NAME["DOCUTRAIN_PROCESSOR"])
    assert (summary.done, summary.retried, summary.exit_code) == (1, 2, 0)
    job = queue.job(1)
    assert job.state == JobState.DONE and job.attempts == 3
    assert len(job.errors) == 2 and "service unavailable" in job.errors[0]
    assert job.result.pages == 1 and summary.totals["chunks"] == 1
    runs = docutrain.runs()
    assert [attempt for _, attempt in runs] == [1, 2, 3]


def test_in_process_runs_happen_in_this_process_and_settle_like_the_pool(docutrain, tmp_path, in_process):
    make_files(tmp_path / "in", ["a.txt", "permanent.txt", "transient-9.txt"])
    docutrain("enqueue", "in")
    summary, queue = in_process(BY_NAME["DOCUTRAIN_PROCESSOR"], max_attempts=2)
    assert (summary.done, summary.dead, summary.exit_code) == (1, 2, 3)
    assert docutrain.worker_pids() == {os.getpid()}
    dead = {os.path.basename(j.source): j.errors[-1] for j in queue.jobs(JobState.DEAD)}
    assert "not a PDF" in dead["permanent.txt"]
    assert "gave up after 2 attempts" in dead["transient-9.txt"]
    assert docutrain.status()["done"] == 1  # the CLI sees what the in-process run did


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


def test_retry_schedule_survives_a_runner_restart(docutrain, tmp_path, in_process):
    make_files(tmp_path / "in", ["transient-1.txt"])
    docutrain("enqueue", "in")
    slow_retry = dict(retry_base_delay=30.0, retry_max_delay=30.0)
    summary, _ = in_process(BY_NAME["DOCUTRAIN_PROCESSOR"], max_time=2, **slow_retry)
    assert summary.exit_code == 0 and summary.retried == 1
    status = docutrain.status()
    assert status["retrying"] == 1
    assert datetime.datetime.fromisoformat(status["next_retry_at"]).timestamp() > time.time() + 10  # 15-30 s away
    # A new runner honours the schedule: nothing is due, so it runs nothing.
    in_process(BY_NAME["DOCUTRAIN_PROCESSOR"], max_time=1, **slow_retry)
    assert len(docutrain.runs()) == 1
    assert docutrain.status()["retrying"] == 1


def test_second_runner_says_who_holds_the_queue_and_exits(docutrain, tmp_path):
    (busy,) = make_files(tmp_path / "in", ["wait.txt"])
    docutrain("enqueue", "in")
    first = docutrain.start("run", "--workers", "1", "--drain", **BY_NAME)
    try:
        docutrain.wait_for(lambda: docutrain.status()["running"] == 1, what="first runner to start the job")
        # The first runner's job waits for us, so returning at all proves the
        # second one did not wait for the lock (no wall-clock margin needed).
        second = docutrain("run", "--workers", "1", "--drain", timeout=30, **BY_NAME)
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
        busy.with_suffix(".go").touch()  # let the first runner's job finish
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert len(docutrain.runs()) == 2  # wait.txt once, late.txt once
    assert docutrain.status()["done"] == 2


def test_sigterm_lets_running_jobs_finish(docutrain, tmp_path):
    make_files(tmp_path / "in", ["sleep-1.5.txt"] + [f"sleep-1.5-{i}.txt" for i in range(4)])
    docutrain("enqueue", "in")
    runner = docutrain.start("run", "--workers", "2", **BY_NAME)  # service mode
    # Two jobs are in the workers' hands (their runs are recorded), not just leased.
    docutrain.wait_for(lambda: len(docutrain.runs()) >= 2, what="two jobs to start in workers")
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
    docutrain.wait_for(lambda: len(docutrain.runs()) >= 2, what="two jobs to start in workers")
    started = time.monotonic()
    runner.send_signal(signal.SIGINT)
    # The first Ctrl-C has been handled once the backlog job is back in the queue.
    docutrain.wait_for(lambda: docutrain.status()["queued"] >= 1, what="the first Ctrl-C to release the backlog")
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


def test_kill_9_takes_the_runs_own_workers_with_it(docutrain, tmp_path):
    # Both workers are busy with a minute-long job when the runner is killed:
    # they must not outlive it (they watch the runner, see worker._die_with_runner) and keep working.
    make_files(tmp_path / "in", ["a-sleep-60.txt", "b-sleep-60.txt"])
    docutrain("enqueue", "in")
    runner = docutrain.start("run", "--workers", "2", "--drain", **BY_NAME)
    docutrain.wait_for(lambda: len(docutrain.runs()) == 2, what="both jobs to start in workers")
    workers = docutrain.worker_pids()
    assert len(workers) == 2 and runner.pid not in workers
    runner.kill()
    runner.wait(timeout=10)
    docutrain.wait_for(lambda: not any(map(alive, workers)), timeout=10, what="the killed run's workers to exit")
    assert len(docutrain.runs()) == 2 and docutrain.output_rows() == []


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper no longer runs anything)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or going as we read
        return False


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

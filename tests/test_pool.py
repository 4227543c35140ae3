"""A broken worker pool is replaced (issue 10): the forkserver killed with a
real kill -9 while jobs run or while the pool idles, or workers unable to
start at all. Jobs the broken pool held go back uncharged; only three fresh
pools failing in a row end the run (exit 1, one line)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from conftest import make_files
from harness import ROOT, child_env
from proctree import alive, forkserver_of, ignores, workers_of

SLOW = {"DOCUTRAIN_PROCESSOR": "tests.processors:record", "DOCUTRAIN_TEST_SLEEP": "3"}
QUICK = {"DOCUTRAIN_PROCESSOR": "tests.processors:record", "DOCUTRAIN_TEST_SLEEP": "0"}
DIES = {"DOCUTRAIN_PROCESSOR": "tests.forkserver_dies:record", "DOCUTRAIN_TEST_SLEEP": "0"}


def attempts(docutrain) -> dict[int, int]:
    jobs = json.loads(docutrain("jobs", "--limit", "1000", "--json").stdout)
    return {job["id"]: job["attempts"] for job in jobs}


def runs(docutrain) -> list:
    try:
        return docutrain.runs()
    except sqlite3.OperationalError:  # a worker is creating the file right now
        return []


def kill_forkserver(docutrain, runner) -> int:
    pid = docutrain.wait_for(lambda: forkserver_of(runner.pid), timeout=60, what="the forkserver")
    os.kill(pid, signal.SIGKILL)
    return pid


def test_forkserver_killed_while_jobs_run_costs_no_attempt(docutrain, tmp_path):
    make_files(tmp_path / "in", [f"doc{i}.txt" for i in range(4)])
    assert docutrain("enqueue", "in").returncode == 0
    runner = docutrain.start("run", "--workers", "2", "--drain", "--json", **SLOW)
    docutrain.wait_for(lambda: len(runs(docutrain)) >= 2, timeout=60, what="two jobs running")
    killed = kill_forkserver(docutrain, runner)
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    assert f"worker pool broken (the workers' forkserver (pid {killed}) died)" in err
    summary = json.loads(out)
    assert summary["done"] == 4 and summary["dead"] == 0 and summary["retried"] == 0
    assert summary["pools_replaced"] == 1
    assert set(attempts(docutrain).values()) == {1}  # the killed runs were not charged
    assert {row[0] for row in docutrain.output_rows()} == {str(tmp_path / "in" / f"doc{i}.txt") for i in range(4)}
    assert "Traceback" not in err


def test_forkserver_killed_while_the_pool_idles_then_new_work_is_done(docutrain, tmp_path):
    make_files(tmp_path / "in", ["first.txt"])
    assert docutrain("enqueue", "in/first.txt").returncode == 0
    service = docutrain.start("run", "--workers", "2", **QUICK)
    try:
        docutrain.wait_for(lambda: docutrain.status()["done"] == 1, timeout=60, what="the first job done")
        killed = kill_forkserver(docutrain, service)
        docutrain.wait_for(
            lambda: forkserver_of(service.pid) not in (None, killed), timeout=60, what="a fresh pool"
        )
        make_files(tmp_path / "in", ["second.txt"])
        assert docutrain("enqueue", "in/second.txt").returncode == 0
        docutrain.wait_for(lambda: docutrain.status()["done"] == 2, timeout=60, what="the second job done")
        assert service.poll() is None
    finally:
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert "worker pool broken" in err and "Traceback" not in err
    assert not alive(killed)


def test_workers_that_cannot_start_end_the_run_after_three_fresh_pools(docutrain, tmp_path):
    make_files(tmp_path / "in", ["a.txt", "b.txt"])
    assert docutrain("enqueue", "in").returncode == 0
    result = docutrain("run", "--workers", "2", "--drain", **DIES)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert "worker pool cannot start:" in errors[0] and "(3 fresh pools failed in a row)" in errors[0]
    assert "Traceback" not in result.stderr
    status = docutrain.status()
    assert (status["queued"], status["running"], status["dead"]) == (2, 0, 0)
    assert set(attempts(docutrain).values()) == {0}  # nothing was charged
    # A forkserver for each fresh pool; `docutrain run` starts one before the
    # CLI loads (console.start_workers_early), which is the first pool's when
    # it is still importing then, or one more when it died before.
    assert len((tmp_path / "output.db.forkservers").read_text().split()) in (3, 4)


def test_a_run_whose_first_two_forkservers_die_carries_on(docutrain, tmp_path):
    make_files(tmp_path / "in", ["a.txt", "b.txt"])
    assert docutrain("enqueue", "in").returncode == 0
    result = docutrain("run", "--workers", "2", "--drain", "--json", DOCUTRAIN_TEST_FORKSERVER_DEATHS="2", **DIES)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["done"] == 2
    assert set(attempts(docutrain).values()) == {1}


def test_ctrl_c_reaches_the_runner_only(docutrain, tmp_path):
    """Ctrl-C goes to the whole process group. The forkserver is born
    ignoring it (a forkserver hit while it imports PyMuPDF died with a
    traceback), and so are the workers forked from it."""
    runner = docutrain.start("run", "--workers", "2", **QUICK)
    server = docutrain.wait_for(lambda: forkserver_of(runner.pid), timeout=60, what="the forkserver")
    workers = docutrain.wait_for(lambda: workers_of(runner.pid), timeout=60, what="the workers")
    assert ignores(server, signal.SIGINT) and all(ignores(w, signal.SIGINT) for w in workers)
    assert not ignores(runner.pid, signal.SIGINT)
    runner.send_signal(signal.SIGINT)
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 130, err
    assert "Traceback" not in err


# A pool whose one worker is held in its start (tests/forkserver_pools.py), then
# its forkserver killed and the pool stopped, as the runner does with a
# broken pool. Without forkserver_child the worker woke up to find its
# channel's locks removed (FileNotFoundError traceback): pebble takes a dead
# forkserver's children for dead (exit code 255) and never stops them.
KILL_FORKSERVER_DURING_WORKER_START = textwrap.dedent("""
    import json, os, signal, time
    from pebble import ProcessPool
    from docutrain_cli.run.forkserver import forkserver_context, forkserver_pid
    from docutrain_cli.run.pool import _stop
    from proctree import children
    from forkserver_pools import SlowToUnpickle

    pool = ProcessPool(max_workers=1, initializer=bool, initargs=(SlowToUnpickle(5),),
                       context=forkserver_context("tests.processors:record"))
    assert pool.active
    server = forkserver_pid()
    workers = children(server)
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while pool.active and time.monotonic() < deadline:  # pebble counts its worker dead
        time.sleep(0.05)
    _stop(pool)
    print(json.dumps(workers))
""")

# Two workers busy, deaf to SIGTERM (as when busy in C code); one killed,
# so pebble starts a replacement, held in its start for 1 s;
# then the pool stopped. pebble removes the channel's locks first, then
# stops the workers one by one, waiting 3 s for the deaf one: without
# pool._stop holding the locks until the workers are joined, the
# replacement woke up in that wait and failed to open them.
STOP_WHILE_A_REPLACEMENT_STARTS = textwrap.dedent("""
    import json, os, signal, time
    from pebble import ProcessPool
    from docutrain_cli.run.forkserver import forkserver_context, forkserver_pid
    from docutrain_cli.run.pool import _stop
    from proctree import children, ignores
    from forkserver_pools import SlowToUnpickle, deaf_to_sigterm
    from harness import wait_for

    pool = ProcessPool(max_workers=2, initializer=deaf_to_sigterm, initargs=(SlowToUnpickle(0, 0, 1, deaf=2),),
                       context=forkserver_context("tests.processors:record"))
    assert pool.active
    server = forkserver_pid()
    first = wait_for(lambda: len(w := [w for w in children(server) if ignores(w, signal.SIGTERM)]) == 2 and w, what="two workers up")
    tasks = [pool.schedule(time.sleep, args=(60,)) for _ in first]  # pebble replaces only a busy worker
    wait_for(lambda: all(t.running() for t in tasks), what="both workers busy")
    os.kill(first[1], signal.SIGKILL)
    replacement = wait_for(lambda: [w for w in children(server) if w not in first], what="a replacement")
    _stop(pool)
    print(json.dumps(replacement))
""")


def run_pool_script(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script],
        env=child_env(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}"),
        capture_output=True, text=True, timeout=120,
    )  # returns once every holder of its stderr, the workers too, is gone


def test_a_worker_still_starting_dies_with_its_forkserver():
    proc = run_pool_script(KILL_FORKSERVER_DURING_WORKER_START)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout), "no worker was starting"
    assert "Traceback" not in proc.stderr, proc.stderr


def test_a_pool_stopped_while_a_worker_starts_keeps_its_locks_until_the_workers_are_gone():
    proc = run_pool_script(STOP_WHILE_A_REPLACEMENT_STARTS)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout), "no replacement was starting"
    assert "Traceback" not in proc.stderr, proc.stderr


# forkserver_child's rule is for the forkserver's own children: a worker's
# fork (a library's helper process) must not take it for a worker whose
# forkserver died and kill itself.
FORK_IN_A_WORKER = textwrap.dedent("""
    from pebble import ProcessPool
    from docutrain_cli.run.forkserver import forkserver_context
    from docutrain_cli.run.pool import _stop
    from forkserver_pools import exit_code_of_a_fork

    pool = ProcessPool(max_workers=1, context=forkserver_context("tests.processors:record"))
    print(pool.schedule(exit_code_of_a_fork, args=(7,)).result(timeout=60))
    _stop(pool)
""")


def test_a_workers_own_fork_lives():
    proc = run_pool_script(FORK_IN_A_WORKER)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7"]


@pytest.mark.parametrize("then_a_worker", [False, True], ids=["tracker", "tracker-then-worker"])
def test_the_resource_tracker_killed_mid_run_leaves_no_traceback_and_every_job_done_once(
    docutrain, tmp_path, then_a_worker
):
    """multiprocessing's resource tracker (a child of the runner holding the
    pool's semaphores) killed while jobs run: the run goes on, and whoever
    relaunches it (the pool's stop, or pebble starting a replacement for a
    killed worker) leaves no warning and no `KeyError: '/mp-...'` traceback."""
    from proctree import tracker_of

    names = [f"doc{i}.txt" for i in range(4)]
    make_files(tmp_path / "in", names)
    assert docutrain("enqueue", "in").returncode == 0
    runner = docutrain.start("run", "--workers", "2", "--drain", "--json", **SLOW)
    docutrain.wait_for(lambda: len(runs(docutrain)) >= 2, timeout=60, what="two jobs running")
    tracker = docutrain.wait_for(lambda: tracker_of(runner.pid), timeout=60, what="the resource tracker")
    os.kill(tracker, signal.SIGKILL)
    if then_a_worker:  # its replacement is started through the forkserver, which relaunches the tracker
        docutrain.wait_for(lambda: not alive(tracker), timeout=10, what="the tracker gone")
        os.kill(workers_of(runner.pid)[0], signal.SIGKILL)
        docutrain.wait_for(lambda: tracker_of(runner.pid), timeout=60, what="a relaunched tracker")
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    assert "Traceback" not in out + err and "KeyError" not in err and "UserWarning" not in err, err
    summary = json.loads(out)
    assert (summary["done"], summary["dead"]) == (4, 0)
    assert set(attempts(docutrain).values()) == ({1, 2} if then_a_worker else {1})  # a killed worker costs one
    rows = [row[0] for row in docutrain.output_rows()]
    assert sorted(rows) == sorted(str(tmp_path / "in" / name) for name in names)  # each once
    assert not alive(tracker)
    if not then_a_worker:  # the pool's stop relaunched it
        assert "resource tracker had died; started a new one" in err

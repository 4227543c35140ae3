"""The runner's passes (issue 24): what one pass writes goes in one
transaction per file, statuses before the queue; short jobs go several to
a task and a crash among them costs only the job that crashed; a job is
`processing` once a worker takes it, not when it is leased; an empty drain
starts no pool; the console script brings no command-line code into the
workers. Real SQLite files, real worker processes, real kill -9."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from conftest import make_files
from harness import cli_in_process
from docutrain_cli.config import Settings
from docutrain_cli.jobs import Job, JobResult, JobState
from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.run.writes import WriteGroup
from docutrain_cli.status.recorder import StatusRecorder

BY_NAME = {"DOCUTRAIN_PROCESSOR": "tests.processors:by_name"}
ROOT = Path(__file__).resolve().parent.parent


def test_a_crash_in_a_task_of_several_jobs_costs_only_the_job_that_crashed(docutrain, tmp_path):
    names = [f"ok{i:02}.txt" for i in range(40)]
    names.insert(20, "crash-kill.txt")
    files = make_files(tmp_path / "in", names)
    with LocalQueue(docutrain.queue) as queue:
        queue.enqueue([Job(id=0, source=str(f)) for f in files])
    # A runner of its own (its workers fork from a forkserver that has this
    # test's environment), where every job counts as short: after the first
    # results, tasks take all that is left, so the crashing job shares one.
    code = (
        "import sys\n"
        "from docutrain_cli.run import backlog\n"
        "backlog.TASK_SECONDS = 60.0\n"
        "from docutrain_cli.cli import main\n"
        "sys.argv = ['docutrain', 'run', '--drain', '--workers', '2', '--json']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**docutrain.env, **BY_NAME, "DOCUTRAIN_MAX_ATTEMPTS": "2"},
        capture_output=True, text=True, timeout=120,
    )
    summary = json.loads(result.stdout)
    assert summary["done"] == 40 and summary["dead"] == 1, result.stderr
    with LocalQueue(docutrain.queue) as queue:
        jobs = {Path(j.source).name: j for j in queue.jobs(limit=100)}
    crash = jobs["crash-kill.txt"]
    assert crash.state == JobState.DEAD and crash.attempts == 2 and len(crash.errors) == 2
    assert "killed by signal 9" in crash.errors[-1]
    assert all(jobs[n].state == JobState.DONE and jobs[n].attempts == 1 for n in names if n.startswith("ok"))
    crash_runs = [a for (a,) in docutrain.recorded(f"SELECT attempt FROM runs WHERE job = {crash.id} ORDER BY at")]
    # In its task (uncharged), then alone: charged, retried, charged again.
    assert crash_runs == [1, 1, 2]
    # Jobs of the crashed task that had run ran again: still one output each.
    assert docutrain.recorded("SELECT count(DISTINCT document), count(*) FROM output") == [(40, 40)]


def test_a_leased_job_is_processing_only_once_a_worker_takes_it(docutrain, tmp_path):
    make_files(tmp_path / "in", ["wait-a.txt", "wait-b.txt"])
    docutrain("enqueue", "in/wait-a.txt", "in/wait-b.txt")
    runner = docutrain.start("run", "--workers", "1", "--drain", **BY_NAME)

    def statuses() -> dict[str, str]:
        if not docutrain.store.exists():
            return {}
        try:
            with sqlite3.connect(docutrain.store) as conn:
                rows = conn.execute("SELECT document_key, status FROM documents").fetchall()
        except sqlite3.OperationalError:  # the runner is creating the store's tables right now
            return {}
        return {Path(key).name: status for key, status in rows}

    try:
        docutrain.wait_for(lambda: statuses().get("wait-a.txt") == "processing", what="a to be processing")
        # One worker, busy with a: b is leased (the pool's backlog) but no worker has it.
        assert docutrain.status()["running"] == 2
        assert "wait-b.txt" not in statuses()
        (tmp_path / "in" / "wait-a.go").touch()
        docutrain.wait_for(lambda: statuses().get("wait-b.txt") == "processing", what="b to be processing")
        assert statuses()["wait-a.txt"] == "ready"
        (tmp_path / "in" / "wait-b.go").touch()
        out, err = runner.communicate(timeout=60)
    finally:
        for name in ("wait-a.go", "wait-b.go"):
            (tmp_path / "in" / name).touch()
    assert runner.returncode == 0, err
    assert statuses() == {"wait-a.txt": "ready", "wait-b.txt": "ready"}


def leased(tmp_path: Path, count: int) -> tuple[LocalQueue, list[Job]]:
    queue = LocalQueue(tmp_path / "queue.db")
    queue.enqueue([Job(id=0, source=f"doc{i}.txt") for i in range(count)])
    return queue, queue.lease(count, time.time())


def test_the_queue_writes_of_a_pass_are_all_or_nothing(tmp_path):
    queue, (a, b) = leased(tmp_path, 2)
    with pytest.raises(RuntimeError):
        with queue.batch():
            queue.complete(a)
            queue.retry_later(b, "failed", time.time())
            raise RuntimeError("the runner died mid-pass")
    assert [queue.job(a.id).state, queue.job(b.id).state] == [JobState.RUNNING, JobState.RUNNING]
    with queue.batch():
        queue.complete(a)
        queue.bury(b, "broken")
    assert [queue.job(a.id).state, queue.job(b.id).state] == [JobState.DONE, JobState.DEAD]
    queue.close()


def test_a_pass_writes_statuses_before_the_queue_so_a_crash_between_loses_no_status(tmp_path):
    class DiskFull:
        """A status listener whose write fails, as a full disk would."""

        def ready(self, job, result):
            raise OSError("disk full")

    queue, (job,) = leased(tmp_path, 1)
    group = WriteGroup(queue, DiskFull())
    group.ready(job, JobResult(pages=1, chunks=1))
    group.complete(job)
    with pytest.raises(OSError):
        group.commit()
    # Not done: a restart gives it back and it ends ready, with its status written.
    assert queue.job(job.id).state == JobState.RUNNING
    queue.close()


def test_the_status_writes_of_a_pass_are_all_or_nothing(tmp_path):
    settings = Settings(queue=str(tmp_path / "queue.db"), store=str(tmp_path / "docutrain.db"))
    recorder = StatusRecorder(settings)
    first, second = Job(id=1, source="a.txt"), Job(id=2, source="b.txt")
    with pytest.raises(RuntimeError):
        with recorder.batch():
            recorder.processing(first)
            recorder.ready(second, JobResult(pages=1, chunks=1))
            raise RuntimeError("the runner died mid-pass")
    assert recorder.store.conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
    with recorder.batch():
        recorder.processing(first)
        recorder.ready(second, JobResult(pages=1, chunks=1))
    rows = dict(recorder.store.conn.execute("SELECT document_key, status FROM documents"))
    assert rows == {"a.txt": "processing", "b.txt": "ready"}
    recorder.close()


def test_an_empty_drain_starts_no_pool(docutrain, tmp_path):
    result = cli_in_process(
        ["run", "--drain", "--json"],
        "print(forkserver._forkserver._forkserver_pid, 'pebble' in sys.modules, file=sys.stderr)",
        before="from multiprocessing import forkserver\n", env=docutrain.env, cwd=tmp_path,
    )
    assert json.loads(result.stdout)["stop_reason"] == "drained", result.stderr
    assert result.stderr.strip().splitlines()[-1] == "None False"


def test_workers_started_from_the_console_script_import_no_command_line_code(docutrain, tmp_path):
    # The script pip writes for [project.scripts]; multiprocessing imports
    # it again in every worker, so it must import nothing heavy.
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["docutrain"]
    module, _, function = entry.partition(":")
    script = tmp_path / "docutrain"
    script.write_text(f"import sys\nfrom {module} import {function}\nif __name__ == '__main__':\n    sys.exit({function}())\n")
    make_files(tmp_path / "in", ["a.txt", "b.txt"])
    docutrain("enqueue", "in")
    result = subprocess.run(
        [sys.executable, str(script), "run", "--drain", "--workers", "2", "--json"], cwd=tmp_path,
        env={**docutrain.env, "DOCUTRAIN_PROCESSOR": "tests.processors:modules"}, capture_output=True, text=True,
        timeout=120,
    )
    assert json.loads(result.stdout)["done"] == 2, result.stderr
    imports = docutrain.recorded("SELECT modules FROM imports")
    assert imports and all(loaded == "" for (loaded,) in imports), imports

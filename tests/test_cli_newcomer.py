"""The CLI as a newcomer meets it (issue 11), through the real command:
one-line errors, read-only commands that create nothing, tables that keep
file names whole at 80 and 120 columns, a quiet closed pipe."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time

import pytest

from conftest import make_files

BY_NAME = {"DOCUTRAIN_PROCESSOR": "tests.processors:by_name"}
DEEP = "uploads/customers/acme-corporation/2024/contracts/signed"


def epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("docutrain: error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (("run", "--workers", "abc"), "docutrain: error: --workers: expected a whole number, got 'abc' (see `docutrain run --help`)"),
        (("jobs", "show", "abc"), "docutrain: error: JOB_ID: expected a whole number, got 'abc'"),
        (("--queue", "/tmp"), "docutrain: error: give a command"),
        (("status", "--bogus"), "docutrain: error: no such option: --bogus"),
        (("bogus",), "docutrain: error: no such command 'bogus'"),
        (("search",), "docutrain: error: missing argument 'QUESTION'"),
        (("retry",), "docutrain: error: give the ids of dead jobs, or --all-dead"),
        (("retry", "1", "--all-dead"), "docutrain: error: give dead job ids or --all-dead, not both"),
        # Issue 26: the same pattern everywhere, and a hint for an option before the command.
        (("search", ""), "docutrain: error: QUESTION: expected a question or a few words, e.g. `docutrain search \"refund policy\"` (see `docutrain search --help`)"),
        (("search", "  ", "--json"), "docutrain: error: QUESTION: expected a question"),
        (("search", "refunds", "--top", "0"), "docutrain: error: --top: must be at least 1, got 0 (see `docutrain search --help`)"),
        (("run", "--workers", "0"), "docutrain: error: --workers: must be 1 to 256, got 0 (see `docutrain run --help`)"),
        (("run", "--job-timeout", "soon"), "docutrain: error: --job-timeout: expected a duration such as 30s, 4m or 1h, got 'soon' (see `docutrain run --help`)"),
        (("run", "--max-time", "soon"), "docutrain: error: --max-time: expected a duration such as 30s, 4m or 1h, got 'soon' (see `docutrain run --help`)"),
        (("--workers", "2", "run"), "docutrain: error: no such option: --workers (it belongs after the command: `docutrain run --workers N`)"),
        (("--json", "status"), "docutrain: error: no such option: --json (it belongs after the command: `docutrain status --json`)"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(docutrain, args, expected):
    result = docutrain(*args)
    assert result.returncode == 2
    assert one_error_line(result).startswith(expected)


def test_a_search_that_finds_no_words_is_a_usage_error(docutrain, tmp_path):
    make_files(tmp_path / "in", ["a.txt"], content="workers survive a crash")
    docutrain("enqueue", "in")
    assert docutrain("run", "--drain", "--workers", "1").returncode == 0
    result = docutrain("search", "???")
    assert result.returncode == 2 and one_error_line(result) == "docutrain: error: the query has no searchable words"


def test_enqueue_says_when_it_creates_the_queues_folder(docutrain, tmp_path):
    make_files(tmp_path / "in", ["a.txt"])
    first = docutrain("enqueue", "in", "--queue", "qeueus/main.db")  # a typo of queues/
    assert first.returncode == 0 and (tmp_path / "qeueus" / "main.db").exists()
    assert first.stderr.splitlines() == [
        "docutrain: created the folder qeueus/ for the queue qeueus/main.db (check --queue if that was a typo)"]
    assert "1 queued" in first.stdout
    again = docutrain("enqueue", "in", "--force", "--queue", "qeueus/main.db", "--json")
    assert again.returncode == 0 and again.stderr == "" and json.loads(again.stdout)["queued"]


def test_read_only_commands_create_no_files(docutrain, tmp_path):
    before = sorted(os.listdir(tmp_path))
    status = docutrain("status")
    assert status.returncode == 0 and "queued 0" in status.stdout
    assert f"no queue at {docutrain.queue}" in status.stdout
    assert json.loads(docutrain("status", "--json").stdout)["queued"] == 0
    jobs = docutrain("jobs")
    assert jobs.returncode == 0 and "no jobs" in jobs.stdout and "no queue at" in jobs.stdout
    assert json.loads(docutrain("jobs", "--json").stdout) == []
    assert docutrain("jobs", "show", "1").returncode == 2
    assert docutrain("retry", "--all-dead").returncode == 0
    search = docutrain("search", "workers crash")
    assert search.returncode == 2
    assert "no store at" in one_error_line(search) and "--store PATH" in search.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_after_the_demo_the_messages_say_where_its_files_are(docutrain, tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "queue.db").write_bytes(b"")
    (tmp_path / "demo" / "docutrain.db").write_bytes(b"")
    env = {k: v for k, v in docutrain.env.items() if k not in ("DOCUTRAIN_QUEUE", "DOCUTRAIN_STORE")}
    docutrain.env = env  # the defaults: ./queue.db and ./docutrain.db, as a newcomer has them
    status = docutrain("status")
    assert "no queue at queue.db" in status.stdout and "--queue demo/queue.db" in status.stdout
    search = docutrain("search", "workers crash")
    assert search.returncode == 2 and "--store demo/docutrain.db" in search.stderr and "cd demo" in search.stderr
    assert not (tmp_path / "queue.db").exists() and not (tmp_path / "docutrain.db").exists()


@pytest.fixture
def processed(docutrain, tmp_path):
    """One document done and one dead, both deep in folders with long names."""
    folder = tmp_path / DEEP
    folder.mkdir(parents=True)
    (folder / "how-workers-survive-a-crash.txt").write_text(
        "How workers survive a crash: the pool replaces a worker that dies and retries its job.\n" * 20
    )
    (folder / "permanent-truncated-scan.pdf").write_text("not really a pdf")
    assert docutrain("enqueue", DEEP).returncode == 0
    run = docutrain("run", "--drain", "--workers", "1", DOCUTRAIN_PROCESSOR="docutrain_cli.run.process:process_job")
    assert run.returncode == 3, run.stderr  # one dead on purpose
    return docutrain


@pytest.mark.parametrize("columns", ["80", "120"])
def test_jobs_and_search_keep_file_names_whole(processed, columns):
    width = int(columns)
    jobs = processed("jobs", COLUMNS=columns)
    assert jobs.returncode == 0, jobs.stderr
    lines = jobs.stdout.splitlines()
    assert all(len(line) <= width for line in lines), jobs.stdout
    assert "how-workers-survive-a-crash.txt" in jobs.stdout
    assert "permanent-truncated-scan.pdf" in jobs.stdout
    search = processed("search", "how do workers survive a crash", COLUMNS=columns)
    assert search.returncode == 0, search.stderr
    assert all(len(line) <= width for line in search.stdout.splitlines()), search.stdout
    assert "how-workers-survive-a-crash.txt" in search.stdout


def test_jobs_show_renders_the_result_as_a_table_and_json_keeps_json(processed):
    done = json.loads(processed("jobs", "--state", "done", "--json").stdout)[0]
    shown = processed("jobs", "show", str(done["id"]), COLUMNS="80")
    assert shown.returncode == 0, shown.stderr
    assert "result:" in shown.stdout and "{" not in shown.stdout
    assert any(line.split()[-2:] == ["chunks", str(done["result"]["chunks"])] for line in shown.stdout.splitlines())
    as_json = json.loads(processed("jobs", "show", str(done["id"]), "--json").stdout)
    assert as_json["result"]["chunks"] == done["result"]["chunks"]


def test_a_running_job_starts_when_a_worker_takes_it_not_when_it_was_leased(docutrain, tmp_path):
    # With one worker the runner leases two jobs at once; the second waits in
    # the pool's backlog until the first is done. Its start is when it ran.
    make_files(tmp_path / "a", ["sleep-0.6.txt"], content="first")
    make_files(tmp_path / "b", ["sleep-0.6.txt"], content="second")
    docutrain("enqueue", "a", "b")
    assert docutrain("run", "--drain", "--workers", "1", **BY_NAME).returncode == 0
    first, second = sorted(json.loads(docutrain("jobs", "--json").stdout), key=lambda j: j["id"])
    assert epoch(second["started_at"]) - epoch(first["started_at"]) >= 0.4
    assert epoch(second["started_at"]) >= epoch(first["finished_at"]) - 0.3


def test_job_times_in_json_are_iso_8601_with_the_zone(docutrain, tmp_path):
    make_files(tmp_path, ["permanent.txt", "ok.txt"])
    docutrain("enqueue", "permanent.txt", "ok.txt")
    before = time.time()
    docutrain("run", "--drain", "--workers", "1", **BY_NAME)
    dead = json.loads(docutrain("jobs", "show", "1", "--json").stdout)
    listed = {job["id"]: job for job in json.loads(docutrain("jobs", "--json").stdout)}
    assert listed[1]["finished_at"] == dead["finished_at"]
    for job in listed.values():
        for name in ("enqueued_at", "started_at", "finished_at"):
            moment = datetime.datetime.fromisoformat(job[name])
            assert moment.utcoffset() == datetime.timedelta(0), job[name]  # the zone is said: UTC
            assert job[name].endswith("+00:00") and before - 60 < moment.timestamp() <= time.time()
        assert job["queued_at"] is None and job["not_before"] is None  # never retried, never waited
    status = json.loads(docutrain("status", "--json").stdout)
    assert status["next_retry_at"] is None


def test_retry_makes_the_oldest_queued_age_count_from_the_retry(docutrain, tmp_path):
    make_files(tmp_path, ["permanent.txt"])
    docutrain("enqueue", "permanent.txt")
    docutrain("run", "--drain", "--workers", "1", **BY_NAME)
    queued_at = epoch(json.loads(docutrain("jobs", "show", "1", "--json").stdout)["enqueued_at"])
    docutrain.wait_for(lambda: time.time() - queued_at > 2.5, what="2.5 s to pass")
    before_retry = time.time()
    assert docutrain("retry", "--all-dead").returncode == 0
    age = docutrain.status()["oldest_queued_age_seconds"]
    # From the retry (after before_retry), not from the enqueue (2.5 s before it),
    # however slowly the commands start on a busy machine.
    assert age <= time.time() - before_retry + 0.05


def test_a_closed_pipe_ends_quietly(docutrain):
    # `docutrain schema | head`: the reader may go away at any moment.
    for attempt in range(12):
        proc = subprocess.Popen(
            docutrain.argv("schema"), cwd=docutrain.workdir, env=docutrain.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        if attempt % 2:
            proc.stdout.readline()  # like head -1: read a little, then close
        proc.stdout.close()
        stderr = proc.stderr.read()
        code = proc.wait(timeout=60)
        assert stderr == b"", stderr.decode()
        # 141 when the write hit the closed pipe (128 + SIGPIPE, like other
        # Unix tools); 0 when everything was written before the reader left.
        assert code in (0, 141), code
        if attempt % 2 == 0:
            assert code == 141  # closed before a byte was read: the write must fail


def test_a_broken_pipe_that_is_not_stdout_is_an_error_not_silence(monkeypatch):
    # Click would turn any EPIPE (say, a socket to Supabase) into a silent exit 1.
    import typer

    from docutrain_cli.cli.style import HelpCommand, HelpGroup, run_app

    app = typer.Typer(cls=HelpGroup)

    @app.command(cls=HelpCommand)
    def push() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    @app.command(cls=HelpCommand)
    def other() -> None:
        pass

    errors = []
    monkeypatch.setattr("sys.argv", ["docutrain", "push"])
    assert run_app(app, errors.append, traceback_wanted=lambda: False) == 1
    assert errors and "broken pipe" in errors[0]

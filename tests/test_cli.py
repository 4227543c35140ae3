"""The docutrain command as a user types it: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sqlite3
import sys
from pathlib import Path


import pdfs
from conftest import make_files
from harness import ROOT, cli_in_process
from docutrain_cli.jobs import STATES

def command_paths() -> list[list[str]]:
    """Every group and command of the real app, e.g. [], ["queue"], ["queue", "init"]."""
    import typer.main

    from docutrain_cli.cli import app

    paths = []

    def walk(command, path):
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return paths


# A value placeholder in help: <bool>, <list[str]>, <int>, {query}, ...
PLACEHOLDER = re.compile(r"<[a-z_\[\], |]+>|\{[a-z_]+\}")


def test_version_and_help_with_an_example_on_every_command(docutrain):
    version = docutrain("--version")
    assert version.returncode == 0 and version.stdout.startswith("docutrain ")
    paths = command_paths()
    assert {"queue init", "jobs show", "queue", "jobs", "search", "retry"} <= {" ".join(p) for p in paths}
    for path in paths:
        result = docutrain(*path, "--help", COLUMNS="120")
        assert result.returncode == 0, result.stderr
        text = result.stdout
        assert "Example:" in text, path
        assert not PLACEHOLDER.findall(text), (path, PLACEHOLDER.findall(text))
        for line in text.splitlines():  # flags look like flags: nothing after --json but its help
            if re.match(r"│\s+--(json|help|drain|force|all-dead|traceback)\b", line):
                assert re.search(r"--[a-z-]+\s+(-[a-z]\s+)?[A-Z][a-z]", line), line
    usage = {" ".join(p): docutrain(*p, "--help", COLUMNS="120").stdout for p in (["enqueue"], ["retry"], ["search"], ["jobs", "show"], ["run"])}
    assert "docutrain enqueue [OPTIONS] [PATH]..." in usage["enqueue"] and "PATH..." in usage["enqueue"]
    assert "docutrain retry [OPTIONS] [JOB_ID]..." in usage["retry"] and "JOB_ID..." in usage["retry"]
    assert "docutrain search [OPTIONS] QUESTION" in usage["search"]
    assert "docutrain jobs show [OPTIONS] JOB_ID" in usage["jobs show"]
    assert re.search(r"--workers\s+-w\s+N\s", usage["run"]) and re.search(r"--max-time\s+DURATION", usage["run"])


def test_enqueue_json_stays_json_for_a_damaged_pdf(docutrain, tmp_path):
    """Estimating a damaged PDF's tokens opens it with MuPDF, whose
    "format error" once landed on stdout ahead of the JSON."""
    pdfs.truncated(tmp_path / "cut.pdf")
    result = docutrain("enqueue", "cut.pdf", "--json")
    assert result.returncode == 0, result.stderr
    assert [Path(j["source"]).name for j in json.loads(result.stdout)["queued"]] == ["cut.pdf"]
    assert "MuPDF" not in result.stdout + result.stderr


def test_enqueue_files_folders_and_globs(docutrain, tmp_path):
    make_files(tmp_path / "uploads", ["a.pdf", "b.txt", "notes.doc", ".hidden.pdf"])
    make_files(tmp_path / "uploads" / "deep", ["c.md"])
    make_files(tmp_path / "other", ["d.pdf", "e.pdf"])
    result = docutrain("enqueue", "uploads", "other/*.pdf", "--user-id", "u1", "--json")
    assert result.returncode == 0, result.stderr
    queued = json.loads(result.stdout)["queued"]
    names = sorted(Path(j["source"]).name for j in queued)
    # A folder scan takes supported documents only and skips hidden files.
    assert names == ["a.pdf", "b.txt", "c.md", "d.pdf", "e.pdf"]
    assert [j["id"] for j in queued] == [1, 2, 3, 4, 5]
    job = json.loads(docutrain("jobs", "show", "1", "--json").stdout)
    assert job["user_id"] == "u1" and job["state"] == "queued" and len(job["sha256"]) == 64
    # A file named explicitly is queued whatever its type (it will fail visibly).
    assert docutrain("enqueue", "uploads/notes.doc").returncode == 0


def test_same_content_is_not_queued_twice_unless_forced(docutrain, tmp_path):
    (path,) = make_files(tmp_path, ["a.pdf"])
    shutil.copy(path, tmp_path / "copy-of-a.pdf")
    first = docutrain("enqueue", "a.pdf")
    assert "queued job 1" in first.stdout
    again = docutrain("enqueue", "a.pdf", "copy-of-a.pdf")
    assert again.returncode == 0
    assert "0 queued, 2 skipped" in again.stdout
    assert "already queued" in again.stdout and "--force" in again.stdout
    forced = docutrain("enqueue", "a.pdf", "--force")
    assert "queued job 2" in forced.stdout
    assert docutrain.status()["queued"] == 2


def test_missing_paths_are_refused_one_line_each_and_the_rest_is_queued(docutrain, tmp_path):
    make_files(tmp_path, ["good.pdf"])
    locked = make_files(tmp_path, ["locked.pdf"])[0]
    locked.chmod(0)
    result = docutrain("enqueue", "good.pdf", "missing.pdf", "nothing-*.pdf", "locked.pdf")
    errors = result.stderr.strip().splitlines()
    assert result.returncode == 3
    assert "docutrain: error: missing.pdf: no such file or folder" in errors
    assert "docutrain: error: nothing-*.pdf: no files match this pattern" in errors
    if os.geteuid() != 0:  # root reads anything
        assert "docutrain: error: locked.pdf: permission denied" in errors
    assert "Traceback" not in result.stderr
    assert docutrain.status()["queued"] >= 1


def test_status_json_has_the_state_names_as_integers(docutrain, tmp_path):
    make_files(tmp_path, ["a.pdf", "b.pdf"])
    docutrain("enqueue", "a.pdf", "b.pdf")
    status = docutrain.status()
    for state in ("queued", "running", "retrying", "done", "dead"):
        assert isinstance(status[state], int)
    assert status["queued"] == 2
    assert status["oldest_queued_age_seconds"] >= 0
    assert status["runner"] is None
    text = docutrain("status").stdout
    assert "queued 2" in text and "runner: none running" in text
    assert "oldest queued job: " in text and "s old" in text
    empty = docutrain("status", "--queue", "empty.db").stdout
    assert "oldest queued job: none queued" in empty


def test_jobs_filters_by_state_and_show_reports_unknown_ids(docutrain, tmp_path):
    make_files(tmp_path, ["a.pdf"])
    docutrain("enqueue", "a.pdf")
    assert json.loads(docutrain("jobs", "--state", "queued", "--json").stdout)[0]["id"] == 1
    assert json.loads(docutrain("jobs", "--state", "dead", "--json").stdout) == []
    bad_state = docutrain("jobs", "--state", "nope")
    assert bad_state.returncode == 2 and "expected one of queued" in bad_state.stderr
    missing = docutrain("jobs", "show", "42")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "docutrain: error: job 42: no such job"


def test_retry_refuses_jobs_that_are_not_dead(docutrain, tmp_path):
    make_files(tmp_path, ["a.pdf"])
    docutrain("enqueue", "a.pdf")
    result = docutrain("retry", "1")
    assert result.returncode == 3  # partly done: an id that is not dead
    assert result.stderr.strip() == "docutrain: error: job 1: is queued, not dead"
    result = docutrain("retry", "1", "7")
    assert result.returncode == 2  # an unknown id is a usage error, as for `jobs show 7`
    assert "job 1: is queued, not dead" in result.stderr
    assert "job 7: no such job" in result.stderr
    assert docutrain("retry", "7").returncode == 2
    assert docutrain("retry").returncode == 2
    limit = docutrain("jobs", "--limit", "-1")
    assert limit.returncode == 2 and "--limit" in limit.stderr


def test_bad_settings_are_one_line_errors_naming_the_key(docutrain, tmp_path):
    result = docutrain("run", "--drain", DOCUTRAIN_WORKERS="many")
    assert result.returncode == 2
    assert result.stderr.strip() == "docutrain: error: DOCUTRAIN_WORKERS workers: expected a whole number, got 'many'"
    (tmp_path / "docutrain.toml").write_text("workerz = 3\n")
    result = docutrain("status")
    assert result.returncode == 2 and "unknown setting 'workerz'" in result.stderr
    (tmp_path / "docutrain.toml").write_text("[docutrain]\nmax_time = 'x'\n")
    assert docutrain("status").returncode == 2
    (tmp_path / "docutrain.toml").unlink()
    not_a_queue = tmp_path / "garbage.db"
    not_a_queue.write_bytes(b"this is not sqlite" * 100)
    result = docutrain("--queue", str(not_a_queue), "status")
    assert result.returncode == 1 and "not a docutrain queue file" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_and_flags_take_priority_in_order(docutrain, tmp_path):
    (tmp_path / "docutrain.toml").write_text('queue = "from-toml.db"\n')
    make_files(tmp_path, ["a.pdf"])
    env = {k: v for k, v in docutrain.env.items() if k != "DOCUTRAIN_QUEUE"}
    docutrain.env = env
    docutrain("enqueue", "a.pdf")
    assert (tmp_path / "from-toml.db").exists()
    docutrain("enqueue", "a.pdf", DOCUTRAIN_QUEUE=str(tmp_path / "from-env.db"))
    assert (tmp_path / "from-env.db").exists()
    docutrain("--queue", "from-flag.db", "enqueue", "a.pdf", DOCUTRAIN_QUEUE=str(tmp_path / "from-env.db"))
    assert (tmp_path / "from-flag.db").exists()


def test_secrets_never_appear_in_output(docutrain, tmp_path, openai_standin, supabase_standin):
    # Every command that handles a key, through the real openai and supabase
    # clients against the stand-ins, with the failures that produce error
    # messages: a refused key, 5xx from OpenAI, status and chunk writes failing.
    openai_key = "sk-test-this-must-never-be-printed-0123456789"
    wrong_key = "sk-test-a-wrong-key-also-never-printed-98765"
    supabase_key = supabase_standin.key
    openai_standin.required_key = openai_key
    project = supabase_standin.project
    owner = "0b0e6b6e-4f2a-4d6c-9d4c-2f6f5b1d7a10"  # user ids are uuids, and storage paths start with them
    for i in range(3):
        project.put_object("documents", f"{owner}/{i}.txt", f"Document {i} says hello to the tenant.".encode())
        project.add_document("pending", storage_path=f"{owner}/{i}.txt")
    env = dict(
        OPENAI_API_KEY=openai_key, OPENAI_BASE_URL=openai_standin.base_url, DOCUTRAIN_EMBEDDING_DIMENSIONS="8",
        SUPABASE_URL=supabase_standin.url, SUPABASE_SERVICE_ROLE_KEY=supabase_key, DOCUTRAIN_WORKERS="1",
    )
    outputs = []

    def run(*args, **extra):
        result = docutrain(*args, **{**env, **extra})
        outputs.append(" ".join(args) + "\n" + result.stdout + result.stderr)
        return result

    assert run("enqueue", "--from-supabase").returncode == 0
    first = run("run", "--drain", "--json", OPENAI_API_KEY=wrong_key)  # 401: the run stops, jobs stay queued
    assert first.returncode == 5 and "rejected the API key" in first.stderr
    assert json.loads(run("status", "--json").stdout)["queued"] == 3
    openai_standin.fail_next(2, status=500)  # retried by the embedder (twice), else by the job
    supabase_standin.fail("PATCH", "/rest/v1/user_documents", 503)
    supabase_standin.fail("POST", "/rest/v1/document_chunks", 500, times=1)
    second = run("run", "--drain", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["done"] == 3
    for args in (("status",), ("status", "--json"), ("jobs", "--json"), ("jobs", "show", "1"), ("sync",), ("doctor",)):
        run(*args)
    supabase_standin.heal()
    for args in (("sync", "--json"), ("doctor", "--json"), ("search", "hello tenant"), ("run", "--drain", "--traceback")):
        run(*args)
    assert {r["status"] for r in project.rows("user_documents")} == {"ready"}
    text = "\n".join(outputs)
    assert "Supabase" in text and "OpenAI" in text  # the outputs do talk about both
    for secret in (openai_key, wrong_key, supabase_key):
        assert secret not in text and secret[4:20] not in text, secret


def test_queue_db_example_is_readable_by_the_current_code(docutrain, tmp_path):
    example = tmp_path / "example.db"
    shutil.copy(ROOT / "queue.db.example", example)  # status must not need write access to the original
    result = docutrain("status", "--queue", str(example), "--json")  # as the README writes it
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["queued"] >= 1 and status["done"] >= 1 and status["dead"] >= 1 and status["retrying"] >= 1
    before = json.loads(docutrain("--queue", str(example), "status", "--json").stdout)  # before it too
    assert {k: before[k] for k in STATES} == {k: status[k] for k in STATES}
    dead = json.loads(docutrain("--queue", str(example), "jobs", "--state", "dead", "--json").stdout)
    assert dead and dead[0]["errors"]
    done = json.loads(docutrain("--queue", str(example), "jobs", "--state", "done", "--json").stdout)
    # Results stored as untyped dicts by older versions read as JobResults.
    assert done[0]["result"]["model"] == "offline-hash-v1" and done[0]["result"]["chunks"] == 4


def test_housekeeping_clears_finished_rows_but_keeps_the_record(docutrain, tmp_path):
    make_files(tmp_path / "in", [f"d{i}.txt" for i in range(30)])
    docutrain("enqueue", "in")
    result = docutrain("run", "--drain", "--workers", "2", DOCUTRAIN_PROCESSOR="tests.processors:record")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(docutrain.queue) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM ack_queue_default").fetchone()
    assert rows == 0  # acked rows are gone: get() stays fast
    assert docutrain.status()["done"] == 30
    assert len(json.loads(docutrain("jobs", "--state", "done", "--limit", "100", "--json").stdout)) == 30


def test_the_runner_process_leaves_pymupdf_and_openai_to_the_workers(docutrain, tmp_path):
    # Start-up stays fast (bench row 7) and the runner never holds a client:
    # heavy imports happen in the forkserver and the workers only.
    make_files(tmp_path, ["a.txt"])
    docutrain("enqueue", "a.txt")
    result = cli_in_process(
        ["run", "--drain", "--workers", "1", "--json"],
        "print(sorted(m for m in ('pymupdf', 'fitz', 'openai', 'supabase') if m in sys.modules), file=sys.stderr)",
        env=docutrain.env, cwd=tmp_path,
    )
    assert json.loads(result.stdout)["done"] == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[]"

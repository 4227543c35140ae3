"""What a CLI command loads: a cron `run --drain` (or any `--json` run)
imports neither pydantic nor rich, which cost it about 0.3 s of CPU here
while its workers' forkserver imported on the other core. Values skip
typer's pydantic coercion only where it changes nothing (cli/style.py):
they still come out as typer makes them, bad ones with typer's messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import child_env

PROBE = """
import json, sys
from docutrain_cli.console import main
try:
    main()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"pydantic": "pydantic" in sys.modules, "rich": "rich" in sys.modules, "code": code}),
      file=sys.stderr)
"""


def docutrain(tmp_path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    env = child_env(DOCUTRAIN_QUEUE=str(tmp_path / "queue.db"), DOCUTRAIN_STORE=str(tmp_path / "docutrain.db"),
                    DOCUTRAIN_EMBEDDER="offline")
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    return probe, done


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--drain", "--json"],
        ["run", "--drain", "--workers", "24"],
        ["--queue", "queue.db", "status"],
        ["jobs", "--json"],
        ["jobs", "show", "7"],
    ],
)
def test_common_commands_import_no_pydantic(tmp_path, args):
    probe, done = docutrain(tmp_path, *args)
    assert probe["code"] in (0, 2, None), done.stderr  # `jobs show 7`: no such job (2)
    assert not probe["pydantic"], f"{args} imported pydantic"


@pytest.mark.parametrize("args", [["run", "--drain"], ["run", "--drain", "--json"], ["status"], ["status", "--json"]])
def test_a_run_without_a_terminal_and_status_import_no_rich(tmp_path, args):
    probe, done = docutrain(tmp_path, *args)  # stdout is a pipe here, as under cron
    assert probe["code"] in (0, None), done.stderr
    assert not probe["rich"], f"{args} imported rich"


def test_values_are_what_typer_makes_of_them(tmp_path):
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text(f"document {i}")
    probe, done = docutrain(tmp_path, "enqueue", str(tmp_path), "--json")
    assert probe["code"] in (0, None), done.stderr
    for given, shown in (("002", 2), ("1", 1), (None, 3)):  # None: the default (50), an int already
        args = ["jobs", "--json"] + (["--limit", given] if given else [])
        probe, done = docutrain(tmp_path, *args)
        assert probe["code"] in (0, None), done.stderr
        assert len(json.loads(done.stdout)) == shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--drain", "--workers", "abc"], "--workers: expected a whole number, got 'abc'"),
        (["run", "--drain", "--workers", "0"], "--workers: must be 1 to 256, got 0"),
        (["run", "--drain", "--workers", "-3"], "--workers: must be 1 to 256, got -3"),
        (["run", "--drain", "--workers", "2000"], "--workers: must be 1 to 256, got 2000"),
        (["jobs", "show", "x"], "JOB_ID: expected a whole number, got 'x'"),
    ],
)
def test_bad_values_get_typers_checks_and_one_line(tmp_path, args, message):
    probe, done = docutrain(tmp_path, *args)
    assert probe["code"] == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("docutrain: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr

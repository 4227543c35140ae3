"""`docutrain run` starts its workers' forkserver before the CLI loads
(docutrain_cli/console.py): the forkserver's imports overlap the CLI's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from docutrain_cli.console import _command_line

PROBE = """
import json, sys
from docutrain_cli import console
console.start_workers_early(sys.argv[1:])
from multiprocessing import forkserver
server = forkserver._forkserver
print(json.dumps({"pid": server._forkserver_pid, "preload": list(server._preload_modules),
                  "cli_loaded": "typer" in sys.modules, "processor_loaded": "tests.processors" in sys.modules}))
"""


def early_start(args: list[str], env: dict[str, str], cwd) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--drain"], ("run", None, ["--drain"])),
        (["--queue", "q.db", "--store=s.db", "--traceback", "run", "-w", "2"], ("run", None, ["-w", "2"])),
        (["--config", "a.toml", "run"], ("run", "a.toml", [])),
        (["--config=b.toml", "status", "run"], ("status", "b.toml", ["run"])),
        (["--queue"], (None, None, [])),
    ],
)
def test_the_command_is_found_after_the_root_options(args, expected):
    assert _command_line(args) == expected


def test_a_drain_starts_the_forkserver_of_its_settings_before_the_cli(docutrain, tmp_path):
    (tmp_path / "docutrain.toml").write_text('processor = "tests.processors:record"\n')
    seen = early_start(["--config", str(tmp_path / "docutrain.toml"), "run", "--drain"], docutrain.env, tmp_path)
    assert seen["pid"] is not None and not seen["cli_loaded"]
    assert not seen["processor_loaded"]  # the forkserver reads its WORKER_PRELOAD (run/worker_preload.py)
    assert "tests.processors" in seen["preload"]  # the configured processor, not the default
    assert "openai" not in seen["preload"]  # a drain preloads no client


def test_a_service_forkserver_preloads_its_clients(docutrain, tmp_path):
    env = {**docutrain.env, "DOCUTRAIN_EMBEDDER": "openai", "OPENAI_API_KEY": "sk-test-not-real"}
    seen = early_start(["run"], env, tmp_path)
    assert "openai" in seen["preload"] and "docutrain_cli.run.worker_preload" in seen["preload"]


@pytest.mark.parametrize("args", [["status"], ["run", "--help"], ["--config", "missing.toml", "run"], []])
def test_other_command_lines_start_nothing_and_raise_nothing(docutrain, tmp_path, args):
    # A missing settings file is the CLI's to report (one line); here only speed is at stake.
    assert early_start(args, docutrain.env, tmp_path)["pid"] is None


def test_an_empty_drain_stops_the_forkserver_it_started(docutrain, tmp_path):
    # Until its imports are done the forkserver holds the command's stdout and
    # stderr: cron, reading them, waited for it at the end of every empty run.
    from harness import cli_in_process

    result = cli_in_process(
        ["run", "--drain", "--json"],
        "import os\ntry:\n    os.kill(early, 0)\n    print('alive', file=sys.stderr)\n"
        "except ProcessLookupError:\n    print('gone', file=sys.stderr)\n",
        before="from docutrain_cli import console\nconsole.start_workers_early(['run', '--drain'])\n"
        "from multiprocessing import forkserver\nearly = forkserver._forkserver._forkserver_pid\n",
        env=docutrain.env, cwd=tmp_path,
    )
    assert json.loads(result.stdout)["stop_reason"] == "drained", result.stderr
    assert result.stderr.strip().splitlines()[-1] == "gone"

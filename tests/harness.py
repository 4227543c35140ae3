"""What every test's child processes and waits share: the environment a
child starts with, and `wait_for`, the one way a test waits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Everything docutrain (or a library it calls) reads as a setting or a key:
# a developer's own queue, store, OpenAI/Supabase keys or Cloudflare token
# must never reach a test's child process.
SCRUBBED_PREFIXES = ("DOCUTRAIN_", "OPENAI_", "SUPABASE_", "CLOUDFLARE_")


def child_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any docutrain setting or service
    key, with the repository importable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", interval: float = 0.05):
    """Poll until `predicate()` is truthy and return its value; fail the
    test naming `what` after `timeout` seconds. Tests wait for observable
    state with this, never for a fixed time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def cli_in_process(argv: list[str], report: str, *, env: dict[str, str], cwd: Path,
                   before: str = "") -> subprocess.CompletedProcess:
    """Run `docutrain argv` in a fresh interpreter, then `report` (Python that
    prints to stderr) in that same process: what the command left behind
    there (modules imported, a forkserver started). `before` runs first."""
    code = (
        "import sys\n" + before
        + "from docutrain_cli.cli import main\n"
        + f"sys.argv = ['docutrain', *{argv!r}]\n"
        + "try:\n    main()\nexcept SystemExit:\n    pass\n"
        + report + "\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)

"""The README's "Connect your app" example runs as written on a machine
without Supabase: the shell block is run by bash with a real `docutrain
serve` and `docutrain run`, curl as the client (only the port is changed,
so a busy 8080 on this machine cannot fail the test)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT, child_env


def readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```sh\n", text.index(after)) + len("```sh\n")
    return text[start : text.index("```", start)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_the_local_file_example_runs_as_written(tmp_path):
    port = str(free_port())
    script = readme_block("On a machine without Supabase")
    assert "docutrain serve --allow-local-paths ./uploads &" in script
    script = script.replace("8080", port).replace("./uploads &", f"./uploads --port {port} &")
    env = child_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    posted, document, job, retry, status, health, ready = answers
    assert posted["created"] is True and posted["status"] == "pending"
    assert document["user_document_id"] == "report-1" and document["job_id"] == posted["job_id"]
    assert job["source"] == str(tmp_path / "uploads" / "report.txt") and job["metadata"] == {"title": "Q3"}
    assert "not dead" in retry["error"]
    assert status["queued"] + status["running"] + status["done"] == 1
    assert health == {"ok": True} and ready == {"ok": True, "queue": "local"}


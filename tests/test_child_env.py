"""A developer's own settings and keys never reach a test's child process
(tests/harness.py's child_env, which every test subprocess starts from)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import Docutrain

MAIN, DEAD = "main0001", "dead0001"


def test_a_cloudflare_token_in_the_parent_never_reaches_a_docutrain_subprocess(tmp_path, monkeypatch, cloudflare):
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cloudflare.token)  # as on a developer's machine
    docutrain = Docutrain(tmp_path)
    cloudflare.create_queue(DEAD, max_retries=100)
    cloudflare.create_queue(MAIN, dead_letter_queue=DEAD)
    queue = dict(DOCUTRAIN_QUEUE=f"cloudflare://{cloudflare.account_id}/{MAIN}",
                 DOCUTRAIN_CLOUDFLARE_DEAD_QUEUE=DEAD, DOCUTRAIN_CLOUDFLARE_API_URL=cloudflare.url)

    refused = docutrain("status", "--json", **queue)
    assert refused.returncode == 2
    assert "a cloudflare:// queue needs CLOUDFLARE_API_TOKEN" in refused.stderr
    assert cloudflare.requests == []  # it never spoke to Cloudflare with the parent's token

    # The control: given on purpose, the same token reaches the queue.
    given = docutrain("status", "--json", CLOUDFLARE_API_TOKEN=cloudflare.token, **queue)
    assert given.returncode == 0, given.stderr
    assert cloudflare.requests


@pytest.mark.parametrize("name", [
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY",
    "CLOUDFLARE_API_TOKEN", "DOCUTRAIN_QUEUE", "DOCUTRAIN_EMBEDDER", "DOCUTRAIN_CONFIG",
])
def test_no_setting_or_key_of_the_parent_reaches_a_child(tmp_path, monkeypatch, name):
    monkeypatch.setenv(name, "from-the-developers-shell")
    docutrain = Docutrain(tmp_path)
    child = subprocess.run([sys.executable, "-c", f"import os; print(os.environ.get({name!r}))"],
                           env=docutrain.env, capture_output=True, text=True, check=True)
    assert child.stdout.strip() != "from-the-developers-shell"

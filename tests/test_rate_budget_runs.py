"""The rate budget through the CLI: real `docutrain run` processes with real
worker processes against the OpenAI stand-in enforcing an account limit over
HTTP. Limits are scaled down (thousands of tokens a minute) so each test
takes seconds."""

from __future__ import annotations

import json
import signal


import pdfs

KEY = "sk-proj-budget-test-0123456789abcdefXYZ"


def corpus(folder, count: int, pages: int = 5) -> None:
    folder.mkdir()
    for i in range(count):
        pdfs.multi_page(folder / f"doc{i:03}.pdf", pages=pages, seed=i + 1)


def env_for(standin, **extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": standin.base_url, **extra}


def job_states(docutrain) -> list[tuple[str, int]]:
    return [(j["state"], j["attempts"]) for j in json.loads(docutrain("jobs", "--json").stdout)]


def test_a_429_never_costs_an_attempt(docutrain, tmp_path, openai_standin):
    corpus(tmp_path / "uploads", 1, pages=2)
    docutrain("enqueue", "uploads")
    openai_standin.fail_next(4, status=429, retry_after=0.05)  # more than the SDK's retries ever were
    result = docutrain("run", "--workers", "1", "--drain", "--json", **env_for(openai_standin))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["retried"], summary["dead"]) == (1, 0, 0)
    assert summary["totals"]["rate_limited"] == 4 and summary["rate_wait_seconds"] > 0
    assert job_states(docutrain) == [("done", 1)]  # the first attempt did it


def test_workers_together_stay_under_the_limit_and_learn_it(docutrain, tmp_path, openai_standin):
    # 12 documents of about 870 tokens against 60,000 tokens a minute, with
    # the account's bucket a tenth full: the first few go at once, the
    # other 4,000-odd tokens must be paced (about 5 s).
    openai_standin.limit(tpm=60_000, latency=0.05, level=0.1)
    corpus(tmp_path / "uploads", 12)
    docutrain("enqueue", "uploads")
    result = docutrain("run", "--workers", "4", "--drain", "--json", **env_for(openai_standin))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["dead"], summary["retried"]) == (12, 0, 0)
    assert openai_standin.tokens > 6_000 + 3_000  # well over what the bucket held: pacing was needed
    assert openai_standin.rate_limited <= 2  # paced instead of refused
    # (How much they wait depends on how fast this machine extracts: see
    # test_ratelimit's worker processes for pacing under pressure.)
    status = docutrain.status()
    [budget] = status["embedding_budget"]
    assert (budget["tokens_per_minute_limit"], budget["limit_source"]) == (60_000, "headers")
    assert budget["tokens_total"] == openai_standin.tokens
    assert KEY not in json.dumps(status) and KEY not in result.stderr


def test_patience_gives_the_job_back_without_an_attempt(docutrain, tmp_path, openai_standin):
    corpus(tmp_path / "uploads", 1, pages=2)
    docutrain("enqueue", "uploads")
    openai_standin.fail_next(12, status=429, retry_after=0.1)
    result = docutrain(
        "run", "--workers", "1", "--drain", "--json",
        **env_for(openai_standin, DOCUTRAIN_RATE_LIMIT_PATIENCE="0.5s"),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["given_back"] >= 1 and summary["done"] == 1 and summary["retried"] == 0
    assert job_states(docutrain) == [("done", 1)]
    assert "back to the queue" in result.stderr


def test_exhausted_quota_leaves_every_job_queued_and_exits_5(docutrain, tmp_path, openai_standin):
    corpus(tmp_path / "uploads", 6, pages=2)
    docutrain("enqueue", "uploads")
    openai_standin.quota_exhausted = True
    result = docutrain("run", "--workers", "2", "--drain", **env_for(openai_standin))
    assert result.returncode == 5, result.stderr
    assert job_states(docutrain) == [("queued", 0)] * 6  # nothing dead, no attempt charged
    last = result.stderr.strip().splitlines()[-1]
    assert "quota is exhausted" in last and "billing" in last and "6 jobs wait in the queue" in last
    status = docutrain("status")
    assert "stopped at" in status.stdout and "quota is exhausted" in status.stdout
    [budget] = docutrain.status()["embedding_budget"]
    assert "insufficient_quota" in budget["problem"]
    # Billing fixed: the next run does them all, with their first attempt.
    openai_standin.quota_exhausted = False
    again = docutrain("run", "--workers", "2", "--drain", **env_for(openai_standin))
    assert again.returncode == 0, again.stderr
    assert job_states(docutrain) == [("done", 1)] * 6
    assert docutrain.status()["embedding_budget"][0]["problem"] is None


def test_a_revoked_key_exits_5_naming_the_setting_and_never_the_key(docutrain, tmp_path, openai_standin):
    corpus(tmp_path / "uploads", 3, pages=2)
    docutrain("enqueue", "uploads")
    openai_standin.key_revoked = True  # its message names the key, masked, as OpenAI's does
    result = docutrain("run", "--workers", "2", "--drain", "--json", **env_for(openai_standin))
    assert result.returncode == 5
    assert "OPENAI_API_KEY" in result.stderr.strip().splitlines()[-1]
    for secret in (KEY, KEY[:8], KEY[-4:]):
        assert secret not in result.stderr and secret not in result.stdout
    assert json.loads(result.stdout)["stop_reason"] == "account"
    assert job_states(docutrain) == [("queued", 0)] * 3


def test_a_service_pauses_on_quota_trouble_and_resumes_by_itself(docutrain, tmp_path, openai_standin):
    corpus(tmp_path / "uploads", 3, pages=2)
    docutrain("enqueue", "uploads")
    openai_standin.quota_exhausted = True
    service = docutrain.start(
        "run", "--workers", "2", **env_for(openai_standin, DOCUTRAIN_ACCOUNT_RETRY_INTERVAL="1s")
    )
    try:
        docutrain.wait_for(lambda: openai_standin.hits >= 1, what="a first refused request")
        # Refused, paused, tried again: still nothing charged.
        docutrain.wait_for(lambda: openai_standin.hits >= 2, what="a second try after the pause")
        assert {state for state, _ in job_states(docutrain)} <= {"queued", "running"}
        assert all(attempts <= 1 for _, attempts in job_states(docutrain))
        openai_standin.quota_exhausted = False
        # each status check is a command of its own: seconds apiece on a loaded machine
        docutrain.wait_for(lambda: docutrain.status()["done"] == 3, timeout=60, what="all done after the pause")
    finally:
        service.send_signal(signal.SIGTERM)
        _, stderr = service.communicate(timeout=30)
    assert service.returncode == 0, stderr
    assert "paused: the OpenAI quota is exhausted" in stderr
    assert job_states(docutrain) == [("done", 1)] * 3

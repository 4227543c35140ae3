"""The embedding API's rate limit: the stand-in that enforces it as OpenAI
does, the shared budget, and the embedder waiting its turn (real HTTP, real
SQLite files; the limits are scaled down so each test takes seconds)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from docutrain_cli.pipeline.ratelimit import (
    RateBudget,
    SQLiteBudgetStore,
    budget_key,
    parse_reset,
    refusal_wait,
)
from openai_standin import go_duration

KEY = "sk-test-ratelimit-0123456789abcdef"


def post(standin, texts: list[str], key: str = KEY) -> tuple[int, dict, dict]:
    body = json.dumps({"model": "text-embedding-3-small", "input": texts, "dimensions": 4}).encode()
    request = urllib.request.Request(
        standin.base_url + "/embeddings", body,
        {"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


# -- the stand-in -------------------------------------------------------------------


def test_go_durations_as_openai_writes_them():
    assert [go_duration(s) for s in (0.012, 0.25, 1, 1.5, 20.5, 360, 61.25)] == [
        "12ms", "250ms", "1s", "1.5s", "20.5s", "6m0s", "1m1.25s",
    ]


def test_the_standin_enforces_a_one_minute_token_bucket_like_openai(openai_standin):
    openai_standin.limit(tpm=600, rpm=1000)
    status, headers, _ = post(openai_standin, ["one two three four five"] * 20)  # 100 tokens
    assert status == 200
    assert headers["x-ratelimit-limit-tokens"] == "600" and headers["x-ratelimit-limit-requests"] == "1000"
    assert 499 <= int(headers["x-ratelimit-remaining-tokens"]) <= 501
    assert parse_reset(headers["x-ratelimit-reset-tokens"]) == pytest.approx(10, abs=0.3)  # 100 of 600/min
    status, headers, body = post(openai_standin, ["word " * 550])  # 550 > about 500 left
    assert status == 429
    error = body["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert error["message"].startswith(
        "Rate limit reached for text-embedding-3-small in organization org-"
    ) and "on tokens per min (TPM): Limit 600, Used 10" in error["message"]
    wait = refusal_wait({}, error["message"])  # "Please try again in 5.x s"
    assert wait == pytest.approx(5, abs=0.5)
    assert int(headers["retry-after-ms"]) == pytest.approx(wait * 1000, abs=100)
    assert headers["retry-after"] in ("5", "6")  # whole seconds, rounded up
    assert "x-ratelimit-remaining-tokens" in headers  # on refusals too
    assert (openai_standin.rate_limited, openai_standin.successes) == (1, 1)


def test_the_standin_refuses_a_request_larger_than_the_whole_limit(openai_standin):
    openai_standin.limit(tpm=100)
    status, headers, body = post(openai_standin, ["word " * 150])
    assert status == 429 and "retry-after" not in headers  # waiting never helps
    assert body["error"]["message"].startswith("Request too large for text-embedding-3-small")
    assert "Limit 100, Requested 150" in body["error"]["message"]


def test_the_standin_request_bucket(openai_standin):
    openai_standin.limit(rpm=3)
    assert [post(openai_standin, ["x"])[0] for _ in range(4)] == [200, 200, 200, 429]
    _, headers, body = post(openai_standin, ["x"])
    assert "on requests per min (RPM): Limit 3" in body["error"]["message"]
    assert body["error"]["type"] == "requests"
    assert parse_reset(headers["x-ratelimit-reset-requests"]) == pytest.approx(60, abs=2)


def test_the_standin_quota_and_revoked_key_switches(openai_standin):
    openai_standin.quota_exhausted = True
    status, _, body = post(openai_standin, ["x"])
    assert status == 429 and body["error"]["code"] == body["error"]["type"] == "insufficient_quota"
    assert body["error"]["message"].startswith("You exceeded your current quota")
    openai_standin.key_revoked = True
    status, _, body = post(openai_standin, ["x"])
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert KEY not in body["error"]["message"] and KEY[:8] in body["error"]["message"]  # masked, as OpenAI does


def test_the_standin_counts_tokens_per_minute(openai_standin):
    openai_standin.limit(tpm=100_000, latency=0.05)
    started = time.monotonic()
    for _ in range(5):
        post(openai_standin, ["a b c d e f g h i j"] * 10)  # 100 tokens each
    assert time.monotonic() - started >= 0.25  # the latency is real
    assert openai_standin.successes == 5
    assert openai_standin.tokens_per_minute(since=started, until=time.monotonic()) > 0

"""The embedding API's rate limit: the stand-in that enforces it as OpenAI
does, the shared budget, and the embedder waiting its turn (real HTTP, real
SQLite files; the limits are scaled down so each test takes seconds)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from docutrain_cli.ratelimit.budget import (
    RateBudget,
    SQLiteBudgetStore,
    budget_key,
    parse_reset,
    refusal_wait,
)
from budget_line import answered
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


# -- what the server says ---------------------------------------------------------------


def test_reset_durations_and_how_long_a_refusal_asks_to_wait():
    assert parse_reset("6m0s") == 360 and parse_reset("12ms") == 0.012 and parse_reset("1.5s") == 1.5
    assert parse_reset("1h2m3s") == 3723 and parse_reset("soon") is None and parse_reset("") is None
    assert refusal_wait({"retry-after-ms": "250", "retry-after": "1"}, None) == 0.25
    assert refusal_wait({"retry-after": "3"}, "Please try again in 20ms.") == 3.0
    assert refusal_wait({}, "Limit 100, Used 100, Requested 5. Please try again in 1m30s. Visit") == 90
    assert refusal_wait({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s",
                         "x-ratelimit-remaining-requests": "7", "x-ratelimit-reset-requests": "9s"}, None) == 2
    assert refusal_wait({}, "Rate limit reached") is None


# -- the budget ---------------------------------------------------------------------------


def test_the_budget_key_names_the_account_without_the_key():
    key = budget_key(None, KEY, "text-embedding-3-small")
    assert KEY not in key and KEY[3:12] not in key
    assert key == budget_key("https://api.openai.com/v1/", KEY, "text-embedding-3-small")
    assert key != budget_key(None, KEY + "x", "text-embedding-3-small")


def test_reservations_take_turns_at_the_refill_rate(tmp_path):
    store = SQLiteBudgetStore(tmp_path / "queue.db.budget")
    budget = answered(RateBudget(store, "k", tpm=6000, margin=0.0))  # 100 tokens a second
    first = budget.reserve(6000)  # a full bucket covers the first minute's burst
    assert first.wait == 0
    # Then each reservation waits for its own share, in order: no herd.
    waits = [budget.reserve(100).wait for _ in range(3)]
    assert waits == pytest.approx([1, 2, 3], abs=0.05)
    # Another process (another handle on the file) sees the same queue.
    other = RateBudget(SQLiteBudgetStore(tmp_path / "queue.db.budget"), "k", tpm=6000, margin=0.0)
    assert other.reserve(100).wait == pytest.approx(4, abs=0.05)
    # The server counted less than reserved: the difference comes back.
    budget.settle(first, 5500, None, waited=0.0)
    assert other.reserve(100).wait == pytest.approx(0, abs=0.05)
    assert budget.snapshot()["tokens_total"] == 5500


def test_a_refusal_holds_everyone_off_and_the_remaining_header_corrects_the_level(tmp_path):
    budget = answered(RateBudget(SQLiteBudgetStore(tmp_path / "b"), "k", tpm=60_000, margin=0.0))
    budget.refused(2.0, None, waited=0.0)
    assert budget.reserve(10).wait == pytest.approx(2.0, abs=0.05)
    # Someone else used the key: the server has 600 left where we thought 60,000.
    fresh = RateBudget(SQLiteBudgetStore(tmp_path / "c"), "k", tpm=60_000, margin=0.0)
    r = fresh.reserve(10)
    fresh.settle(r, 10, {"x-ratelimit-remaining-tokens": "600"}, waited=0.0)
    assert fresh.reserve(1600).wait == pytest.approx(1.0, abs=0.05)  # 1,000 short at 1,000/s


def test_the_first_request_goes_alone_until_its_answer_tells_the_limit(tmp_path):
    budget = RateBudget(SQLiteBudgetStore(tmp_path / "b"), "k")
    first = budget.reserve(5000)
    assert (first.wait, first.again) == (0, False)
    held = budget.reserve(5000)  # another worker: wait for the first answer, then ask again
    assert held.again and 0 < held.wait <= 0.1
    budget.settle(first, 5000, {"x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "1000"}, 0.0)
    after = budget.reserve(5000)
    assert not after.again and after.wait > 30  # learned: 6,000 a minute, 1,000 left less the margin
    # A server that reports no limits: after its first answer nobody waits.
    open_server = RateBudget(SQLiteBudgetStore(tmp_path / "c"), "k")
    r = open_server.reserve(10)
    assert open_server.reserve(10).again
    open_server.settle(r, 10, {}, 0.0)
    assert [open_server.reserve(10**6).wait for _ in range(3)] == [0, 0, 0]
    # A first request that failed lets the next one try at once.
    failing = RateBudget(SQLiteBudgetStore(tmp_path / "d"), "k")
    failing.cancel(failing.reserve(10))
    assert not failing.reserve(10).again


def test_the_first_request_goes_alone_with_a_configured_limit_too(tmp_path):
    # A configured limit says nothing of what another client on the key has
    # used: a fresh run's workers firing at once could all be refused.
    budget = RateBudget(SQLiteBudgetStore(tmp_path / "b"), "k", tpm=60_000, margin=0.0)
    first = budget.reserve(1000)
    assert (first.wait, first.again) == (0, False)
    held = budget.reserve(1000)
    assert held.again and 0 < held.wait <= 0.1
    # Its answer: the account had 1,000 tokens left, not the 60,000 we assumed.
    budget.settle(first, 1000, {"x-ratelimit-remaining-tokens": "0"}, 0.0)
    after = budget.reserve(1000)
    assert not after.again and after.wait == pytest.approx(1.0, abs=0.05)  # 1,000 at 1,000 a second
    # A first request that failed lets the next one try at once.
    failing = RateBudget(SQLiteBudgetStore(tmp_path / "c"), "k", tpm=60_000, margin=0.0)
    failing.cancel(failing.reserve(10))
    assert not failing.reserve(10).again


def test_limits_are_learned_from_the_headers_when_not_set(tmp_path):
    budget = RateBudget(SQLiteBudgetStore(tmp_path / "b"), "k")  # embedding_tpm = rpm = 0
    r = budget.reserve(100)
    assert r.wait == 0  # nothing known yet: the first request goes at once
    budget.settle(r, 100, {"x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "5900",
                           "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59"}, 0.0)
    view = budget.snapshot()
    assert (view["tokens_per_minute_limit"], view["requests_per_minute_limit"], view["limit_source"]) == (
        6000, 60, "headers")
    # 5,900 were left, but our bucket holds at most 5,820 (3 % under): 80 short.
    assert budget.reserve(5900).wait == pytest.approx(80 * 60 / 5820, abs=0.1)
    assert budget.request_ceiling() == int(6000 * 0.97 / 4)


# -- worker processes sharing one budget --------------------------------------------------


def test_worker_processes_sharing_one_budget_stay_under_the_limit(openai_standin, tmp_path):
    from budget_workers import run_workers

    # 6 processes x 3 requests x 50 tokens against 6,000 a minute, the
    # account's bucket 5 % full: 600 tokens must be paced (about 6 s), while
    # the processes would send them all within a second or two.
    openai_standin.limit(tpm=6_000, level=0.05)
    spec = ("sqlite", str(tmp_path / "queue.db.budget"))
    elapsed = run_workers(openai_standin.base_url, [spec] * 6, requests=3, words=50)
    assert openai_standin.successes == 18 and openai_standin.tokens == 900
    assert openai_standin.rate_limited <= 1
    assert elapsed >= (900 - 300) / 100 - 0.5  # paced at the limit's rate, not refused


# -- showing it -----------------------------------------------------------------------------


def test_the_live_display_log_lines_and_summary_show_the_budget(tmp_path):
    import io

    from rich.console import Console

    from docutrain_cli.cli.progress import LogObserver, RichObserver, budget_line, summary_line
    from docutrain_cli.run.summary import RunSummary

    budget = RateBudget(SQLiteBudgetStore(tmp_path / "b"), budget_key(None, KEY, "text-embedding-3-small"),
                        tpm=120_000)
    r = budget.reserve(1000)
    budget.settle(r, 900, None, waited=12.5)
    view = budget.snapshot() | {"run_wait_seconds": 12.5, "run_rate_limited": 2, "run_tokens_per_minute": 90_000}
    assert view["tokens_last_minute"] == 900
    line = budget_line(view)
    assert line.startswith("900 tokens in the last minute, limit 120,000/min (settings)")
    assert "waited 12 s for the budget; 2 answers 429" in line

    console = Console(file=io.StringIO(), width=200, no_color=True, highlight=False)
    live = RichObserver(console)
    live.budget(view)
    console.print(live.render())
    assert "limit 120,000/min" in console.file.getvalue()

    stream = io.StringIO()
    LogObserver(stream).budget(view)
    assert "embedding: 900 tokens in the last minute" in stream.getvalue()

    summary = RunSummary(done=1, elapsed=60.0, budget=view)
    summary.totals["tokens_embedded"] = 900
    assert "embedding: 90,000 tokens/min over the run, limit 120,000/min" in summary_line(summary)
    data = summary.to_dict()
    assert data["tokens_per_minute"] == 900 and data["budget"]["tokens_per_minute_limit"] == 120_000

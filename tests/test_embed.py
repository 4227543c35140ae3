"""Embedders: the real openai client against the HTTP stand-in, and the offline one."""

from __future__ import annotations

import math
import socket
import time

import pytest

from docutrain_cli.config import Settings
from docutrain_cli.errors import AccountError, PermanentError, RateLimitedError, TransientError
from docutrain_cli.pipeline.embed import OpenAIEmbedder, plan_batches
from docutrain_cli.pipeline.models import OFFLINE_DIMENSIONS
from docutrain_cli.pipeline.offline import OfflineEmbedder
from docutrain_cli.pipeline.models import price_per_million_tokens
from docutrain_cli.run.worker import WorkerContext
from openai_standin import fake_vector

KEY = "sk-test-0123456789abcdefghij"


def openai_embedder(standin, **kwargs) -> OpenAIEmbedder:
    kwargs.setdefault("max_retries", 2)
    return OpenAIEmbedder(api_key=KEY, base_url=standin.base_url, timeout=10, **kwargs)


def test_float_vectors_of_the_requested_size(openai_standin):
    embedder = openai_embedder(openai_standin, dimensions=64)
    vectors = embedder.embed(["first text", "second text here"])
    assert [len(v) for v in vectors] == [64, 64]
    assert vectors[1] == pytest.approx(fake_vector("second text here", 64))
    [request] = openai_standin.requests
    assert request.dimensions == 64 and request.model == "text-embedding-3-small"
    assert request.authorization == f"Bearer {KEY}"
    assert embedder.tokens_used == 5  # as the server's usage reports it
    assert embedder.dimensions == 64


def test_default_dimensions_are_not_sent(openai_standin):
    embedder = openai_embedder(openai_standin)
    [vector] = embedder.embed(["x"])
    assert len(vector) == 1536 and openai_standin.requests[0].dimensions is None


def test_many_inputs_take_as_few_requests_as_the_api_allows(openai_standin):
    embedder = openai_embedder(openai_standin, dimensions=8)
    texts = [f"text number {i}" for i in range(3000)]
    vectors = embedder.embed(texts)
    assert [len(r.inputs) for r in openai_standin.requests] == [2048, 952]
    assert openai_standin.inputs == texts  # in order, each once
    assert vectors[2999] == pytest.approx(fake_vector("text number 2999", 8))


def test_the_token_budget_splits_requests_too(openai_standin):
    embedder = openai_embedder(openai_standin, dimensions=8, max_tokens=1000)
    # Planned at about four UTF-8 bytes a token: 1,200 bytes weigh 300.
    embedder.embed(["word " * 240] * 7)
    assert [len(r.inputs) for r in openai_standin.requests] == [3, 3, 1]


def test_requests_are_planned_by_likely_tokens_not_the_chunkers_upper_bound(openai_standin):
    embedder = openai_embedder(openai_standin, dimensions=8, max_tokens=1000)
    texts = ["international " * 20] * 10  # the chunker's estimate: 80 tokens each; about 70 planned
    embedder.embed(texts, token_counts=[embedder.counter.count(t) for t in texts])
    assert [len(r.inputs) for r in openai_standin.requests] == [10]


def test_plan_batches():
    assert list(plan_batches([5, 5, 5], max_inputs=2, max_tokens=100)) == [range(0, 2), range(2, 3)]
    assert list(plan_batches([60, 50, 40, 10], max_inputs=10, max_tokens=100)) == [
        range(0, 1), range(1, 4)
    ]
    assert list(plan_batches([500], max_inputs=10, max_tokens=100)) == [range(0, 1)]
    assert list(plan_batches([])) == []


def test_the_plan_follows_the_token_density_the_server_reports(openai_standin):
    embedder = openai_embedder(openai_standin, dimensions=8, max_tokens=1000)
    # 280 bytes: planned as 70 tokens at first; the stand-in counts 20 (a word each).
    texts = [f"international{i:02d} " + "international " * 19 for i in range(40)]
    embedder.embed(texts)
    # The first request's usage shows the server counts far fewer: the rest go in one.
    assert [len(r.inputs) for r in openai_standin.requests] == [14, 26]
    assert openai_standin.inputs == texts


def test_a_server_that_counts_more_tokens_splits_the_batch_and_teaches_the_plan(openai_standin):
    openai_standin.max_tokens_per_request = 20
    embedder = openai_embedder(openai_standin, dimensions=8, max_tokens=20)
    # 15 bytes: planned as 4 tokens, but the stand-in counts 8 (one per letter).
    texts = [f"a b c d e f g {i % 10}" for i in range(12)]
    vectors = embedder.embed(texts)
    assert len(vectors) == 12 and openai_standin.inputs == texts
    assert all(len(r.inputs) <= 2 for r in openai_standin.requests)
    refused = openai_standin.hits - len(openai_standin.requests)
    assert refused == 1  # "Requested 40 tokens": one refusal, then the plan fits
    hits = openai_standin.hits
    embedder.embed(texts[:4])
    assert openai_standin.hits == hits + 2  # planned right the first time now


def test_a_token_refusal_without_a_count_halves_the_batch(openai_standin):
    embedder = openai_embedder(openai_standin, dimensions=8, max_tokens=20)
    texts = [f"a b c d e f g {i}" for i in range(8)]
    openai_standin.max_tokens_per_request = 20
    openai_standin.token_limit_message = "This model's maximum context length is exceeded: too many tokens"
    assert len(embedder.embed(texts)) == 8 and openai_standin.inputs == texts
    assert all(len(r.inputs) <= 2 for r in openai_standin.requests)


def test_429_is_a_wait_as_long_as_the_server_asks(openai_standin):
    openai_standin.fail_next(4, status=429, retry_after=0.01)
    embedder = openai_embedder(openai_standin, dimensions=8, max_retries=0)
    started = time.monotonic()
    assert len(embedder.embed(["hello"])) == 1
    assert openai_standin.hits == 5  # however many, and not counted against max_retries
    assert embedder.rate_limited == 4 and embedder.waited > 0.04
    assert time.monotonic() - started < 5  # retry-after-ms honoured, not a blind backoff


def test_429s_beyond_patience_give_the_job_back(openai_standin):
    openai_standin.fail_next(1000, status=429, retry_after=0.05)
    embedder = openai_embedder(openai_standin, dimensions=8, patience=0.5)
    with pytest.raises(RateLimitedError, match="kept refusing") as info:
        embedder.embed(["hello"])
    assert info.value.retry_after >= 0.05 and openai_standin.requests == []
    assert 5 <= openai_standin.hits <= 12


@pytest.mark.parametrize("status", [500, 503])
def test_persistent_5xx_become_transient_errors(openai_standin, status):
    openai_standin.fail_next(10, status=status, retry_after=0.01)
    embedder = openai_embedder(openai_standin, dimensions=8, max_retries=2)
    with pytest.raises(TransientError, match=str(status)):
        embedder.embed(["hello"])
    assert openai_standin.hits == 3  # one try plus the client's two retries
    assert openai_standin.requests == []


def test_a_bad_key_is_an_account_problem_and_never_echoed(openai_standin):
    openai_standin.required_key = "sk-the-right-key-000000000000"
    embedder = openai_embedder(openai_standin)
    with pytest.raises(AccountError) as info:
        embedder.embed(["hello"])
    assert "401" in str(info.value) and "OPENAI_API_KEY" in str(info.value)
    assert KEY[:8] not in str(info.value) and openai_standin.hits == 1  # 401 is not retried


def test_exhausted_quota_is_an_account_problem(openai_standin):
    openai_standin.quota_exhausted = True
    embedder = openai_embedder(openai_standin)
    with pytest.raises(AccountError, match="quota is exhausted"):
        embedder.embed(["hello"])
    assert openai_standin.hits == 1


def test_unknown_model_is_permanent(openai_standin):
    embedder = openai_embedder(openai_standin, model="text-embedding-9-huge")
    with pytest.raises(PermanentError, match="'text-embedding-9-huge' not found"):
        embedder.embed(["hello"])


def test_unreachable_server_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    embedder = OpenAIEmbedder(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=5)
    with pytest.raises(TransientError, match="cannot reach"):
        embedder.embed(["hello"])


def test_offline_embedder_is_deterministic_normalised_and_lexical():
    embedder = OfflineEmbedder()
    a, b, c = embedder.embed([
        "The tenant pays the security deposit.",
        "Security deposit paid by the tenant.",
        "Quarterly revenue grew in Asia.",
    ])
    assert len(a) == OFFLINE_DIMENSIONS
    assert math.isclose(math.sqrt(sum(x * x for x in a)), 1.0, rel_tol=1e-9)
    assert OfflineEmbedder().embed(["The tenant pays the security deposit."])[0] == a

    def cos(x, y):
        return sum(p * q for p, q in zip(x, y))

    assert cos(a, b) > 0.4 > cos(a, c)
    assert embedder.tokens_used > 0


def test_prices():
    assert price_per_million_tokens("text-embedding-3-small") == 0.02
    assert price_per_million_tokens("text-embedding-3-large") == 0.13
    assert price_per_million_tokens("text-embedding-ada-002") == 0.10
    assert price_per_million_tokens("offline-hash-v1") == 0.0
    assert price_per_million_tokens("nomic-embed-text") is None


def test_a_worker_context_makes_its_embedder_once_on_first_use(openai_standin):
    offline = WorkerContext(Settings(embedder="offline"))
    assert offline._embedder is None  # nothing made before a job needs it
    assert offline.embedder is offline.embedder and offline.embedder.kind == "offline"
    online = Settings(openai_api_key=KEY, openai_base_url=openai_standin.base_url, embedding_dimensions=8)
    context = WorkerContext(online)
    embedder = context.embedder
    assert embedder.kind == "openai" and embedder is context.embedder
    assert WorkerContext(online.replace(embedding_dimensions=16)).embedder.requested_dimensions == 16
    assert KEY not in repr(online)

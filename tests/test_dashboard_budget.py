"""The embedding rate budget (issue 13) on the dashboard and /metrics (issue
15), over real HTTP: a real `docutrain run` in its own processes against the
OpenAI stand-in, which enforces an account limit and refuses keys the way
OpenAI does; then `docutrain serve`'s app on 127.0.0.1 reads what the run
left. `serve` is given the endpoint but not the key, as an operator's often
is: the budget is still found by model and endpoint."""

from __future__ import annotations

import re

import httpx
from dashboard_server import dashboard
from prometheus_client.parser import text_string_to_metric_families

import pdfs

TOKEN = "test-token-123"
KEY = "sk-proj-dashboard-budget-0123456789abcdefXYZ"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def run_against(docutrain, tmp_path, standin, documents: int) -> object:
    (tmp_path / "uploads").mkdir()
    for i in range(documents):
        pdfs.multi_page(tmp_path / "uploads" / f"doc{i}.pdf", pages=2, seed=i + 1)
    docutrain("enqueue", "uploads")
    return docutrain("run", "--workers", "2", "--drain", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=standin.base_url)


def scrape(client: httpx.Client) -> dict:
    r = client.get("/metrics", headers=AUTH)
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def attention(html: str) -> str:
    found = re.search(r'<section class="attention".*?</section>', html, re.S)
    return found.group(0) if found else ""


def test_a_learned_limit_is_drawn_on_the_chart_and_exported(docutrain, tmp_path, openai_standin):
    openai_standin.limit(tpm=60_000)
    result = run_against(docutrain, tmp_path, openai_standin, documents=2)
    assert result.returncode == 0, result.stderr
    [budget] = docutrain.status()["embedding_budget"]
    assert (budget["tokens_per_minute_limit"], budget["limit_source"]) == (60_000, "headers")
    labels = (("endpoint", budget["endpoint"]), ("model", budget["model"]))

    with dashboard(docutrain, openai_base_url=openai_standin.base_url) as url, httpx.Client(base_url=url) as client:
        page = client.get("/", headers=AUTH)
        samples = scrape(client)
    assert page.status_code == 200
    assert 'class="limit"' in page.text and "limit 60,000 tokens/min" in page.text  # the dashed line
    assert "learned from the API" in page.text and budget["model"] in page.text
    assert attention(page.text) == ""  # nothing wrong
    assert samples[("docutrain_embedding_tokens_per_second_limit", labels)] == 1_000  # 60,000 a minute
    assert samples[("docutrain_embedding_tokens_last_minute", labels)] == budget["tokens_last_minute"] > 0
    assert samples[("docutrain_embedding_rate_wait_seconds_total", labels)] == budget["waited_seconds_total"]
    assert samples[("docutrain_embedding_rate_limited_total", labels)] == budget["rate_limited_total"]
    assert samples[("docutrain_embedding_account_problem", labels)] == 0
    assert ("docutrain_embedding_requests_per_second_limit", labels) not in samples  # not known: no sample


def test_without_a_known_limit_no_line_is_drawn(docutrain, tmp_path, openai_standin):
    result = run_against(docutrain, tmp_path, openai_standin, documents=1)  # the stand-in sends no limits
    assert result.returncode == 0, result.stderr
    with dashboard(docutrain, openai_base_url=openai_standin.base_url) as url, httpx.Client(base_url=url) as client:
        page = client.get("/", headers=AUTH)
        samples = scrape(client)
    assert 'class="limit"' not in page.text and "no embedding rate limit known yet" in page.text
    assert not any(name == "docutrain_embedding_tokens_per_second_limit" for name, _ in samples)


def test_a_revoked_key_shows_under_needs_attention_without_the_key(docutrain, tmp_path, openai_standin):
    openai_standin.key_revoked = True  # its message names the key, masked, as OpenAI's does
    result = run_against(docutrain, tmp_path, openai_standin, documents=2)
    assert result.returncode == 5, result.stderr
    [budget] = docutrain.status()["embedding_budget"]
    labels = (("endpoint", budget["endpoint"]), ("model", budget["model"]))

    with dashboard(docutrain, openai_base_url=openai_standin.base_url) as url, httpx.Client(base_url=url) as client:
        page = client.get("/", headers=AUTH)
        live = client.get("/?partial=1", headers=AUTH)  # what the page refreshes itself with
        samples = scrape(client)
    for html in (page.text, live.text):
        box = attention(html)
        assert "rejected the API key" in box and "OPENAI_API_KEY" in box, box
        for secret in (KEY, KEY[:8], KEY[-4:]):
            assert secret not in html
    assert samples[("docutrain_embedding_account_problem", labels)] == 1

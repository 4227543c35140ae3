"""/metrics against Prometheus' naming and type conventions, and counters
that only go up (issue 25): a real run over real PDFs in another process, a
real uvicorn server, the exposition parsed with prometheus_client's parser."""

from __future__ import annotations

import re

import httpx
from dashboard_server import dashboard
from prometheus_client.parser import text_string_to_metric_families

from pdfs import multi_page

TOKEN = "test-token-123"

# Every family /metrics serves, with its type: states are gauges, events counters.
EXPECTED = {
    "docutrain_jobs": "gauge",
    "docutrain_queue_depth": "gauge",  # per priority, never per user
    "docutrain_jobs_unfinished": "gauge",
    "docutrain_oldest_queued_age_seconds": "gauge",
    "docutrain_jobs_finished": "counter",
    "docutrain_job_duration_seconds": "histogram",
    "docutrain_embedding_tokens": "counter",
    "docutrain_outbox_backlog": "gauge",
    "docutrain_runner_up": "gauge",
    "docutrain_workers": "gauge",
    "docutrain_embedding_tokens_per_second_limit": "gauge",
    "docutrain_embedding_requests_per_second_limit": "gauge",
    "docutrain_embedding_tokens_last_minute": "gauge",
    "docutrain_embedding_rate_wait_seconds": "counter",
    "docutrain_embedding_rate_limited": "counter",
    "docutrain_embedding_account_problem": "gauge",
}
# Units Prometheus wants converted to base units (seconds, bytes).
NOT_BASE_UNITS = re.compile(r"_(milliseconds|ms|minutes|hours|days|kilobytes|megabytes|percent)(_|$)|_per_minute")
TIME_WORDS = ("age", "duration", "wait", "latency", "elapsed")


def scrape(url: str) -> dict[str, object]:
    """Family name -> family, as prometheus_client's parser reads the text
    (a counter's family name comes without `_total`)."""
    r = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return {family.name: family for family in text_string_to_metric_families(r.text)}


def sample(families: dict, name: str, **labels) -> float:
    (value,) = [s.value for f in families.values() for s in f.samples if s.name == name and s.labels == labels]
    return value


def run_with_a_dead_job(docutrain, n: int = 2):
    for i in range(n):
        multi_page(docutrain.workdir / f"doc{i}.pdf", pages=2, seed=i)
    (docutrain.workdir / "broken.pdf").write_bytes(b"this is not a PDF")
    assert docutrain("enqueue", str(docutrain.workdir)).returncode == 0
    result = docutrain("run", "--drain", "--workers", "1")
    assert result.returncode == 3, result.stderr  # partly done: one dead


def test_every_metric_keeps_prometheus_naming_and_type_conventions(docutrain):
    run_with_a_dead_job(docutrain)
    with dashboard(docutrain) as url:
        families = scrape(url)
    assert {name: f.type for name, f in families.items()} == EXPECTED
    for name, family in families.items():
        assert re.fullmatch(r"docutrain_[a-z][a-z0-9_]*", name), name
        assert not NOT_BASE_UNITS.search(name), f"{name}: not in base units"
        if family.type == "counter":
            assert all(s.name == name + "_total" for s in family.samples), name  # counters end in _total
        else:
            assert not name.endswith("_total"), f"{name}: _total is for counters only"
        if any(word in name for word in TIME_WORDS) or family.type == "histogram":
            assert name.endswith("_seconds"), f"{name}: a time needs its unit, seconds"
        assert family.documentation, f"{name}: no HELP"


def test_a_retried_dead_job_never_makes_the_finished_counter_fall(docutrain):
    run_with_a_dead_job(docutrain)
    with dashboard(docutrain) as url:
        before = scrape(url)
        assert sample(before, "docutrain_jobs_finished_total", outcome="dead") == 1
        assert sample(before, "docutrain_jobs_finished_total", outcome="done") == 2
        assert sample(before, "docutrain_jobs", state="dead") == 1

        retried = docutrain("retry", "--all-dead")
        assert retried.returncode == 0, retried.stderr
        after_retry = scrape(url)
        assert sample(after_retry, "docutrain_jobs", state="dead") == 0  # a state: it may fall
        assert sample(after_retry, "docutrain_jobs_finished_total", outcome="dead") == 1  # an event: it may not

        assert docutrain("run", "--drain", "--workers", "1").returncode == 3  # the same file dies again
        again = scrape(url)
    assert sample(again, "docutrain_jobs_finished_total", outcome="dead") == 2
    assert sample(again, "docutrain_jobs_finished_total", outcome="done") == 2
    assert sample(again, "docutrain_job_duration_seconds_count") == 2
    for family in ("docutrain_jobs_finished", "docutrain_embedding_tokens"):
        for s in before[family].samples:
            assert sample(again, s.name, **s.labels) >= s.value, s

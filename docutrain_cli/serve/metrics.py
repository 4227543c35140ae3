"""`GET /metrics`: Prometheus text format, made with prometheus-client.

`docutrain serve` and `docutrain run` are different processes (and with
pgmq, different machines), so counters kept in serve's memory would count
nothing. prometheus-client's multiprocess mode does not fit either: it sums
files written by processes that share one directory and one parent, and
would still miss a run on another machine. So a custom collector reads the
queue and the files next to the store at scrape time, the same sources as
`docutrain status --json` and the dashboard:

- `docutrain_jobs{state}` and `docutrain_oldest_queued_age_seconds`: queue.stats();
- `docutrain_jobs_finished_total{outcome}`, `docutrain_job_duration_seconds`
  and `docutrain_embedding_tokens_total{model}`: the queue's records of
  finished jobs (done records keep the result; the newest 100,000 are kept).
  `outcome="dead"` counts jobs dead now, so a retry makes it go down, which
  Prometheus reads as a counter reset;
- `docutrain_outbox_backlog`: `<store>.outbox`;
- `docutrain_runner_up`: a runner holds the local queue (pgmq: this machine
  has live workers); `docutrain_workers`: live worker processes on this machine;
- `docutrain_embedding_*{model,endpoint}` (limits, tokens in the last minute,
  time waited for the budget, 429s, an account problem): the rate budget's
  rows (ratelimit/budget.py), shared by every runner of the queue, as
  `status --json`'s `embedding_budget`. Budgets of two keys on one model and
  endpoint (a key was changed) show the newest.

Names follow celery-exporter and rq-exporter: a `docutrain_` prefix, gauges
for what is, `_total` counters for what happened, seconds as the unit.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from docutrain_cli.run.activity import WorkerBoard
from docutrain_cli.config import Settings
from docutrain_cli.jobs import STATES
from docutrain_cli.queues import JobQueue, open_queue

# Seconds from lease to finish: small documents take a second, big ones minutes.
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class DocutrainCollector:
    def __init__(self, settings: Settings, queue_factory: Callable[[Settings], JobQueue] = open_queue):
        self.settings = settings
        self._open_queue = queue_factory

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only (no scrape at registration)

    def collect(self) -> Iterator[Metric]:
        from docutrain_cli.status.recorder import budget_status, outbox_status

        queue = self._open_queue(self.settings)
        try:
            stats = queue.stats(time.time())
            finished = queue.finished()
            exclusive = queue.exclusive
        finally:
            queue.close()
        with WorkerBoard.for_store(self.settings.store) as board:
            workers = board.workers()
        outbox = outbox_status(self.settings)
        budgets = budget_status(self.settings)

        jobs = GaugeMetricFamily("docutrain_jobs", "Jobs in each state now.", labels=["state"])
        for state in STATES:
            if stats.counts[state] is not None:  # Cloudflare cannot tell some: no sample
                jobs.add_metric([state], stats.counts[state])
        yield jobs
        yield GaugeMetricFamily(
            "docutrain_jobs_unfinished",
            "Jobs queued, running or waiting to retry (all a Cloudflare queue can tell).",
            value=stats.pending,
        )

        yield GaugeMetricFamily(
            "docutrain_oldest_queued_age_seconds",
            "Age of the oldest job waiting for its first attempt (0 when none is queued).",
            value=stats.oldest_queued_age or 0.0,
        )

        # A backend that keeps no done records (Cloudflare) reports no done outcome.
        outcomes = {"done": 0, "dead": 0} if stats.counts["done"] is not None else {"dead": 0}
        tokens: dict[str, int] = {}
        durations = []
        for record in finished:
            outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
            if record.outcome == "done":
                if record.model:
                    tokens[record.model] = tokens.get(record.model, 0) + record.tokens
                if record.seconds is not None:
                    durations.append(max(record.seconds, 0.0))
        total = CounterMetricFamily(
            "docutrain_jobs_finished", "Jobs finished, by outcome (from the queue's records).", labels=["outcome"]
        )
        for outcome, n in sorted(outcomes.items()):
            total.add_metric([outcome], n)
        yield total

        if "done" in outcomes:  # both read from done records
            yield _histogram(
                "docutrain_job_duration_seconds", "Seconds from lease to finish of done jobs.", durations
            )
            embedded = CounterMetricFamily(
                "docutrain_embedding_tokens", "Embedding tokens sent, by model (cached text costs none).",
                labels=["model"],
            )
            for model, n in sorted(tokens.items()):
                embedded.add_metric([model], n)
            yield embedded

        yield GaugeMetricFamily(
            "docutrain_outbox_backlog",
            "Documents whose status change waits in the Supabase outbox.",
            value=(outbox or {}).get("backlog", 0),
        )
        up = stats.runner_info is not None if exclusive else bool(workers)
        yield GaugeMetricFamily(
            "docutrain_runner_up",
            "1 when a runner holds the local queue (pgmq: this machine has live workers).",
            value=int(up),
        )
        yield GaugeMetricFamily(
            "docutrain_workers", "Live worker processes on this machine.", value=len(workers)
        )
        yield from _budget_metrics(budgets)


def _budget_metrics(budgets: list[dict]) -> Iterator[Metric]:
    newest: dict[tuple[str, str], dict] = {}
    for view in sorted(budgets, key=lambda v: v["updated_at"] or 0):
        newest[(view["model"], view["endpoint"])] = view
    labels = ["model", "endpoint"]
    families = [
        (GaugeMetricFamily, "docutrain_embedding_tokens_per_minute_limit",
         "The account's tokens-per-minute limit (set or learned from the API); no sample until known.",
         "tokens_per_minute_limit"),
        (GaugeMetricFamily, "docutrain_embedding_requests_per_minute_limit",
         "The account's requests-per-minute limit; no sample until known.", "requests_per_minute_limit"),
        (GaugeMetricFamily, "docutrain_embedding_tokens_last_minute",
         "Embedding tokens the server counted in the last minute.", "tokens_last_minute"),
        (CounterMetricFamily, "docutrain_embedding_rate_wait_seconds",
         "Worker seconds spent waiting for the rate budget or after a 429.", "waited_seconds_total"),
        (CounterMetricFamily, "docutrain_embedding_rate_limited",
         "429 rate-limit answers from the embedding API.", "rate_limited_total"),
    ]
    for kind, name, documentation, field in families:
        family = kind(name, documentation, labels=labels)
        for (model, endpoint), view in sorted(newest.items()):
            if view[field] is not None:
                family.add_metric([model, endpoint], view[field])
        yield family
    problem = GaugeMetricFamily(
        "docutrain_embedding_account_problem",
        "1 while quota or key trouble stops the runs (see `docutrain status`).", labels=labels,
    )
    for (model, endpoint), view in sorted(newest.items()):
        problem.add_metric([model, endpoint], int(bool(view["problem"])))
    yield problem


def _histogram(name: str, documentation: str, values: list[float]) -> HistogramMetricFamily:
    buckets, values = [], sorted(values)
    i = 0
    for bound in DURATION_BUCKETS:
        while i < len(values) and values[i] <= bound:
            i += 1
        buckets.append((_le(bound), i))
    buckets.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=sum(values))


def _le(bound: float) -> str:
    return repr(float(bound))


def registry_for(settings: Settings, queue_factory: Callable[[Settings], JobQueue] = open_queue) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DocutrainCollector(settings, queue_factory))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """(body, content type) of one scrape."""
    return generate_latest(registry), CONTENT_TYPE_LATEST

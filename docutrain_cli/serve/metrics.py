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
  and `docutrain_embedding_tokens_total{model}`: `queue.totals()`, the
  queue's finished records plus the tally of those that left it (pruned,
  retried; queues/tally.py), so these counters only ever go up: a retried
  dead job still counts the death it was. A backend with no records to
  count (Cloudflare) has no sample; its dead jobs are `docutrain_jobs{state="dead"}`;
- `docutrain_outbox_backlog`: `<store>.outbox`;
- `docutrain_runner_up`: a runner holds the local queue (pgmq: this machine
  has live workers); `docutrain_workers`: live worker processes on this machine;
- `docutrain_embedding_*{model,endpoint}` (limits, tokens in the last minute,
  time waited for the budget, 429s, an account problem): the rate budget's
  rows (ratelimit/budget.py), shared by every runner of the queue, as
  `status --json`'s `embedding_budget`. Gauges show the newest budget of a
  model and endpoint (a key was changed: the old one's is stale); counters
  sum every key's, so a new key never makes them fall.

Prometheus' conventions (checked by tests/test_metrics_conventions.py): a
`docutrain_` prefix; counters end in `_total` and nothing else does; base
units in the name (`_seconds`; the API's per-minute limits are shown per
second); states are gauges, events are counters.
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


class DocutrainCollector:
    def __init__(self, settings: Settings, queue_factory: Callable[[Settings], JobQueue] = open_queue):
        self.settings = settings
        self._open_queue = queue_factory

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only (no scrape at registration)

    def collect(self) -> Iterator[Metric]:
        from docutrain_cli.status.reports import budget_status, outbox_status

        queue = self._open_queue(self.settings)
        try:
            stats = queue.stats(time.time())
            totals = queue.totals()
            exclusive = queue.exclusive
            depth = queue.depth_by_priority()
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

        if depth is not None:  # per priority, never per user: user ids are unbounded label values
            waiting = GaugeMetricFamily(
                "docutrain_queue_depth", "Jobs waiting to be leased (queued or retrying), by priority.",
                labels=["priority"],
            )
            for priority, n in depth.items():
                waiting.add_metric([priority], n)
            yield waiting

        yield GaugeMetricFamily(
            "docutrain_oldest_queued_age_seconds",
            "Age of the oldest job waiting for its first attempt (0 when none is queued).",
            value=stats.oldest_queued_age or 0.0,
        )

        if totals is not None:
            yield from _finish_metrics(totals)

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


def _finish_metrics(totals) -> Iterator[Metric]:
    finished = CounterMetricFamily(
        "docutrain_jobs_finished", "Jobs finished, by outcome (events: a retried dead job still counts).",
        labels=["outcome"],
    )
    for outcome in ("done", "dead"):
        finished.add_metric([outcome], totals.finished.get(outcome, 0))
    yield finished
    yield HistogramMetricFamily(
        "docutrain_job_duration_seconds", "Seconds from lease to finish of done jobs.",
        buckets=[("+Inf" if bound == float("inf") else repr(float(bound)), n) for bound, n in totals.histogram()],
        sum_value=totals.duration_sum,
    )
    embedded = CounterMetricFamily(
        "docutrain_embedding_tokens", "Embedding tokens sent, by model (cached text costs none).", labels=["model"],
    )
    for model, n in sorted(totals.tokens.items()):
        embedded.add_metric([model], n)
    yield embedded


def _budget_metrics(budgets: list[dict]) -> Iterator[Metric]:
    labels = ["model", "endpoint"]
    newest: dict[tuple[str, str], dict] = {}
    summed: dict[tuple[str, str], dict[str, float]] = {}
    for view in sorted(budgets, key=lambda v: v["updated_at"] or 0):
        where = (view["model"], view["endpoint"])
        newest[where] = view
        sums = summed.setdefault(where, {"waited_seconds_total": 0.0, "rate_limited_total": 0})
        for field in sums:
            sums[field] += view[field] or 0
    per_second = [  # the API's limits are per minute; Prometheus' base unit is the second
        ("docutrain_embedding_tokens_per_second_limit",
         "The account's tokens-per-minute limit / 60 (set or learned from the API); no sample until known.",
         "tokens_per_minute_limit"),
        ("docutrain_embedding_requests_per_second_limit",
         "The account's requests-per-minute limit / 60; no sample until known.", "requests_per_minute_limit"),
    ]
    for name, documentation, field in per_second:
        family = GaugeMetricFamily(name, documentation, labels=labels)
        for where, view in sorted(newest.items()):
            if view[field] is not None:
                family.add_metric(list(where), view[field] / 60)
        yield family
    recent = GaugeMetricFamily(
        "docutrain_embedding_tokens_last_minute", "Embedding tokens the server counted in the last 60 seconds.",
        labels=labels,
    )
    for where, view in sorted(newest.items()):
        recent.add_metric(list(where), view["tokens_last_minute"])
    yield recent
    counters = [
        ("docutrain_embedding_rate_wait_seconds", "Worker seconds spent waiting for the rate budget or after a 429.",
         "waited_seconds_total"),
        ("docutrain_embedding_rate_limited", "429 rate-limit answers from the embedding API.", "rate_limited_total"),
    ]
    for name, documentation, field in counters:
        family = CounterMetricFamily(name, documentation, labels=labels)
        for where, sums in sorted(summed.items()):
            family.add_metric(list(where), sums[field])
        yield family
    problem = GaugeMetricFamily(
        "docutrain_embedding_account_problem",
        "1 while quota or key trouble stops the runs (see `docutrain status`).", labels=labels,
    )
    for where, view in sorted(newest.items()):
        problem.add_metric(list(where), int(bool(view["problem"])))
    yield problem


def registry_for(settings: Settings, queue_factory: Callable[[Settings], JobQueue] = open_queue) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DocutrainCollector(settings, queue_factory))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """(body, content type) of one scrape."""
    return generate_latest(registry), CONTENT_TYPE_LATEST

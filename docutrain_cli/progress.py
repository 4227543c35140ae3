"""How a run looks: a live rich display in a terminal, plain log lines
under cron or systemd. Both are RunObservers fed by the runner."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from docutrain_cli.jobs import Job
from docutrain_cli.queues.base import QueueStats
from docutrain_cli.runner import RunObserver, RunSummary, Runner


def _name(job: Job) -> str:
    return Path(job.source).name or job.source


BUDGET_LOG_EVERY = 30.0  # seconds between log lines about the rate budget


def budget_line(view: dict, *, over_the_run: bool = False) -> str:
    """The rate budget in a few words: tokens/min against the limit, waits, 429s.

    Live, the rate is the last minute's (what the server's bucket sees); in
    the summary it is the average over the run, which the first minute's
    burst (a full bucket at start) may lift above the limit."""
    limit = view.get("tokens_per_minute_limit")
    if over_the_run:
        rate, label = view.get("run_tokens_per_minute") or 0, "tokens/min over the run"
    else:
        rate, label = view.get("tokens_last_minute") or 0, "tokens in the last minute"
    if limit:
        text = f"{rate:,} {label}, limit {limit:,}/min ({view['limit_source']})"
    else:
        text = f"{rate:,} {label} (no limit known yet)"
    if view.get("requests_per_minute_limit"):
        text += f", {view['requests_per_minute_limit']:,} requests/min"
    waited = view.get("run_wait_seconds", view.get("waited_seconds_total") or 0)
    refusals = view.get("run_rate_limited", view.get("rate_limited_total", 0))
    text += f"; workers waited {waited:,.0f} s for the budget; {refusals} answers 429"
    return text


class LogObserver(RunObserver):
    """One plain line per event, timestamped: greppable and cron-friendly."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self._budget_logged = 0.0

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} {message}", file=self.stream, flush=True)

    def started(self, runner: Runner, stats: QueueStats) -> None:
        c = stats.counts
        recovered = f", {runner.summary.recovered} recovered from a stopped run" if runner.summary.recovered else ""
        waiting = (f"{c['queued']} queued, {c['retrying']} retrying" if stats.known
                   else f"{_unknown(stats.unfinished)} unfinished (not told apart by this queue)")
        self.log(
            f"run started: {runner.settings.workers} workers, {waiting}{recovered}; "
            f"embedder: {describe_embedder(runner.settings)}"
        )

    def job_started(self, job: Job) -> None:
        self.log(f"start job {job.id} {job.source} (attempt {job.attempts})")

    def job_finished(self, job: Job, outcome: str, detail: str | None) -> None:
        if outcome == "done":
            r = job.result
            took = (job.finished_at or time.time()) - (job.started_at or time.time())
            facts = ", ".join(f"{getattr(r, k)} {k}" for k in ("pages", "chunks") if r and getattr(r, k))
            self.log(f"done  job {job.id} {job.source}" + (f" ({facts})" if facts else "") + f" in {took:.1f}s")
        elif outcome == "released":
            self.log(f"returned job {job.id} {job.source} to the queue" + (f": {detail}" if detail else ""))
        else:
            self.log(f"{outcome:<5} job {job.id} {detail}")

    def stopping(self, reason: str) -> None:
        self.log(f"stopping ({reason}): no new jobs; waiting for running ones")

    def budget(self, view: dict) -> None:
        if time.monotonic() - self._budget_logged >= BUDGET_LOG_EVERY and view.get("requests_total"):
            self._budget_logged = time.monotonic()
            self.log("embedding: " + budget_line(view))

    def paused(self, reason: str, seconds: float) -> None:
        self.log(f"paused: {reason}; jobs stay queued; trying again in {seconds:.0f} s")

    def finished(self, summary: RunSummary) -> None:
        self.log("run finished: " + summary_line(summary))


class RichObserver(RunObserver):
    """Overall bar (done/failed/remaining, rate, ETA) and one line per worker."""

    def __init__(self, console):
        from rich.live import Live

        self.console = console
        self.done = self.failed = 0
        self.remaining = 0
        self.started_at = time.monotonic()
        self.runner: Runner | None = None
        self.budget_view: dict | None = None
        self.paused_reason: str | None = None
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        total = self.done + self.failed + self.remaining
        elapsed = time.monotonic() - self.started_at
        rate = (self.done + self.failed) / elapsed if elapsed > 0 else 0.0
        eta = f"{self.remaining / rate:,.0f}s" if rate > 0 and self.remaining else "-"
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=max(total, 1), completed=self.done + self.failed, width=40),
            f"[green]{self.done} done[/] [red]{self.failed} failed[/] {self.remaining} remaining"
            f"  {rate:.1f} docs/s  ETA {eta}",
        )
        lines = []
        if self.budget_view and self.budget_view.get("requests_total"):
            lines.append(f"[dim]embedding:[/] {budget_line(self.budget_view)}")
        if self.paused_reason:
            lines.append(f"[yellow]paused:[/] {self.paused_reason}")
        workers = Table.grid(padding=(0, 2))
        for job in self.runner.running if self.runner else []:
            took = time.time() - (job.started_at or time.time())
            workers.add_row(f"[dim]job {job.id}[/]", _name(job), f"{took:4.0f}s")
        return Group(head, *lines, workers)

    def _refresh(self) -> None:
        self.live.update(self._render())

    def started(self, runner: Runner, stats: QueueStats) -> None:
        self.runner = runner
        self.remaining = stats.pending
        self.console.print(f"docutrain: {runner.settings.workers} workers, embedder: {describe_embedder(runner.settings)}")
        self.live.start()

    def job_started(self, job: Job) -> None:
        self._refresh()

    def job_finished(self, job: Job, outcome: str, detail: str | None) -> None:
        if outcome == "done":
            self.done += 1
            self.remaining = max(self.remaining - 1, 0)
        elif outcome == "dead":
            self.failed += 1
            self.remaining = max(self.remaining - 1, 0)
            self.console.print(f"[red]dead[/] job {job.id} {detail}")
        elif outcome == "retry":
            self.console.print(f"[yellow]retry[/] job {job.id} {detail}")
        self._refresh()

    def idle(self, stats: QueueStats) -> None:
        self.remaining = stats.pending
        self._refresh()

    def budget(self, view: dict) -> None:
        self.budget_view = view
        self._refresh()

    def paused(self, reason: str, seconds: float) -> None:
        self.paused_reason = f"{reason}; trying again in {seconds:.0f} s"
        self._refresh()

    def stopping(self, reason: str) -> None:
        self.console.print(f"[yellow]stopping ({reason})[/]: waiting for running jobs; Ctrl-C again to stop now")

    def finished(self, summary: RunSummary) -> None:
        self.runner = None
        self._refresh()
        self.live.stop()


def _unknown(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def describe_embedder(settings) -> str:
    from docutrain_cli.pipeline.embed import describe_embedder as describe

    return describe(settings)


def summary_line(summary: RunSummary) -> str:
    t = summary.totals
    parts = [
        f"{summary.done} done",
        f"{summary.dead} dead",
        f"{summary.retried} retries",
        f"in {summary.elapsed:.1f}s ({summary.stop_reason})",
    ]
    if summary.released:
        parts.append(f"{summary.released} returned to the queue")
    price = "list price" if summary.batch is None else "the Batch API price (half the list price)"
    if summary.given_back:
        parts.append(f"{summary.given_back} given back to the queue by the rate limit (no attempt charged)")
    if any(t.values()):
        cost = summary.cost_usd
        parts.append(
            f"{t['pages']} pages, {t['chunks']} chunks, {t['tokens_embedded']} tokens embedded, "
            f"{t['tokens_cached']} from cache"
            + (f", ${cost:.4f} at {price}" if cost is not None else ", cost unknown (no list price for the model)")
        )
    if summary.batch is not None:
        parts.append(batch_line(summary.batch))
    if summary.budget and summary.budget.get("requests_total"):
        parts.append("embedding: " + budget_line(summary.budget, over_the_run=True))
    left = {k: v for k, v in summary.remaining.items() if k in ("queued", "retrying") and v}
    if left:
        parts.append("left: " + ", ".join(f"{v} {k}" for k, v in left.items()))
    return "; ".join(parts)


def batch_line(report: dict) -> str:
    """What the Batch API steps of a run did, in one phrase."""
    cost = report["cost_usd"]
    text = (
        f"batch: {report['files']} files sent ({report['requests']} requests, {report['inputs']} texts, "
        f"{report['tokens_submitted']} tokens), {report['batches_applied']} batches back "
        f"({report['vectors']} vectors, {report['tokens_embedded']} tokens, "
        + (f"${cost:.4f} at the batch price" if cost is not None else "cost unknown")
        + f"), {report['documents_ready']} documents ready"
    )
    if report["documents_error"]:
        text += f", {report['documents_error']} in error"
    if report["problem"]:
        text += f"; trouble: {report['problem']}"
    return text


def batch_status_lines(batches: dict) -> list[str]:
    """`docutrain status`: the batches in flight with their request_counts."""
    from docutrain_cli.pipeline.models import cost_usd

    lines = [f"Batch API: {batches['documents_waiting']} documents waiting for vectors, "
             f"{len(batches['in_flight'])} batches in flight"]
    for b in batches["in_flight"]:
        cost = cost_usd(b["model"], b["tokens"], batch=True)
        lines.append(
            f"  {b['batch_id'] or b['tag']}: {b['remote_status'] or b['state']}, requests "
            f"{b['completed']} completed / {b['failed']} failed of {b['requests']}, {b['inputs']} texts, "
            f"{b['tokens']} tokens" + (f" (about ${cost:.6f} at the batch price)" if cost is not None else "")
        )
    if batches["finishing_problem"]:
        lines.append(f"  finishing documents failed last time: {batches['finishing_problem']}")
    return lines

"""How a run looks: a live rich display in a terminal, plain log lines
under cron or systemd. Both are RunObservers fed by the runner. rich (and
cli/render.py, built on it) is imported by the live display only: a cron
or `--json` run spends no CPU on it while its workers' forkserver imports."""

from __future__ import annotations

import collections
import sys
import time
from typing import TextIO

from docutrain_cli.jobs import Job
from docutrain_cli.cli.words import age, budget_line, count, plural
from docutrain_cli.queues.base import QueueStats
from docutrain_cli.run.events import RunObserver, RunView
from docutrain_cli.run.summary import RunSummary


BUDGET_LOG_EVERY = 30.0  # seconds between log lines about the rate budget


class LogObserver(RunObserver):
    """One plain line per event, timestamped: greppable and cron-friendly."""

    PROGRESS_EVERY = 30.0  # seconds between a job's progress lines (first and last always)

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self._budget_logged = 0.0
        self._progress_logged: dict[int, float] = {}
        self._stamp = (-1, "")  # (second, its text): two lines a job, thousands a second

    def log(self, message: str) -> None:
        second = int(time.time())
        if second != self._stamp[0]:
            self._stamp = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        self.stream.write(f"{self._stamp[1]} {message}\n")
        self.stream.flush()

    def started(self, runner: RunView, stats: QueueStats) -> None:
        c = stats.counts
        recovered = f", {runner.summary.recovered} recovered from a stopped run" if runner.summary.recovered else ""
        waiting = (f"{c['queued']} queued, {c['retrying']} retrying" if stats.known
                   else f"{count(stats.unfinished)} unfinished (not told apart by this queue)")
        self.log(
            f"run started: {runner.settings.workers} workers, {waiting}{recovered}; "
            f"embedder: {describe_embedder(runner.settings)}"
        )

    def job_started(self, job: Job) -> None:
        self.log(f"start job {job.id} {job.source} (attempt {job.attempts})")

    def job_progress(self, job: Job, message: str) -> None:
        # "OCR page 3/40" comes every few seconds: log the first, the last,
        # and one every PROGRESS_EVERY seconds between.
        now = time.monotonic()
        last = self._progress_logged.get(job.id)
        done, _, total = message.rpartition(" ")[2].partition("/")
        if last is None or now - last >= self.PROGRESS_EVERY or (total and done == total):
            self._progress_logged[job.id] = now
            self.log(f"      job {job.id} {message}")

    def job_finished(self, job: Job, outcome: str, detail: str | None) -> None:
        self._progress_logged.pop(job.id, None)
        if outcome == "done":
            r = job.result
            took = (job.finished_at or time.time()) - (job.started_at or time.time())
            facts = ", ".join(plural(getattr(r, k), k[:-1]) for k in ("pages", "chunks") if r and getattr(r, k))
            if r and r.ocr_pages:
                facts += f", {plural(r.ocr_pages, 'page')} by OCR"
            if r and r.ocr_skipped_pages:
                facts += f", {plural(r.ocr_skipped_pages, 'scanned page')} left unread (no OCR)"
            if r and r.unreadable_pages:
                facts += f", unreadable: page {', '.join(map(str, r.unreadable_pages))}"
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

    def pool_replaced(self, reason: str) -> None:
        self.log(f"worker pool broken ({reason}): its jobs go back to the queue uncharged; starting a fresh pool")

    def finished(self, summary: RunSummary) -> None:
        self.log("run finished: " + summary_line(summary))


RATE_WINDOW = 60.0  # seconds: the rate shown is the last minute's, not the run's average


class LiveCounts:
    """What the live display counts, apart from how it is drawn: jobs done
    and dead, jobs remaining (the queue's own count, so jobs that arrive
    while a service runs are counted), the rate over the last RATE_WINDOW
    seconds, and whether the runner is idle. Times are monotonic seconds,
    passed in so tests can set them."""

    def __init__(self, now: float):
        self.started_at = now
        self.done = self.dead = 0
        self.remaining = 0  # queued + running + retrying, as last counted, minus what finished since
        self.in_flight = 0  # jobs this runner has started and not settled
        self.idle = False  # nothing in flight: the runner waits for jobs
        self._finishes: collections.deque[float] = collections.deque()

    def counted(self, pending: int) -> None:
        """The queue's count of unfinished jobs, read just now."""
        self.remaining = pending

    def started(self) -> None:
        self.in_flight += 1
        self.idle = False

    def settled(self, outcome: str, now: float) -> None:
        """A job left this runner: done, dead, retry or released (back in the queue)."""
        self.in_flight = max(self.in_flight - 1, 0)
        if outcome in ("done", "dead"):
            setattr(self, outcome, getattr(self, outcome) + 1)
            self.remaining = max(self.remaining - 1, 0)
            self._finishes.append(now)

    @property
    def unfinished(self) -> int:
        # A job that arrived since the last count may already be running here.
        return max(self.remaining, self.in_flight)

    @property
    def total(self) -> int:
        return self.done + self.dead + self.unfinished

    def rate(self, now: float) -> float:
        """Jobs finished per second over the last RATE_WINDOW seconds (or
        since the start, if that is shorter)."""
        while self._finishes and self._finishes[0] < now - RATE_WINDOW:
            self._finishes.popleft()
        window = min(RATE_WINDOW, max(now - self.started_at, 1.0))
        return len(self._finishes) / window

    def eta_seconds(self, now: float) -> float | None:
        rate = self.rate(now)
        return self.unfinished / rate if rate > 0 and self.unfinished else None

    def line(self, now: float) -> str:
        """`3 done 1 dead 18 remaining  1.4 docs/s  ETA 13s`, or `idle, waiting for jobs`."""
        counts = f"[green]{self.done} done[/] [red]{self.dead} dead[/] {self.unfinished} remaining"
        if self.idle and not self.unfinished:
            return f"{counts}  idle, waiting for jobs"
        eta = self.eta_seconds(now)
        return f"{counts}  {self.rate(now):.1f} docs/s  ETA {age(eta) if eta is not None else '-'}"


class RichObserver(RunObserver):
    """Overall bar (done/dead/remaining, recent rate, ETA) and one line per
    running job with how long it has been running. Rebuilt on every refresh
    (4 a second), so the times move even when no job starts or ends."""

    REFRESH_PER_SECOND = 4
    wants_queue_counts = True  # remaining counts jobs that arrive while it runs

    def __init__(self, console):
        self.console = console
        self.counts = LiveCounts(time.monotonic())
        self.runner: RunView | None = None
        self.budget_view: dict | None = None
        self.paused_reason: str | None = None
        self.live = None

    def render(self):
        from rich.console import Group

        from docutrain_cli.cli.render import FitToWidth

        return Group(self._bar(), *self._budget_lines(), FitToWidth(self._workers))

    def _bar(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        c = self.counts
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=max(c.total, 1), completed=c.done + c.dead, width=30),
            c.line(time.monotonic()),
        )
        return head

    def _budget_lines(self) -> list[str]:
        lines = []
        if self.budget_view and self.budget_view.get("requests_total"):
            lines.append(f"[dim]embedding:[/] {budget_line(self.budget_view)}")
        if self.paused_reason:
            lines.append(f"[yellow]paused:[/] {self.paused_reason}")
        return lines

    def _workers(self, width: int):
        from rich.table import Table

        from docutrain_cli.cli.render import GAP, FileName, file_column_width

        now = time.time()
        progress = self.runner.progress if self.runner else {}
        rows = [
            (
                f"job {job.id}",
                FileName(job.source),
                age(now - job.started_at) if job.started_at else "-",
                progress.get(job.id, ""),  # what the worker last reported: "OCR page 3/40"
            )
            for job in (self.runner.running if self.runner else [])
        ]
        table = Table.grid(padding=(0, GAP))
        if not rows:
            return table
        ids = max(len(r[0]) for r in rows)
        took = max(len(r[2]) for r in rows)
        doing = max(len(r[3]) for r in rows)
        rest = width - ids - took - 2 * GAP - (doing + GAP if doing else 0)
        table.add_column(style="dim", no_wrap=True, width=ids)
        table.add_column(no_wrap=True, width=file_column_width([r[1] for r in rows], rest))
        table.add_column(justify="right", no_wrap=True, width=took)
        if doing:
            table.add_column(style="dim", no_wrap=True, width=doing)
        for row in rows:
            table.add_row(*(row if doing else row[:3]))
        return table

    def started(self, runner: RunView, stats: QueueStats) -> None:
        from rich.live import Live

        self.runner = runner
        self.counts.counted(stats.pending)
        self.console.print(f"docutrain: {runner.settings.workers} workers, embedder: {describe_embedder(runner.settings)}")
        # Built here, not in __init__, so the first frame shows the real counts.
        self.live = Live(
            console=self.console, get_renderable=self.render,
            refresh_per_second=self.REFRESH_PER_SECOND, transient=False,
        )
        self.live.start(refresh=True)

    # Events only change counts: drawing is rich's refresh thread's job, 4
    # times a second, so thousands of short jobs a second cost no redraws.
    def job_started(self, job: Job) -> None:
        self.counts.started()

    def job_finished(self, job: Job, outcome: str, detail: str | None) -> None:
        self.counts.settled(outcome, time.monotonic())
        if outcome == "dead":
            self.console.print(f"[red]dead[/] job {job.id} {detail}")
        elif outcome == "retry":
            self.console.print(f"[yellow]retry[/] job {job.id} {detail}")

    def queue_counts(self, stats: QueueStats) -> None:
        self.counts.counted(stats.pending)

    def idle(self, stats: QueueStats) -> None:
        self.counts.counted(stats.pending)
        self.counts.idle = True

    def budget(self, view: dict) -> None:
        self.budget_view = view  # shown at the next refresh

    def paused(self, reason: str, seconds: float) -> None:
        self.paused_reason = f"{reason}; trying again in {seconds:.0f} s"

    def pool_replaced(self, reason: str) -> None:
        self.console.print(f"[yellow]worker pool broken[/] ({reason}): its jobs go back to the queue; starting a fresh pool")

    def stopping(self, reason: str) -> None:
        self.console.print(f"[yellow]stopping ({reason})[/]: waiting for running jobs; Ctrl-C again to stop now")

    def finished(self, summary: RunSummary) -> None:
        self.runner = None
        if self.live is not None:
            self.live.refresh()
            self.live.stop()


def describe_embedder(settings) -> str:
    from docutrain_cli.pipeline.embed import describe_embedder as describe

    return describe(settings)


def summary_text(summary: RunSummary):
    """The summary for a terminal: rich wraps it between words at the
    terminal's width (a plain print left the terminal to cut words in two)."""
    from rich.text import Text

    return Text(summary_line(summary))


def summary_line(summary: RunSummary) -> str:
    t = summary.totals
    parts = [
        f"{summary.done} done",
        f"{summary.dead} dead",
        plural(summary.retried, "retry"),
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
            f"{plural(t['pages'], 'page')}, {plural(t['chunks'], 'chunk')}, "
            f"{plural(t['tokens_embedded'], 'token')} embedded, {t['tokens_cached']:,} from cache"
            + (f", ${cost:.4f} at {price}" if cost is not None else ", cost unknown (no list price for the model)")
        )
    if t.get("ocr_pages"):
        parts.append(f"{plural(t['ocr_pages'], 'page')} read by OCR in {summary.ocr_seconds:.1f}s of worker time")
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
    if report["documents_dead"]:
        text += f", {report['documents_dead']} could not be embedded (dead jobs; `docutrain retry` brings them back)"
    if report["full_price_texts"]:
        paid = report["full_price_cost_usd"]
        text += (f"; {report['full_price_texts']} texts failed twice in batches and were embedded with a normal "
                 f"request ({report['full_price_tokens']} tokens at full price"
                 + (f", ${paid:.4f}" if paid is not None else "") + ")")
    if report["problem"]:
        text += f"; trouble: {report['problem']}"
    return text


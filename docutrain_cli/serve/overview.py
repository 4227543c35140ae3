"""What the dashboard shows, gathered from the queue and the files next to the
store, so it is right whichever process (or machine) did the work.

- counts, oldest queued age, next retry, the runner holding the queue:
  `queue.stats()`;
- jobs and pages finished per minute, embedding tokens per minute: the
  queue's own records of finished jobs (`queue.finished()`), which carry
  finished_at and the job's result;
- the workers and what each one is on: `<store>.workers` (see run/activity.py);
- the Supabase outbox: `<store>.outbox`;
- the embedding rate budget (limit, waits, an account problem): the budget's
  row beside the queue (ratelimit/budget.py `current_budget`).

Plain data only: the templates render it, /metrics reads the same sources.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from docutrain_cli.run.activity import WorkerBoard, WorkerInfo
from docutrain_cli.jobs import Job, JobState
from docutrain_cli.queues.base import Finished, JobQueue, QueueStats
from docutrain_cli.queues.line import users_in_line

WINDOW_MINUTES = 60  # the longest chart window, and how far back finished jobs are read
# A chart shows the shortest of these that holds the last hour's data, so a
# short run is not one thin bar at the edge of an hour.
CHART_WINDOWS = (5, 15, WINDOW_MINUTES)
RECENT_LIMIT = 50
SEARCH_SCAN = 2000  # a search looks through this many newest jobs per state
DEAD_LIMIT = 100


@dataclasses.dataclass(frozen=True)
class Minute:
    start: float  # epoch seconds, on a minute boundary
    done: int
    dead: int
    pages: int
    tokens: int


@dataclasses.dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # tooltip: "12:04  3 jobs"


@dataclasses.dataclass(frozen=True)
class Chart:
    """A bar chart laid out for an SVG of WIDTH x HEIGHT (drawn by the template)."""

    title: str
    unit: str
    total: int
    peak: float  # the top of the scale
    bars: list[Bar]
    limit_y: float | None = None  # a dashed line at the rate limit, when known
    limit_label: str | None = None
    window: int = WINDOW_MINUTES  # minutes shown, one bar each

    @property
    def window_label(self) -> str:
        return "last hour" if self.window == 60 else f"last {self.window} minutes"

    WIDTH = 600
    HEIGHT = 120


@dataclasses.dataclass
class Overview:
    now: float
    stats: QueueStats
    exclusive: bool  # one runner per queue (local) or many (pgmq)
    workers: list[WorkerInfo]
    running: list[Job]
    minutes: list[Minute]
    charts: list[Chart]
    outbox: dict[str, Any] | None
    webhook_outbox: dict[str, Any] | None  # status webhooks to the app (issue 14)
    budget: dict[str, Any] | None
    dead: list[Job]
    recent: list[Job]
    state_filter: str | None
    search: str
    # Who waits (queues/line.py users_in_line): priorities, users, shares.
    line: dict[str, Any] | None = None

    @property
    def on_worker(self) -> dict[int, int]:
        """job id -> pid of the worker processing it (this machine's workers)."""
        return {w.job_id: w.pid for w in self.workers if w.job_id is not None}

    @property
    def waiting_for_worker(self) -> set[int]:
        """Leased jobs no worker is on yet (next in the pool's line). Known
        only for a queue one runner holds, whose workers all write here."""
        if not self.exclusive:
            return set()
        busy = self.on_worker
        return {job.id for job in self.running if job.id not in busy}

    @property
    def stuck(self) -> list[str]:
        """One line per thing an operator should look at, most urgent first."""
        c, lines = self.stats.counts, []
        if self.budget and self.budget.get("problem"):
            # Quota or key trouble stops every run: first. The message says what to do (never the key).
            lines.append(f"embedding with {self.budget['model']} stopped: {self.budget['problem']}")
        if c["dead"]:
            lines.append(f"{c['dead']} dead job(s): see the reasons below and retry them when fixed")
        if self.exclusive and self.stats.known and self.stats.runner_info is None:
            waiting = c["queued"] + c["retrying"]
            if waiting:
                lines.append(f"{waiting} job(s) waiting and no runner holds the queue: start `docutrain run`")
        if self.outbox and self.outbox.get("backlog") and self.outbox.get("last_error"):
            lines.append(f"Supabase outbox: {self.outbox['backlog']} change(s) waiting; last error below")
        hooks = self.webhook_outbox
        if hooks and hooks.get("backlog") and hooks.get("last_error"):
            lines.append(f"status webhooks: {hooks['backlog']} change(s) waiting; last error below")
        return lines


def throughput(finished: list[Finished], now: float, minutes: int = WINDOW_MINUTES) -> list[Minute]:
    """Per-minute totals over the last `minutes` whole minutes plus the current one."""
    first = (math.floor(now / 60) - minutes + 1) * 60
    buckets = [[0, 0, 0, 0] for _ in range(minutes)]
    for record in finished:
        i = int((record.finished_at - first) // 60)
        if 0 <= i < minutes:
            b = buckets[i]
            if record.outcome == "done":
                b[0] += 1
                b[2] += record.pages
                b[3] += record.tokens
            else:
                b[1] += 1
    return [Minute(first + 60 * i, *b) for i, b in enumerate(buckets)]


def chart_window(finished: list[Finished], now: float) -> int:
    """The shortest of CHART_WINDOWS (minutes) that holds every job finished in the last hour."""
    recent = [r.finished_at for r in finished if r.finished_at >= now - WINDOW_MINUTES * 60]
    if not recent:
        return CHART_WINDOWS[0]
    needed = math.floor(now / 60) - math.floor(min(recent) / 60) + 1  # minutes, the current one included
    return next((w for w in CHART_WINDOWS if w >= needed), WINDOW_MINUTES)


def bar_chart(title: str, unit: str, minutes: list[Minute], value, limit: float | None = None) -> Chart:
    values = [value(m) for m in minutes]
    peak = max([*values, limit or 0, 1])
    peak = _nice_ceiling(peak)
    width = Chart.WIDTH / max(len(minutes), 1)
    bars = []
    for i, (m, v) in enumerate(zip(minutes, values)):
        height = Chart.HEIGHT * v / peak
        stamp = time.strftime("%H:%M", time.localtime(m.start))
        bars.append(Bar(i * width + 0.5, Chart.HEIGHT - height, max(width - 1, 1), height, f"{stamp}  {v:,} {unit}"))
    limit_y = None if not limit else Chart.HEIGHT * (1 - limit / peak)
    return Chart(
        title, unit, sum(values), peak, bars, limit_y,
        None if not limit else f"limit {limit:,.0f} {unit}", len(minutes),
    )


def _nice_ceiling(value: float) -> float:
    """1, 2, 5, 10, 20, 50, ... at or above value: readable axis tops."""
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


def matches(job: Job, search: str) -> bool:
    """Search by job id, file or document id (case-insensitive substring)."""
    needle = search.strip().lower()
    if not needle:
        return True
    if needle.isdigit() and int(needle) == job.id:
        return True
    return any(needle in (field or "").lower() for field in (job.source, job.document_id))


def gather(
    queue: JobQueue,
    board: WorkerBoard,
    *,
    outbox: dict[str, Any] | None,
    webhook_outbox: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    state: str | None = None,
    search: str = "",
    now: float | None = None,
) -> Overview:
    now = time.time() if now is None else now
    stats = queue.stats(now)
    finished = queue.finished(since=now - WINDOW_MINUTES * 60)
    minutes = throughput(finished, now, chart_window(finished, now))
    state_enum = JobState(state) if state else None
    if search.strip():
        candidates = queue.jobs(state_enum, limit=SEARCH_SCAN)
        recent = [j for j in candidates if matches(j, search)][:RECENT_LIMIT]
    else:
        recent = queue.jobs(state_enum, limit=RECENT_LIMIT)
    limit = (budget or {}).get("tokens_per_minute_limit")
    charts = [
        bar_chart("Jobs finished per minute", "jobs", minutes, lambda m: m.done + m.dead),
        bar_chart("Pages per minute", "pages", minutes, lambda m: m.pages),
        bar_chart("Embedding tokens per minute", "tokens", minutes, lambda m: m.tokens, limit),
    ]
    return Overview(
        now=now,
        stats=stats,
        exclusive=queue.exclusive,
        workers=board.workers(),
        running=sorted(queue.jobs(JobState.RUNNING, limit=500), key=lambda j: j.started_at or 0),
        minutes=minutes,
        charts=charts,
        outbox=outbox,
        webhook_outbox=webhook_outbox,
        budget=budget,
        dead=queue.jobs(JobState.DEAD, limit=DEAD_LIMIT),
        recent=recent,
        state_filter=state,
        search=search,
        line=users_in_line(queue, now),
    )

"""Where a job stands in line, and who is waiting: what `jobs show`,
`GET /v1/jobs/{id}`, `GET /v1/documents/{id}` and `status` report.

- `position`: how many waiting jobs start before it under the current lease
  order (queues/order.py); null when it is not waiting, or the backend
  cannot see its waiting jobs (Cloudflare);
- `eta_seconds`: when it should be done, from the estimated tokens ahead of
  it (plus its own, plus half of what is running now) over the rate the
  account is served at: the rate budget's known limit (setting embedding_tpm,
  or learned from the API's headers), or the throughput of the last ten
  minutes' working time (idle gaps left out) when that is lower and measured
  over enough jobs to trust (the workers, not the limit, may be what holds
  the line back); null when neither is known. A retry not due yet counts
  for nobody's position, and its own ETA is at least its retry time.
  Estimates are scaled by what recent jobs really cost against their
  estimate (the token counters of a run and of the API differ).
"""

from __future__ import annotations

from typing import Any

from docutrain_cli.jobs import Job
from docutrain_cli.queues.base import Finished, JobQueue

# The keys `users_in_line` adds to the status report (nulls: no queue to ask).
NO_LINE = dict.fromkeys(("lease_order", "queued_by_priority", "users_with_queued_work", "users"))
THROUGHPUT_WINDOW = 600.0  # seconds of finished jobs the served rate is measured over
TRUSTED_JOBS, TRUSTED_SECONDS = 5, 30.0  # a throughput measured over less is mostly start-up
SHARE_WINDOW = 3600.0  # each user's share of the tokens: over the last hour
TOP_USERS = 20


class ServedRate:
    """Tokens a second the account is served at, and estimate -> real tokens."""

    def __init__(self, per_second: float | None, density: float = 1.0):
        self.per_second = per_second
        self.density = density

    @classmethod
    def measure(cls, queue: JobQueue, settings, now: float) -> "ServedRate":
        done = [f for f in queue.finished(since=now - THROUGHPUT_WINDOW) if f.outcome == "done"]
        measured, trusted = None, False
        tokens = sum(f.tokens for f in done)
        if tokens:
            working = busy_seconds([(f.finished_at - (f.seconds or 0.0), f.finished_at) for f in done])
            measured = tokens / max(working, 1.0)
            trusted = len(done) >= TRUSTED_JOBS and working >= TRUSTED_SECONDS
        limit = _limit_per_second(settings)
        if limit and measured and trusted:
            rate = min(limit, measured)
        else:
            rate = limit or measured
        estimated = [f for f in done if f.cost]
        density = sum(f.tokens for f in estimated) / sum(f.cost for f in estimated) if estimated else 1.0
        return cls(rate, density or 1.0)

    def seconds_for(self, tokens: float) -> float | None:
        return None if not self.per_second else tokens * self.density / self.per_second


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """How long at least one of these (start, end) spans was under way: the
    time the line was being served. Idle time between jobs is not, or an
    hour's pause would read as a tenth of the speed."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _limit_per_second(settings) -> float | None:
    from docutrain_cli.ratelimit.budget import MARGIN, current_budget

    budget = current_budget(settings)
    tpm = (budget or {}).get("tokens_per_minute_limit") or settings.embedding_tpm
    return tpm * (1 - MARGIN) / 60.0 if tpm else None


def place_in_line(queue: JobQueue, job: Job, settings, now: float, rate: ServedRate | None = None) -> dict[str, Any]:
    """{"position", "tokens_ahead", "eta_seconds"} of one job (nulls when unknown)."""
    ahead = queue.ahead_of(job, now)
    if ahead is None:
        return {"position": None, "tokens_ahead": None, "eta_seconds": None}
    rate = rate or ServedRate.measure(queue, settings, now)
    own = job.cost or settings.remote_job_tokens
    seconds = rate.seconds_for(ahead.tokens + own + ahead.running_tokens / 2)
    if seconds is not None and job.not_before > now:  # a retry waits for its time first
        seconds = max(seconds, job.not_before - now + rate.seconds_for(own))
    return {
        "position": ahead.jobs,
        "tokens_ahead": ahead.tokens,
        "eta_seconds": None if seconds is None else round(seconds),
    }


def users_in_line(queue: JobQueue, now: float, limit: int = TOP_USERS) -> dict[str, Any]:
    """Who has work waiting (most tokens first) and each one's share of the
    last hour's tokens, for `status`; nulls where the backend cannot tell."""
    waiting = queue.waiting_by_user()
    report: dict[str, Any] = {
        "lease_order": queue.lease_order,
        "queued_by_priority": queue.depth_by_priority(),
        "users_with_queued_work": None if waiting is None else len(waiting),
        "users": None,
    }
    if waiting is None:
        return report
    served = _tokens_by_user(queue.finished(since=now - SHARE_WINDOW))
    total = sum(served.values())
    report["users"] = [
        {
            "user_id": backlog.user_id,
            "queued": backlog.jobs,
            "queued_tokens": backlog.tokens,
            "share_last_hour": round(served.get(backlog.user_id, 0) / total, 3) if total else None,
        }
        for backlog in waiting[:limit]
    ]
    return report


def _tokens_by_user(finished: list[Finished]) -> dict[str | None, int]:
    served: dict[str | None, int] = {}
    for record in finished:
        served[record.user_id] = served.get(record.user_id, 0) + record.tokens
    return served

"""How the CLI says things in plain words: counts, durations, times, and
the short reports (enqueue, sync, doctor, status, the rate budget) as lines
of text.

No rich here: the log lines of a cron or systemd run and the `--json`
commands need none of it, and importing it cost a run about 0.1 s of CPU
while the workers' forkserver was importing on the other core. Tables and
the live display are cli/render.py's and cli/progress.py's RichObserver.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from docutrain_cli.pipeline.models import OFFLINE_MODEL


# -- words and times --------------------------------------------------------
def plural(count: int, singular: str, many: str | None = None) -> str:
    """`1 page`, `2 pages`, `1 retry`, `3 retries`."""
    if count == 1:
        return f"{count} {singular}"
    if many is None:
        many = singular[:-1] + "ies" if singular.endswith("y") and singular[-2:-1] not in "aeiou" else singular + "s"
    return f"{count:,} {many}"


def age(seconds: float | None) -> str:
    """A duration the way people read it: `42s`, `9.1m`, `2.5h`, `3.0d`."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def when(moment: float | str | None) -> str:
    """Epoch seconds, or an ISO 8601 time from a JSON report, in local time with its zone."""
    if not moment:
        return "-"
    if isinstance(moment, str):
        moment = datetime.datetime.fromisoformat(moment).timestamp()
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(moment))


# -- short reports ---------------------------------------------------------------
def enqueue_lines(report) -> list[str]:
    lines = [f"queued job {job.id}: {job.source}" for job in report.queued]
    lines += [
        f"skipped {job.source}: already queued (same content); use --force to queue it again"
        for job in report.duplicates
    ]
    lines.append(f"{len(report.queued)} queued, {len(report.duplicates)} skipped, {len(report.refused)} refused")
    return lines


def sync_lines(result: dict[str, Any]) -> list[str]:
    """`docutrain sync`: what went to Supabase, and to the status webhook."""
    if not result.get("enabled"):
        lines = ["Supabase is not configured (set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY)"]
    else:
        lines = [
            f"delivered {result['delivered']}, dropped {result['dropped']} (row gone), "
            f"refused {result['refused']}; {result['backlog']} still waiting"
        ]
    hooks = result.get("status_webhooks")
    if hooks:
        lines.append(
            f"status webhooks: delivered {hooks['delivered']}, dropped {hooks['dropped']}, "
            f"refused {hooks['refused']}; {hooks['backlog']} still waiting"
        )
    return lines


def doctor_lines(checks) -> list[str]:
    lines = []
    for check in checks:
        lines.append(f"{'ok ' if check.ok else 'BAD'} {check.name}: {check.detail}")
        if check.fix and not check.ok:
            lines.append(f"    fix: {check.fix}")
    return lines


# -- status -------------------------------------------------------------------
def count(value: int | None) -> str:
    """A count a backend may not know (Cloudflare's per-state counts)."""
    return "unknown" if value is None else str(value)


def status_lines(
    data: dict[str, Any], *, exclusive: bool, known: bool = True, queue_missing: str | None = None
) -> list[str]:
    """`docutrain status` as text; `data` is what `--json` prints. `known`:
    the backend can tell the states apart (Cloudflare cannot)."""
    lines = [
        f"queued {count(data['queued'])}  running {count(data['running'])}  retrying {count(data['retrying'])}  "
        f"done {count(data['done'])}  dead {count(data['dead'])}"
    ]
    if queue_missing:
        lines.append(queue_missing)
    oldest = data["oldest_queued_age_seconds"]
    if known:  # otherwise the backend's own line below says what it can tell
        lines.append("oldest queued job: none queued" if oldest is None else f"oldest queued job: {age(oldest)} old")
    if data["next_retry_at"]:
        lines.append(f"next retry: {when(data['next_retry_at'])}")
    if exclusive:
        lines.append(f"runner: {data['runner'] or 'none running'}")
    else:
        lines.append("runners: not tracked (a shared queue; any number of machines may drain it)")
    d = data.get("queue_details") or {}
    if d.get("backend") == "pgmq":
        lines.append(
            f"pgmq queue {d['queue']}: {d['queue_length']} messages, oldest "
            f"{age(d['oldest_message_age_seconds'])}; dead-letter queue {d['dead_letter_queue']}: "
            f"{d['dead_letter_length']}"
        )
    if d.get("backend") == "cloudflare":
        lines.append(
            f"cloudflare queue {d['queue']}: {count(d['backlog'])} unfinished (queued, running and "
            f"waiting to retry together), oldest {age(d['oldest_message_age_seconds'])}; "
            f"dead-letter queue {d['dead_letter_queue']}: {count(d['dead_letter_backlog'])}, oldest "
            f"{age(d.get('dead_letter_oldest_message_age_seconds'))}"
        )
        lines.append(
            "Cloudflare Queues does not report queued, running, retrying or done jobs apart; done documents are in the store"
        )
    for name, key in (("supabase outbox", "supabase_outbox"), ("status webhook outbox", "status_webhook_outbox")):
        outbox = data.get(key)
        if outbox:
            line = f"{name}: {outbox['backlog']} waiting"
            if outbox.get("last_error"):
                line += f", last error at {when(outbox.get('last_error_at'))}: {outbox['last_error']}"
            lines.append(line)
    if data.get("batches"):
        lines += batch_status_lines(data["batches"])
    for budget in data.get("embedding_budget") or []:
        lines.append(f"embedding {budget['key'].split(' key#')[0]}: {budget_line(budget)}")
        if budget["problem"]:
            lines.append(f"  stopped at {when(budget['problem_at'])}: {budget['problem']}")
    lines += line_lines(data)
    if data["dead"]:
        lines.append("see dead jobs with `docutrain jobs --state dead`; retry them with `docutrain retry --all-dead`")
    return lines


def place_line(place: dict | None) -> str | None:
    """'3 jobs ahead (41,000 tokens), done in about 2m' for a waiting job."""
    if not place or place.get("position") is None:
        return None
    ahead = place["position"]
    text = f"{ahead} job{'s' if ahead != 1 else ''} ahead ({place['tokens_ahead']:,} tokens)"
    eta = place.get("eta_seconds")
    return text + (f", done in about {age(eta)}" if eta is not None else ", no estimate of when yet")


ORDER_WORDS = {
    "fair": "fair share by tokens between users within each priority",
    "fifo": "first in, first out within each priority",
    "priority": "by priority only (fair share between users is not available on Cloudflare Queues)",
    "none": "Cloudflare's own order (fair share between users is not available on Cloudflare Queues)",
}


def line_lines(data: dict[str, Any]) -> list[str]:
    """The lease order, queued jobs per priority and who is waiting, for `status`."""
    if not data.get("lease_order"):
        return []
    lines = [f"lease order: {ORDER_WORDS.get(data['lease_order'], data['lease_order'])}"]
    depth = data.get("queued_by_priority")
    if depth:
        lines.append("waiting by priority: " + "  ".join(f"{name} {n}" for name, n in depth.items()))
    users = data.get("users")
    if users:
        shown = f", the {len(users)} with the most tokens" if data["users_with_queued_work"] > len(users) else ""
        lines.append(f"users with queued work: {data['users_with_queued_work']}{shown}")
        for user in users:
            share = user["share_last_hour"]
            lines.append(
                f"  {user['user_id'] or '(no user id)'}: {user['queued']} waiting, {user['queued_tokens']:,} tokens"
                + (f", {share:.0%} of the last hour's tokens" if share is not None else "")
            )
    return lines


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


def cloudflare_ready_line(d: dict[str, Any]) -> str:
    """`docutrain queue init` on Cloudflare: both queues answer."""
    return (
        f"cloudflare queue {d['queue']} reachable: backlog {count(d['backlog'])}; "
        f"dead-letter queue {d['dead_letter_queue']}: backlog {count(d['dead_letter_backlog'])}"
    )



# -- estimate -----------------------------------------------------------------
def estimate_note(data: dict) -> str | None:
    """Why the token count may be off, when it may."""
    if data["counted_with"].startswith("tiktoken") or data["server_tokens_per_estimated_token"]:
        return None
    if data["model"] == OFFLINE_MODEL:
        return "offline embedder: tokens as its estimator counts them; nothing is billed"
    return (
        "tokens estimated at about 4 bytes a token, not yet calibrated by the API's own counts "
        "(it is after the first documents are embedded with this queue)"
    )

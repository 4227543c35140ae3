"""How the CLI shows things: tables, times, job details, search hits.

Kept apart from the commands so the CLI stays a thin layer of flags and exit
codes, and so every rendering can be tested at a fixed terminal width
(`rich.console.Console(width=80)`) without running a command.

File names are what users look for in a table, so a path never breaks in the
middle of its name: `FileName` keeps the name whole and shortens the folder
part from the left (`…/uploads/workers.pdf`) when the column is narrow; long
error messages wrap instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import time
from typing import Any, Callable, Iterable

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from docutrain_cli.pipeline.models import OFFLINE_MODEL

ELLIPSIS = "…"


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


# -- file names in narrow columns ------------------------------------------
class FileName:
    """A path for a table cell that keeps the file name whole.

    It asks the table for at least the name's width and renders the folder
    part shortened from the left when the cell is narrower than the path.
    Only a name longer than the whole cell is folded (nothing else fits).
    """

    def __init__(self, path: str, style: str = ""):
        self.path = path
        folder, slash, name = path.rpartition("/")
        self.folder, self.name = (folder + slash, name) if name else ("", path)
        self.style = style

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        shortest = cell_len(self.name) + (cell_len(ELLIPSIS) if self.folder else 0)
        return Measurement(min(shortest, options.max_width), min(cell_len(self.path), options.max_width))

    def fitted(self, width: int) -> str:
        if cell_len(self.path) <= width:
            return self.path
        room = width - cell_len(self.name) - cell_len(ELLIPSIS)
        if room <= 0:
            return self.name  # too narrow even for `…name`: the name alone
        folder = self.folder
        while cell_len(folder) > room:
            folder = folder[1:]
        return ELLIPSIS + folder + self.name

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # no_wrap=False: in a no_wrap column, a name wider than the whole cell
        # must still fold rather than be cropped.
        yield Text(self.fitted(options.max_width), style=self.style, overflow="fold", no_wrap=False)

    def __str__(self) -> str:
        return self.path


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


# -- jobs ---------------------------------------------------------------------
class FitToWidth:
    """A renderable built for the width it is given: a table whose file
    column must be sized before rich lays it out (rich squeezes no_wrap
    columns proportionally, which would cut names again)."""

    def __init__(self, build: Callable[[int], Any]):
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build(options.max_width)


GAP = 2  # rich's default cell padding between two columns (pad_edge=False)
MIN_ERROR_WIDTH = 20


def file_column_width(names: list[FileName], room: int, *, rest: int = 0) -> int:
    """How wide the file column gets out of `room` cells, sharing them with
    a wrapping column whose longest cell is `rest`: whole paths if both fit;
    else the wrapping column gets up to half, never less than its minimum,
    and the file column never less than each `…name`."""
    if not names:
        return 0
    longest = max(cell_len(n.path) for n in names)
    shortest = max(min(cell_len(n.path), cell_len(ELLIPSIS + n.name)) for n in names)
    if longest + rest > room:
        rest = min(rest, max(room // 2, MIN_ERROR_WIDTH))
    return max(min(longest, room - rest), min(shortest, room))


def jobs_table(jobs: Iterable, waits: dict[str, list[str]] | None = None) -> FitToWidth:
    """id, state, attempts, file (name kept whole), last error (wraps); with
    `waits` (Batch API mode: document key -> batches), the batch a done
    job's document still waits on, in the error column."""
    rows = []
    for job in jobs:
        error = (job.last_error or "").removeprefix(f"{job.source}: ")  # the file is in its own column
        wait = (waits or {}).get(job.document_key)
        if wait is not None:
            error = (error + "; " if error else "") + "waits on batch " + (", ".join(wait) or "(not sent yet)")
        rows.append((str(job.id), job.state.value, str(job.attempts), FileName(job.source), error))

    def build(width: int) -> Table:
        fixed = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(("id", "state", "attempts"))]
        room = width - sum(fixed) - GAP * 4
        names = [r[3] for r in rows]
        errors = max([cell_len(r[4]) for r in rows] + [cell_len("last error")])
        # The error column keeps a word's width even when a name needs more:
        # then the name folds, since nothing else would fit.
        file_width = min(file_column_width(names, room, rest=errors), room - len("error"))
        table = Table(box=None, pad_edge=False)
        table.add_column("id", justify="right", no_wrap=True, width=fixed[0])
        table.add_column("state", no_wrap=True, width=fixed[1])
        table.add_column("attempts", justify="right", no_wrap=True, width=fixed[2])
        table.add_column("file", no_wrap=True, width=max(file_width, 4))
        table.add_column("last error", overflow="fold", width=room - file_width)
        for row in rows:
            table.add_row(*row)
        return table

    return FitToWidth(build)


_RESULT_LABELS = {"document_id": "store row id", "cost_usd": "cost"}


def _result_fields(job) -> dict[str, str]:
    """The result's facts worth a row: not empty, not repeating the job's own."""
    result = job.result
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = dataclasses.asdict(result)
    repeats = {"sha256": job.sha256, "document_key": job.document_key}
    fields = {}
    for key, value in dict(result or {}).items():
        if value in (None, "", [], {}) or repeats.get(key, object()) == value:
            continue
        label = _RESULT_LABELS.get(key, key.replace("_", " "))
        if key == "cost_usd":
            fields[label] = f"${value:.4f} at list price"
        elif isinstance(value, int) and not isinstance(value, bool) and key != "document_id":
            fields[label] = f"{value:,}"
        else:
            fields[label] = str(value)
    return fields


def job_detail(job, place: dict | None = None) -> Table:
    """`docutrain jobs show ID`: one row per fact, every error, the result as
    a small table; `place` is its place in line (queues/line.py)."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("job", job.id),
        ("state", job.state.value),
        ("file", job.source),
        ("sha256", job.sha256),
        ("user id", job.user_id),
        ("document id", job.document_id),
        ("attempts", job.attempts),
        ("enqueued", when(job.enqueued_at)),
        ("requeued", when(getattr(job, "queued_at", None))),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("next attempt", when(job.not_before) if job.state.value == "retrying" else None),
        ("priority", job.priority),
        ("in line", place_line(place)),
    ]
    for label, value in rows:
        if value not in (None, "-"):
            table.add_row(f"{label}:", str(value))
    for i, error in enumerate(job.errors, 1):
        table.add_row(f"error {i}:", error)
    fields = _result_fields(job)
    if fields:
        result = Table(box=None, pad_edge=False, show_header=False, padding=(0, 2, 0, 0))
        result.add_column(style="dim", no_wrap=True)
        result.add_column(overflow="fold")
        for label, value in fields.items():
            result.add_row(label, value)
        table.add_row("result:", result)
    return table


# -- estimate -----------------------------------------------------------------
def _minutes(minutes: float | None, data: dict) -> str:
    if data["model"] == OFFLINE_MODEL:
        return "no rate limit offline"
    if minutes is None:
        return "no rate limit known (set embedding_tpm, or run once to learn it)"
    source = "learned from the API" if data["limit_source"] == "headers" else "from the settings"
    return f"{age(minutes * 60)} at {data['tokens_per_minute_limit']:,} tokens/min ({source})"


def estimate_table(data: dict) -> Table:
    """`docutrain estimate`: what the files would cost, one fact a row."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(style="dim", overflow="fold")
    skipped = [plural(len(data["refused"]), "refused", "refused")] if data["refused"] else []
    skipped += [plural(data["duplicates"], "duplicate")] if data["duplicates"] else []
    table.add_row("files", f"{data['files']:,}", ", ".join(skipped))
    ocr = f"{plural(data['ocr_pages'], 'scanned page')} to OCR: their text is not counted" if data["ocr_pages"] else ""
    table.add_row("pages", f"{data['pages']:,}", ocr)
    table.add_row("chunks", f"{data['chunks']:,}", "")
    cached = f"{data['cached_tokens']:,} more already in the embedding cache" if data["cached_tokens"] else ""
    table.add_row("tokens to pay", f"{data['tokens']:,}", cached)
    if data["cost_usd"] is None:
        table.add_row("cost", "unknown", f"no price known for {data['model']}")
    else:
        table.add_row("cost", f"${data['cost_usd']:.4f}", f"{data['model']}; ${data['batch_cost_usd']:.4f} with --batch")
    table.add_row("time", "", _minutes(data["minutes_at_limit"], data))
    ahead = data.get("queue_ahead")
    if ahead and ahead["jobs"] is None:
        table.add_row("queue ahead", "unknown", "this queue cannot tell how many jobs wait")
    elif ahead and ahead["jobs"]:
        tokens = "tokens unknown" if ahead["tokens"] is None else f"{ahead['tokens']:,} tokens"
        counted = f" ({ahead['counted_jobs']:,} counted)" if ahead["counted_jobs"] < ahead["jobs"] else ""
        when_done = f"; {age(ahead['minutes_at_limit'] * 60)} at the limit" if ahead["minutes_at_limit"] is not None else ""
        table.add_row("queue ahead", plural(ahead["jobs"], "job"), f"{tokens}{counted}{when_done}")
    elif ahead:
        table.add_row("queue ahead", "0 jobs", "")
    return table


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


# -- search -------------------------------------------------------------------
SNIPPET_CHARS = 300


def search_hits(hits: list) -> Group:
    """One line per hit (rank, score, file, pages, chunk) and its text below,
    after the heading it falls under when the store knows it."""
    parts = []
    for rank, hit in enumerate(hits, 1):
        pages = f"p. {hit.page_start}" + (f"-{hit.page_end}" if hit.page_end != hit.page_start else "")
        cells = (f"{rank}. {hit.score:.3f}", FileName(hit.source or hit.document_key), pages, f"chunk {hit.chunk_index}")
        parts.append(FitToWidth(functools.partial(_hit_line, cells)))
        snippet = " ".join(hit.content.split())
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[:SNIPPET_CHARS] + ELLIPSIS
        body = Table.grid(padding=(0, 0, 0, 3), pad_edge=True)
        body.add_column(overflow="fold")
        heading = getattr(hit, "heading", None)  # the heading path the chunk falls under
        body.add_row(Text.assemble((f"under {heading}: ", "dim"), snippet) if heading else Text(snippet))
        parts.append(body)
    return Group(*parts)


def _hit_line(cells: tuple, width: int) -> Table:
    score, name, pages, chunk = cells
    fixed = [cell_len(score), cell_len(pages), cell_len(chunk)]
    line = Table.grid(padding=(0, GAP, 0, 0))
    line.add_column(no_wrap=True, width=fixed[0])
    line.add_column(no_wrap=True, width=file_column_width([name], width - sum(fixed) - 3 * GAP))
    line.add_column(no_wrap=True, width=fixed[1])
    line.add_column(no_wrap=True, width=fixed[2])
    line.add_row(*cells)
    return line

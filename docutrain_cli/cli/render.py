"""How the CLI shows things with rich: tables, job details, search hits
(the plain words and short reports are cli/words.py).

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
import functools
from typing import Any, Callable, Iterable

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from docutrain_cli.cli.words import age, place_line, plural, when
from docutrain_cli.pipeline.models import OFFLINE_MODEL

ELLIPSIS = "…"


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

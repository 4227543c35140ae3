"""Putting documents in and processing them: `enqueue`, `run`, `serve`."""

from __future__ import annotations

import signal
import sys
from typing import List, Optional

import typer

from docutrain_cli.cli.app import (
    JsonOption, app, command, console, emit, error_line, flag_problem, json_option, open_queue_for, settings_from,
)
from docutrain_cli.errors import ConfigError, ExitCode, UsageError
from docutrain_cli.jobs import PRIORITIES

ReportJson = json_option("Print the result as JSON.")
SummaryJson = json_option("Print the final summary as JSON.")


# -- enqueue ----------------------------------------------------------------
@command(app)
def enqueue(
    ctx: typer.Context,
    paths: Optional[List[str]] = typer.Argument(None, metavar="PATH", help="Files, folders (searched recursively) or globs."),
    user_id: Optional[str] = typer.Option(None, "--user-id", metavar="ID", help="Owner of the documents."),
    document_id: Optional[str] = typer.Option(None, "--document-id", metavar="ID", help="Link one file to an existing document row."),
    force: bool = typer.Option(False, "--force", help="Queue files even if the same content is already queued."),
    from_supabase: bool = typer.Option(False, "--from-supabase", help="Queue every pending Supabase document."),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="N", help="With --from-supabase: at most this many."),
    priority: Optional[str] = typer.Option(
        None, "--priority", metavar="LEVEL", help="high, normal or low (default normal; --from-supabase: low)."
    ),
    as_json: ReportJson = False,
) -> None:
    """Put documents into the queue and return at once with their job ids.

    Higher priority goes first; within one, users share by tokens.

    Example: docutrain enqueue ./uploads/*.pdf --user-id 4f1c... --priority high
    """
    from docutrain_cli.queues.enqueue import EnqueueReport, enqueue_jobs, enqueue_paths
    from docutrain_cli.cli.messages import new_queue_folder
    from docutrain_cli.cli.words import enqueue_lines

    if priority is not None and priority not in PRIORITIES:
        raise UsageError(f"--priority: expected {', '.join(PRIORITIES)}, got {priority!r}")
    settings = settings_from(ctx)
    if not paths and not from_supabase:
        raise UsageError("give files, folders or globs to queue (or --from-supabase)")
    report = EnqueueReport()
    new_folder = new_queue_folder(settings)
    with open_queue_for(settings) as queue:
        if new_folder:
            print(f"docutrain: {new_folder}", file=sys.stderr)
        if from_supabase:
            from docutrain_cli.supabase.pull import pending_jobs

            jobs, refused_rows = pending_jobs(settings, limit=limit)
            report = enqueue_jobs(queue, jobs, force=force, priority=priority or "low")
            report.refused.extend(refused_rows)
        if paths:
            more = enqueue_paths(queue, paths, user_id=user_id, document_id=document_id, force=force,
                                 priority=priority or "normal")
            report.queued += more.queued
            report.duplicates += more.duplicates
            report.refused += more.refused
    for refused in report.refused:
        error_line(f"{refused.path}: {refused.reason}")
    emit(report.to_dict(), as_json, lambda: enqueue_lines(report))
    if report.refused:
        raise typer.Exit(ExitCode.PARTIAL)


# -- estimate -------------------------------------------------------------------
@command(app)
def estimate(
    ctx: typer.Context,
    paths: List[str] = typer.Argument(..., metavar="PATH", help="Files, folders (searched recursively) or globs."),
    as_json: JsonOption = False,
) -> None:
    """Count what embedding these files would cost, before spending anything:
    files, pages, chunks, tokens to pay (embedding-cache hits excluded), the
    price at the sync and the Batch API rate, minutes at the rate limit, and
    the queue ahead. Sends no request.

    Example: docutrain estimate ./uploads --json
    """
    from docutrain_cli.cli.messages import missing_queue
    from docutrain_cli.cli.render import estimate_table
    from docutrain_cli.cli.words import estimate_note
    from docutrain_cli.run.estimate import estimate as estimate_paths

    settings = settings_from(ctx)
    if missing_queue(settings):  # nothing ahead, and nothing to create
        result = estimate_paths(settings, paths)
    else:
        with open_queue_for(settings) as queue:
            result = estimate_paths(settings, paths, queue)
    for refused in result.refused:
        error_line(f"{refused.path}: {refused.reason}")
    data = result.to_dict()

    def human():
        from rich.console import Group
        from rich.text import Text

        note = estimate_note(data)
        return Group(estimate_table(data), Text(f"note: {note}")) if note else estimate_table(data)

    emit(data, as_json, human)
    if result.refused:
        raise typer.Exit(ExitCode.PARTIAL)


# -- run ----------------------------------------------------------------------
@command(app)
def run(
    ctx: typer.Context,
    workers: Optional[int] = typer.Option(None, "--workers", "-w", metavar="N", help="Worker processes (default: CPU count)."),
    drain: bool = typer.Option(False, "--drain", help="Exit when nothing is queued, running or waiting to retry."),
    max_time: Optional[str] = typer.Option(None, "--max-time", metavar="DURATION", help="Stop taking jobs after this long, e.g. 4m."),
    job_timeout: Optional[str] = typer.Option(
        None, "--job-timeout", metavar="DURATION", help="Kill and retry a job after this long (default 10m)."
    ),
    as_json: SummaryJson = False,
    batch: bool = typer.Option(
        False, "--batch", help="Embed through OpenAI's Batch API: half the price, ready within 24 h (setting embedding_mode)."
    ),
) -> None:
    """Process the queue with worker processes.

    Without --drain it keeps polling for new jobs (a service). With --drain it
    exits when the queue is empty: what cron calls.

    Example: docutrain run --workers 24 --drain --max-time 4m
    """
    from docutrain_cli.config import parse_duration
    from docutrain_cli.cli.progress import LogObserver, RichObserver, summary_text
    from docutrain_cli.run.runner import Runner

    settings = settings_from(ctx, workers=workers, job_timeout=job_timeout, embedding_mode="batch" if batch else None)
    try:
        seconds = parse_duration(max_time, "max_time") if max_time else None
    except ConfigError as exc:
        raise ConfigError(flag_problem(ctx, str(exc), ["max_time"])) from None
    interactive = sys.stdout.isatty() and not as_json
    observer = RichObserver(console()) if interactive else LogObserver()
    with open_queue_for(settings) as queue:
        runner = Runner(settings, queue, observer)
        _install_stop_handlers(runner)
        summary = runner.run(drain=drain, max_time=seconds)
        # Nothing is left to stop. Python puts back the default handlers
        # while it exits, so a late Ctrl-C would kill us by SIGINT (and not
        # exit 130) after all was saved: ignore stop signals from here on.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A terminal gets the summary under the live display; LogObserver has logged it already.
    emit(summary.to_dict(), as_json, lambda: summary_text(summary) if interactive else None)
    if summary.stop_reason == "account":
        left = summary.remaining.get("queued", 0) + summary.remaining.get("retrying", 0)
        error_line(f"{summary.account_problem}; then run again ({left} jobs wait in the queue, none charged)")
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _install_stop_handlers(runner) -> None:
    # Handlers only set flags; the runner's loop acts on them.
    signal.signal(signal.SIGINT, lambda *_: runner.request_stop("interrupted"))
    signal.signal(signal.SIGTERM, lambda *_: runner.request_stop("terminated"))


# -- serve --------------------------------------------------------------------
@command(app)
def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on; other than loopback needs serve_token."
    ),
    port: int = typer.Option(8080, "--port", metavar="N", help="Port (0: any free port; the address is printed)."),
    allow_local_paths: Optional[str] = typer.Option(
        None, "--allow-local-paths", metavar="DIR", help="Let requests name files inside DIR on this machine."
    ),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Accept documents over HTTP (POST /v1/documents, Supabase webhooks) into the queue.

    Also serves a web dashboard at / (log in with the token) and Prometheus
    metrics at /metrics.

    Example: DOCUTRAIN_SERVE_TOKEN=... docutrain serve --host 0.0.0.0 --port 8080
    """
    from docutrain_cli.serve import ServeOptions, serve as serve_http

    serve_http(settings_from(ctx), host, port, ServeOptions(allow_local_paths=allow_local_paths), access_log)

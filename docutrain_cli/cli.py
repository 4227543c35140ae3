"""The `docutrain` command: parses flags, calls the library, maps errors to
exit codes. Everything it calls is usable from Python; how output looks is in
`render` (tables, times) and `clistyle` (help screens, usage errors)."""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from docutrain_cli import __version__
from docutrain_cli.clistyle import HelpCommand, HelpGroup, also_after_the_command, run_app
from docutrain_cli.config import Settings, load_settings
from docutrain_cli.errors import ExitCode, UsageError
from docutrain_cli.jobs import JobState
from docutrain_cli.messages import demo_hint, missing_queue, not_listable, not_retried

app = typer.Typer(
    name="docutrain",
    cls=HelpGroup,
    help="Turn uploaded documents into embedded, searchable chunks.\n\n"
    "Example: docutrain enqueue ./uploads --user-id U && docutrain run --workers 24 --drain",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
jobs_app = typer.Typer(cls=HelpGroup, no_args_is_help=False)
app.add_typer(jobs_app, name="jobs")
queue_app = typer.Typer(
    cls=HelpGroup, no_args_is_help=True,
    help="Set up the queue.\n\nExample: docutrain queue init   (pgmq: DOCUTRAIN_QUEUE=postgresql://... docutrain queue init)",
)
app.add_typer(queue_app, name="queue")


def _command(group: typer.Typer, name: str | None = None):
    """Register a command: Click-style help, and --queue/--store accepted
    after the command name too (`docutrain status --queue other.db`)."""

    def register(function):
        return group.command(name, cls=HelpCommand)(also_after_the_command(function, _AFTER_THE_COMMAND))

    return register


_show_traceback = False


def _version(value: bool) -> None:
    if value:
        print(f"docutrain {__version__}")
        raise typer.Exit()


_GLOBAL_HELP = {
    "--queue": "Queue file (default ./queue.db), postgresql:// URL or cloudflare://ACCOUNT_ID/QUEUE_ID. "
    "Env: DOCUTRAIN_QUEUE.",
    "--store": "Local store file (default ./docutrain.db). Env: DOCUTRAIN_STORE.",
}
# Root options also accepted after the command: root key -> (flag, metavar, help).
_AFTER_THE_COMMAND = {
    "queue": ("--queue", "PATH|URL", _GLOBAL_HELP["--queue"]),
    "store": ("--store", "PATH", _GLOBAL_HELP["--store"]),
}


@app.callback()
def _global(
    ctx: typer.Context,
    queue: Optional[str] = typer.Option(None, "--queue", metavar="PATH|URL", help=_GLOBAL_HELP["--queue"]),
    store: Optional[str] = typer.Option(None, "--store", metavar="PATH", help=_GLOBAL_HELP["--store"]),
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE", help="Settings file (default ./docutrain.toml)."),
    traceback: bool = typer.Option(False, "--traceback", help="Show the full traceback of an error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    global _show_traceback
    _show_traceback = traceback
    ctx.obj = {"queue": queue, "store": store, "config": config}


def _settings(ctx: typer.Context, **flags) -> Settings:
    root = ctx.find_root().obj or {}
    return load_settings(
        {"queue": root.get("queue"), "store": root.get("store"), **flags}, config_file=root.get("config")
    )


def _queue(settings: Settings):
    from docutrain_cli.queues import open_queue

    return open_queue(settings)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _emit_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def _error_line(message: str) -> None:
    print(f"docutrain: error: {message}", file=sys.stderr)


# -- enqueue ----------------------------------------------------------------
@_command(app)
def enqueue(
    ctx: typer.Context,
    paths: Optional[List[str]] = typer.Argument(None, metavar="PATH", help="Files, folders (searched recursively) or globs."),
    user_id: Optional[str] = typer.Option(None, "--user-id", metavar="ID", help="Owner of the documents."),
    document_id: Optional[str] = typer.Option(None, "--document-id", metavar="ID", help="Link one file to an existing document row."),
    force: bool = typer.Option(False, "--force", help="Queue files even if the same content is already queued."),
    from_supabase: bool = typer.Option(False, "--from-supabase", help="Queue every pending Supabase document."),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="N", help="With --from-supabase: at most this many."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Put documents into the queue and return at once with their job ids.

    Example: docutrain enqueue ./uploads/*.pdf --user-id 4f1c...
    """
    from docutrain_cli.enqueue import EnqueueReport, enqueue_jobs, enqueue_paths
    from docutrain_cli.render import enqueue_lines

    settings = _settings(ctx)
    if not paths and not from_supabase:
        raise UsageError("give files, folders or globs to queue (or --from-supabase)")
    report = EnqueueReport()
    with _queue(settings) as queue:
        if from_supabase:
            from docutrain_cli.supabase.pull import pending_jobs

            jobs, refused_rows = pending_jobs(settings, limit=limit)
            report = enqueue_jobs(queue, jobs, force=force)
            report.refused.extend(refused_rows)
        if paths:
            more = enqueue_paths(queue, paths, user_id=user_id, document_id=document_id, force=force)
            report.queued += more.queued
            report.duplicates += more.duplicates
            report.refused += more.refused
    for refused in report.refused:
        _error_line(f"{refused.path}: {refused.reason}")
    if as_json:
        _emit_json(report.to_dict())
    else:
        print("\n".join(enqueue_lines(report)))
    if report.refused:
        raise typer.Exit(ExitCode.PARTIAL)


# -- estimate -------------------------------------------------------------------
@_command(app)
def estimate(
    ctx: typer.Context,
    paths: List[str] = typer.Argument(..., metavar="PATH", help="Files, folders (searched recursively) or globs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Count what embedding these files would cost, before spending anything:
    files, pages, chunks, tokens to pay (embedding-cache hits excluded), the
    price at the sync and the Batch API rate, minutes at the rate limit, and
    the queue ahead. Sends no request.

    Example: docutrain estimate ./uploads --json
    """
    from docutrain_cli.estimate import estimate as estimate_paths
    from docutrain_cli.render import estimate_note, estimate_table

    settings = _settings(ctx)
    if missing_queue(settings):  # nothing ahead, and nothing to create
        result = estimate_paths(settings, paths)
    else:
        with _queue(settings) as queue:
            result = estimate_paths(settings, paths, queue)
    for refused in result.refused:
        _error_line(f"{refused.path}: {refused.reason}")
    data = result.to_dict()
    if as_json:
        _emit_json(data)
    else:
        _console().print(estimate_table(data))
        note = estimate_note(data)
        if note:
            print(f"note: {note}")
    if result.refused:
        raise typer.Exit(ExitCode.PARTIAL)


# -- run ----------------------------------------------------------------------
@_command(app)
def run(
    ctx: typer.Context,
    workers: Optional[int] = typer.Option(None, "--workers", "-w", metavar="N", help="Worker processes (default: CPU count)."),
    drain: bool = typer.Option(False, "--drain", help="Exit when nothing is queued, running or waiting to retry."),
    max_time: Optional[str] = typer.Option(None, "--max-time", metavar="DURATION", help="Stop taking jobs after this long, e.g. 4m."),
    job_timeout: Optional[str] = typer.Option(
        None, "--job-timeout", metavar="DURATION", help="Kill and retry a job after this long (default 10m)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON."),
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
    from docutrain_cli.progress import LogObserver, RichObserver, summary_line
    from docutrain_cli.runner import Runner

    settings = _settings(ctx, workers=workers, job_timeout=job_timeout, embedding_mode="batch" if batch else None)
    seconds = parse_duration(max_time, "--max-time") if max_time else None
    interactive = sys.stdout.isatty() and not as_json
    observer = RichObserver(_console()) if interactive else LogObserver()
    with _queue(settings) as queue:
        runner = Runner(settings, queue, observer)
        _install_stop_handlers(runner)
        summary = runner.run(drain=drain, max_time=seconds)
        # Nothing is left to stop. Python puts back the default handlers
        # while it exits, so a late Ctrl-C would kill us by SIGINT (and not
        # exit 130) after all was saved: ignore stop signals from here on.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if as_json:
        _emit_json(summary.to_dict())
    elif interactive:
        print(summary_line(summary))
    if summary.stop_reason == "account":
        left = summary.remaining.get("queued", 0) + summary.remaining.get("retrying", 0)
        _error_line(f"{summary.account_problem}; then run again ({left} jobs wait in the queue, none charged)")
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _install_stop_handlers(runner) -> None:
    # Handlers only set flags; the runner's loop acts on them.
    signal.signal(signal.SIGINT, lambda *_: runner.request_stop("interrupted"))
    signal.signal(signal.SIGTERM, lambda *_: runner.request_stop("terminated"))


# -- serve --------------------------------------------------------------------
@_command(app)
def serve(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on; other than loopback needs serve_token."
    ),
    port: int = typer.Option(8080, "--port", metavar="N", help="Port (0: any free port; the address is printed)."),
    allow_local_paths: bool = typer.Option(False, "--allow-local-paths", help="Let requests name files on this machine."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Accept documents over HTTP (POST /v1/documents, Supabase webhooks) into the queue.

    Also serves a web dashboard at / (log in with the token) and Prometheus
    metrics at /metrics.

    Example: DOCUTRAIN_SERVE_TOKEN=... docutrain serve --host 0.0.0.0 --port 8080
    """
    from docutrain_cli.serve import ServeOptions, serve as serve_http

    serve_http(_settings(ctx), host, port, ServeOptions(allow_local_paths=allow_local_paths), access_log)


# -- status -------------------------------------------------------------------
@_command(app)
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show how many jobs are in each state and whether a runner is working.

    Example: docutrain status --json
    """
    from docutrain_cli.queues import QueueStats
    from docutrain_cli.recorder import status_report
    from docutrain_cli.render import status_lines

    settings = _settings(ctx)
    missing = missing_queue(settings)
    if missing:
        stats, exclusive = QueueStats.empty(), True
    else:
        with _queue(settings) as queue:
            stats, exclusive = queue.stats(time.time()), queue.exclusive
    data = status_report(settings, stats)  # the same object as serve's GET /v1/status
    if as_json:
        _emit_json(data)
        return
    print("\n".join(status_lines(data, exclusive=exclusive, known=stats.known, queue_missing=missing)))


# -- jobs -----------------------------------------------------------------------
@jobs_app.callback(invoke_without_command=True)
@functools.partial(also_after_the_command, options=_AFTER_THE_COMMAND)
def jobs(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, "--state", "-s", metavar="STATE", help="queued, running, retrying, done or dead."),
    limit: int = typer.Option(50, "--limit", "-n", metavar="N", help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List jobs, newest first; `jobs show ID` shows one.

    Example: docutrain jobs --state dead
    """
    if ctx.invoked_subcommand:
        return
    from docutrain_cli.jobs import STATES
    from docutrain_cli.render import jobs_table

    if state is not None and state not in STATES:
        raise UsageError(f"--state: expected one of {', '.join(STATES)}, got {state!r}")
    settings = _settings(ctx)
    missing = missing_queue(settings)
    found = []
    if not missing:
        with _queue(settings) as queue:
            if state and JobState(state) not in queue.listable_states:
                raise UsageError(not_listable(queue, f"--state {state}"))
            if not state and len(queue.listable_states) < len(JobState):
                print(f"docutrain: {not_listable(queue, 'note')}", file=sys.stderr)
            found = queue.jobs(JobState(state) if state else None, limit=limit)
    from docutrain_cli.batch.ledger import batch_status

    ledger = batch_status(settings.store, waits=True)
    waits = ledger["waits"] if ledger else {}
    if as_json:
        _emit_json([{**j.to_dict(), "waiting_on_batches": waits.get(j.document_key)} for j in found])
    elif not found:
        print("no jobs" + (f" in state {state}" if state else "") + (f" ({missing})" if missing else ""))
    else:
        _console().print(jobs_table(found, waits))


@_command(jobs_app, "show")
def jobs_show(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., metavar="JOB_ID", help="The job id printed by enqueue."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one job: file, attempts, errors, timestamps, result.

    Example: docutrain jobs show 12
    """
    from docutrain_cli.render import job_detail

    settings = _settings(ctx)
    missing = missing_queue(settings)
    if missing:
        raise UsageError(f"job {job_id}: no such job ({missing})")
    with _queue(settings) as queue:
        job = queue.job(job_id)
        partial = len(queue.listable_states) < len(JobState)
        why = not_listable(queue, f"job {job_id} not found") if partial else f"job {job_id}: no such job"
    if job is None:
        raise UsageError(why)
    if as_json:
        _emit_json(job.to_dict())
    else:
        _console().print(job_detail(job))


# -- retry --------------------------------------------------------------------
@_command(app)
def retry(
    ctx: typer.Context,
    job_ids: Optional[List[int]] = typer.Argument(None, metavar="JOB_ID", help="Ids of dead jobs."),
    all_dead: bool = typer.Option(False, "--all-dead", help="Retry every dead job."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Put dead jobs back in the queue with a fresh attempt count.

    Example: docutrain retry 12 15   or   docutrain retry --all-dead
    """
    if job_ids and all_dead:
        raise UsageError("give dead job ids or --all-dead, not both")
    if not job_ids and not all_dead:
        raise UsageError("give the ids of dead jobs, or --all-dead (see them with `docutrain jobs --state dead`)")
    settings = _settings(ctx)
    revived, not_dead = [], list(job_ids or [])
    missing = missing_queue(settings)
    if missing:  # nothing to retry, and nothing to create
        for job_id in not_dead:
            _error_line(f"job {job_id}: no such job ({missing})")
    else:
        with _queue(settings) as queue:
            revived = queue.revive(None if all_dead else job_ids)
            not_dead = [i for i in not_dead if i not in revived]
            for job_id in not_dead:
                _error_line(not_retried(queue, job_id, queue.job(job_id)))
    if as_json:
        _emit_json({"retried": revived, "refused": not_dead})
    else:
        print(f"{len(revived)} job(s) back in the queue" + (f": {', '.join(map(str, revived))}" if revived else ""))
    if not_dead:
        raise typer.Exit(ExitCode.PARTIAL)


@_command(queue_app, "init")
def queue_init(ctx: typer.Context) -> None:
    """Create the queue (pgmq: the queue and its dead-letter queue, installing or
    enabling pgmq if needed; Cloudflare: check the token reaches both queues,
    which wrangler creates). Safe to run again.

    Example: DOCUTRAIN_QUEUE=postgresql://... docutrain queue init
    """
    from docutrain_cli.render import cloudflare_ready_line

    settings = _settings(ctx)
    if settings.queue_is_cloudflare:
        # Cloudflare queues are made with wrangler (see README); check we can use them.
        with _queue(settings) as queue:
            print(cloudflare_ready_line(queue.stats(time.time()).details))
        return
    if not settings.queue_is_postgres:
        with _queue(settings):
            pass
        print(f"{settings.queue}: local queue file ready")
        return
    from docutrain_cli.queues.pgmq_setup import init_queue

    print(init_queue(settings.queue, settings.queue_name))


# -- Supabase -------------------------------------------------------------------
@_command(app)
def schema(ctx: typer.Context) -> None:
    """Print the SQL that creates the Supabase tables, indexes and search function.

    Example: docutrain schema > docutrain.sql   (then paste it into the Supabase SQL editor)
    """
    from docutrain_cli.supabase.schema import render_schema

    print(render_schema(_settings(ctx)))


@_command(app)
def sync(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Push status changes waiting in the outbox to Supabase now.

    Example: docutrain sync
    """
    from docutrain_cli.render import sync_lines
    from docutrain_cli.recorder import sync as sync_outbox

    result = sync_outbox(_settings(ctx))
    hooks = result.get("status_webhooks")
    if as_json:
        _emit_json(result)
    else:
        print("\n".join(sync_lines(result)))
    failed = [("status webhook", hooks)] if hooks and hooks.get("error") else []
    failed += [("Supabase", result)] if result.get("enabled") and result.get("error") else []
    for name, outcome in failed:
        _error_line(f"{name}: {outcome['error']}")
    if failed:
        raise typer.Exit(ExitCode.UNAVAILABLE)
    if (result.get("enabled") and result.get("backlog")) or (hooks and hooks["backlog"]):
        raise typer.Exit(ExitCode.PARTIAL)


@_command(app)
def doctor(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check the configuration and reach Supabase and OpenAI; say how to fix what is wrong.

    Example: docutrain doctor
    """
    from docutrain_cli.doctor import run_checks
    from docutrain_cli.render import doctor_lines

    checks = run_checks(_settings(ctx))
    if as_json:
        _emit_json([c.to_dict() for c in checks])
    else:
        print("\n".join(doctor_lines(checks)))
    if not all(c.ok for c in checks):
        raise typer.Exit(ExitCode.ERROR)


# -- search -------------------------------------------------------------------
@_command(app)
def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., metavar="QUESTION", help="A question or a few words."),
    top: int = typer.Option(5, "--top", "-k", metavar="N", help="How many chunks to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Find the chunks in the local store closest to a question.

    Example: docutrain search "what is the refund policy?" --top 3
    """
    from docutrain_cli.render import search_hits
    from docutrain_cli.store.search import search as search_store

    settings = _settings(ctx)
    if not Path(settings.store).exists():  # a usage error: point at the right store
        raise UsageError(
            f"no store at {settings.store}: run `docutrain run` first, or give one with --store PATH{demo_hint()}"
        )
    hits = search_store(settings, query, top=top)
    if as_json:
        _emit_json([hit.to_dict() for hit in hits])
    elif not hits:
        print("no matching chunks")
    else:
        _console().print(search_hits(hits))


def main() -> None:
    """The console script: one `docutrain: error: ...` line and an exit code
    for every error (see clistyle.run_app)."""
    sys.exit(run_app(app, _error_line, traceback_wanted=lambda: _show_traceback))

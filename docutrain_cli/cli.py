"""The `docutrain` command: parses flags, calls the library, renders output,
maps errors to exit codes. Everything it calls is usable from Python."""

from __future__ import annotations

import functools
import inspect
import json
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from docutrain_cli import __version__
from docutrain_cli.config import Settings, load_settings
from docutrain_cli.errors import DocutrainError, ExitCode, UsageError
from docutrain_cli.jobs import JobState

app = typer.Typer(
    name="docutrain",
    help="Turn uploaded documents into embedded, searchable chunks.\n\n"
    "Example: docutrain enqueue ./uploads --user-id U && docutrain run --workers 24 --drain",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
jobs_app = typer.Typer(no_args_is_help=False)
app.add_typer(jobs_app, name="jobs")
queue_app = typer.Typer(help="Set up the queue.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")

_show_traceback = False


def _version(value: bool) -> None:
    if value:
        print(f"docutrain {__version__}")
        raise typer.Exit()


_GLOBAL_HELP = {
    "--queue": "Queue file (default ./queue.db), postgresql:// URL or cloudflare://<account_id>/<queue_id>. "
    "Env: DOCUTRAIN_QUEUE.",
    "--store": "Local store file (default ./docutrain.db). Env: DOCUTRAIN_STORE.",
}


@app.callback()
def _global(
    ctx: typer.Context,
    queue: Optional[str] = typer.Option(None, "--queue", help=_GLOBAL_HELP["--queue"]),
    store: Optional[str] = typer.Option(None, "--store", help=_GLOBAL_HELP["--store"]),
    config: Optional[Path] = typer.Option(None, "--config", help="Settings file (default ./docutrain.toml)."),
    traceback: bool = typer.Option(False, "--traceback", help="Show the full traceback of an error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    global _show_traceback
    _show_traceback = traceback
    ctx.obj = {"queue": queue, "store": store, "config": config}


def _also_after_the_command(command):
    """Accept --queue and --store after the command name too, as people
    type them (`docutrain status --queue other.db`); they override the ones
    given before it."""
    signature = inspect.signature(command)
    extra = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation="Optional[str]",
            default=typer.Option(None, flag, help=_GLOBAL_HELP[flag], show_default=False),
        )
        for name, flag in (("queue_after", "--queue"), ("store_after", "--store"))
    ]

    @functools.wraps(command)
    def wrapper(*args, queue_after=None, store_after=None, **kwargs):
        ctx = kwargs.get("ctx") or next(a for a in args if isinstance(a, typer.Context))
        root = ctx.find_root()
        root.obj = dict(root.obj or {})
        if queue_after:
            root.obj["queue"] = queue_after
        if store_after:
            root.obj["store"] = store_after
        return command(*args, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    wrapper.__annotations__ = {**command.__annotations__, "queue_after": "Optional[str]", "store_after": "Optional[str]"}
    return wrapper


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


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _count(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _not_listable(queue, what: str) -> str:
    """Why a backend that lists only some states cannot show `what`."""
    states = ", ".join(sorted(s.value for s in queue.listable_states))
    return f"{what}: this {queue.kind} queue can only show {states} jobs (it cannot read back the others)"


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


# -- enqueue ----------------------------------------------------------------
@app.command()
@_also_after_the_command
def enqueue(
    ctx: typer.Context,
    paths: Optional[List[str]] = typer.Argument(None, help="Files, folders (searched recursively) or globs."),
    user_id: Optional[str] = typer.Option(None, "--user-id", help="Owner of the documents."),
    document_id: Optional[str] = typer.Option(None, "--document-id", help="Link one file to an existing document row."),
    force: bool = typer.Option(False, "--force", help="Queue files even if the same content is already queued."),
    from_supabase: bool = typer.Option(False, "--from-supabase", help="Queue every pending Supabase document."),
    limit: Optional[int] = typer.Option(None, "--limit", help="With --from-supabase: at most this many."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Put documents into the queue and return at once with their job ids.

    Example: docutrain enqueue ./uploads/*.pdf --user-id 4f1c...
    """
    from docutrain_cli.enqueue import EnqueueReport, enqueue_jobs, enqueue_paths

    settings = _settings(ctx)
    if not paths and not from_supabase:
        raise UsageError("give files, folders or globs to queue (or --from-supabase)")
    report = EnqueueReport()
    with _queue(settings) as queue:
        if from_supabase:
            from docutrain_cli.supabase.pull import pending_jobs

            report = enqueue_jobs(queue, pending_jobs(settings, limit=limit), force=force)
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
        for job in report.queued:
            print(f"queued job {job.id}: {job.source}")
        for job in report.duplicates:
            print(f"skipped {job.source}: already queued (same content); use --force to queue it again")
        print(f"{len(report.queued)} queued, {len(report.duplicates)} skipped, {len(report.refused)} refused")
    if report.refused:
        raise typer.Exit(ExitCode.PARTIAL)


# -- run ----------------------------------------------------------------------
@app.command()
@_also_after_the_command
def run(
    ctx: typer.Context,
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Worker processes (default: CPU count)."),
    drain: bool = typer.Option(False, "--drain", help="Exit when nothing is queued, running or waiting to retry."),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Stop taking jobs after this long, e.g. 4m."),
    job_timeout: Optional[str] = typer.Option(None, "--job-timeout", help="Kill and retry a job after this long (default 10m)."),
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
@app.command()
@_also_after_the_command
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; other than loopback needs serve_token."),
    port: int = typer.Option(8080, "--port", help="Port (0: any free port; the address is printed)."),
    allow_local_paths: bool = typer.Option(False, "--allow-local-paths", help="Let requests name files on this machine."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Accept documents over HTTP (POST /v1/documents, Supabase webhooks) into the queue.

    Example: DOCUTRAIN_SERVE_TOKEN=... docutrain serve --host 0.0.0.0 --port 8080
    """
    from docutrain_cli.serve import ServeOptions, serve as serve_http

    serve_http(_settings(ctx), host, port, ServeOptions(allow_local_paths=allow_local_paths), access_log)


# -- status -------------------------------------------------------------------
@app.command()
@_also_after_the_command
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show how many jobs are in each state and whether a runner is working.

    Example: docutrain status --json
    """
    from docutrain_cli.recorder import status_report

    settings = _settings(ctx)
    with _queue(settings) as queue:
        stats = queue.stats(time.time())
        queue_exclusive = queue.exclusive
    data = status_report(settings, stats)
    outbox = data["supabase_outbox"]
    if as_json:
        _emit_json(data)
        return
    c = stats.counts
    print(
        f"queued {_count(c['queued'])}  running {_count(c['running'])}  retrying {_count(c['retrying'])}  "
        f"done {_count(c['done'])}  dead {_count(c['dead'])}"
    )
    if not stats.known:
        pass  # the backend's own line below says what it can tell
    elif stats.oldest_queued_age is None:
        print("oldest queued job: none queued")
    else:
        print(f"oldest queued job: {_age(stats.oldest_queued_age)} old")
    if stats.next_retry_at:
        print(f"next retry: {_when(stats.next_retry_at)}")
    if queue_exclusive:
        print(f"runner: {stats.runner or 'none running'}")
    else:
        print("runners: not tracked (a shared queue; any number of machines may drain it)")
    d = stats.details
    if d.get("backend") == "pgmq":
        print(
            f"pgmq queue {d['queue']}: {d['queue_length']} messages, oldest "
            f"{_age(d['oldest_message_age_seconds'])}; dead-letter queue {d['dead_letter_queue']}: "
            f"{d['dead_letter_length']}"
        )
    if d.get("backend") == "cloudflare":
        print(
            f"cloudflare queue {d['queue']}: {_count(d['backlog'])} unfinished (queued, running and "
            f"waiting to retry together), oldest {_age(d['oldest_message_age_seconds'])}; "
            f"dead-letter queue {d['dead_letter_queue']}: {_count(d['dead_letter_backlog'])}"
        )
        print("Cloudflare Queues does not report queued, running, retrying or done jobs apart; "
              "done documents are in the store")
    if outbox:
        line = f"supabase outbox: {outbox['backlog']} waiting"
        if outbox.get("last_error"):
            line += f", last error at {_when(outbox.get('last_error_at'))}: {outbox['last_error']}"
        print(line)
    hooks = data["status_webhook_outbox"]
    if hooks:
        line = f"status webhook outbox: {hooks['backlog']} waiting"
        if hooks.get("last_error"):
            line += f", last error at {_when(hooks.get('last_error_at'))}: {hooks['last_error']}"
        print(line)
    batches = data["batches"]
    if batches:
        from docutrain_cli.progress import batch_status_lines

        print("\n".join(batch_status_lines(batches)))
    from docutrain_cli.progress import budget_line

    for budget in data["embedding_budget"]:
        print(f"embedding {budget['key'].split(' key#')[0]}: {budget_line(budget)}")
        if budget["problem"]:
            print(f"  stopped at {_when(budget['problem_at'])}: {budget['problem']}")
    if c["dead"]:
        print("see dead jobs with `docutrain jobs --state dead`; retry them with `docutrain retry --all-dead`")


# -- jobs -----------------------------------------------------------------------
@jobs_app.callback(invoke_without_command=True)
@_also_after_the_command
def jobs(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, "--state", "-s", help="queued, running, retrying, done or dead."),
    limit: int = typer.Option(50, "--limit", "-n", help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List jobs, newest first; `jobs show ID` shows one.

    Example: docutrain jobs --state dead
    """
    if ctx.invoked_subcommand:
        return
    from docutrain_cli.jobs import STATES, JobState

    if state is not None and state not in STATES:
        raise UsageError(f"--state: expected one of {', '.join(STATES)}, got {state!r}")
    settings = _settings(ctx)
    with _queue(settings) as queue:
        if state and JobState(state) not in queue.listable_states:
            raise UsageError(_not_listable(queue, f"--state {state}"))
        if not state and len(queue.listable_states) < len(JobState):
            print(f"docutrain: {_not_listable(queue, 'note')}", file=sys.stderr)
        found = queue.jobs(JobState(state) if state else None, limit=limit)
    from docutrain_cli.batch.ledger import batch_status

    ledger = batch_status(settings.store, waits=True)
    waits = ledger["waits"] if ledger else {}
    if as_json:
        _emit_json([{**j.to_dict(), "waiting_on_batches": waits.get(j.document_key)} for j in found])
        return
    if not found:
        print("no jobs" + (f" in state {state}" if state else ""))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    columns = ["id", "state", "attempts", "file", "last error"] + (["waits on batch"] if waits else [])
    for column in columns:
        table.add_column(column, overflow="fold")
    for job in found:
        error = (job.last_error or "").removeprefix(f"{job.source}: ")  # the file is in its own column
        row = [str(job.id), job.state.value, str(job.attempts), job.source, error]
        if waits:
            wait = waits.get(job.document_key)
            row.append("" if wait is None else ", ".join(wait) or "not sent yet")
        table.add_row(*row)
    _console().print(table)


@jobs_app.command("show")
@_also_after_the_command
def jobs_show(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., help="The job id printed by enqueue."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one job: file, attempts, errors, timestamps.

    Example: docutrain jobs show 12
    """
    settings = _settings(ctx)
    with _queue(settings) as queue:
        job = queue.job(job_id)
        partial = len(queue.listable_states) < len(JobState)
        why = _not_listable(queue, f"job {job_id} not found") if partial else f"job {job_id}: no such job"
    if job is None:
        raise UsageError(why)
    if as_json:
        _emit_json(job.to_dict())
        return
    rows = [
        ("job", job.id),
        ("state", job.state.value),
        ("file", job.source),
        ("sha256", job.sha256),
        ("user id", job.user_id),
        ("document id", job.document_id),
        ("attempts", job.attempts),
        ("enqueued", _when(job.enqueued_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("next attempt", _when(job.not_before) if job.state.value == "retrying" else None),
        ("result", json.dumps(job.result.to_dict()) if job.result else None),
    ]
    for label, value in rows:
        if value not in (None, "-"):
            print(f"{label + ':':<13}{value}")
    for i, error in enumerate(job.errors, 1):
        print(f"{'error ' + str(i) + ':':<13}{error}")


# -- retry --------------------------------------------------------------------
@app.command()
@_also_after_the_command
def retry(
    ctx: typer.Context,
    job_ids: Optional[List[int]] = typer.Argument(None, help="Ids of dead jobs."),
    all_dead: bool = typer.Option(False, "--all-dead", help="Retry every dead job."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Put dead jobs back in the queue with a fresh attempt count.

    Example: docutrain retry 12 15   or   docutrain retry --all-dead
    """
    if bool(job_ids) == all_dead:
        raise UsageError("give dead job ids or --all-dead (not both)")
    settings = _settings(ctx)
    with _queue(settings) as queue:
        revived = queue.revive(None if all_dead else job_ids)
        not_dead = [] if all_dead else [i for i in job_ids if i not in revived]
        for job_id in not_dead:
            job = queue.job(job_id)
            missing = "not in the dead-letter queue" if len(queue.listable_states) < len(JobState) else "no such job"
            if job is None:
                _error_line(f"job {job_id}: {missing}")
            elif job.state == JobState.DEAD:  # e.g. an unreadable Cloudflare message
                _error_line(f"job {job_id}: cannot be retried: {job.last_error}")
            else:
                _error_line(f"job {job_id}: is {job.state.value}, not dead")
    if as_json:
        _emit_json({"retried": revived, "refused": not_dead})
    else:
        print(f"{len(revived)} job(s) back in the queue" + (f": {', '.join(map(str, revived))}" if revived else ""))
    if not_dead:
        raise typer.Exit(ExitCode.PARTIAL)


@queue_app.command("init")
@_also_after_the_command
def queue_init(ctx: typer.Context) -> None:
    """Create the queue (pgmq: the queue and its dead-letter queue, installing or
    enabling pgmq if needed; Cloudflare: check the token reaches both queues,
    which wrangler creates). Safe to run again.

    Example: DOCUTRAIN_QUEUE=postgresql://... docutrain queue init
    """
    settings = _settings(ctx)
    if settings.queue_is_cloudflare:
        # Cloudflare queues are made with wrangler (see README); check we can use them.
        with _queue(settings) as queue:
            d = queue.stats(time.time()).details
        print(
            f"cloudflare queue {d['queue']} reachable: backlog {_count(d['backlog'])}; "
            f"dead-letter queue {d['dead_letter_queue']}: backlog {_count(d['dead_letter_backlog'])}"
        )
        return
    if not settings.queue_is_postgres:
        with _queue(settings):
            pass
        print(f"{settings.queue}: local queue file ready")
        return
    from docutrain_cli.queues.pgmq_setup import init_queue

    print(init_queue(settings.queue, settings.queue_name))


# -- Supabase -------------------------------------------------------------------
@app.command()
@_also_after_the_command
def schema(ctx: typer.Context) -> None:
    """Print the SQL that creates the Supabase tables, indexes and search function.

    Example: docutrain schema > docutrain.sql   (then paste it into the Supabase SQL editor)
    """
    from docutrain_cli.supabase.schema import render_schema

    print(render_schema(_settings(ctx)))


@app.command()
@_also_after_the_command
def sync(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Push status changes waiting in the outbox to Supabase now.

    Example: docutrain sync
    """
    from docutrain_cli.recorder import sync as sync_outbox

    result = sync_outbox(_settings(ctx))
    if as_json:
        _emit_json(result)
    elif not result.get("enabled"):
        print("Supabase is not configured (set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY)")
    else:
        print(
            f"delivered {result['delivered']}, dropped {result['dropped']} (row gone), "
            f"refused {result['refused']}; {result['backlog']} still waiting"
        )
    hooks = result.get("status_webhooks")
    if hooks and not as_json:
        print(f"status webhooks: delivered {hooks['delivered']}, dropped {hooks['dropped']}, "
              f"refused {hooks['refused']}; {hooks['backlog']} still waiting")
    failed = [("status webhook", hooks)] if hooks and hooks.get("error") else []
    failed += [("Supabase", result)] if result.get("enabled") and result.get("error") else []
    for name, outcome in failed:
        _error_line(f"{name}: {outcome['error']}")
    if failed:
        raise typer.Exit(ExitCode.UNAVAILABLE)
    if (result.get("enabled") and result.get("backlog")) or (hooks and hooks["backlog"]):
        raise typer.Exit(ExitCode.PARTIAL)


@app.command()
@_also_after_the_command
def doctor(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check the configuration and reach Supabase and OpenAI; say how to fix what is wrong.

    Example: docutrain doctor
    """
    from docutrain_cli.doctor import run_checks

    checks = run_checks(_settings(ctx))
    if as_json:
        _emit_json([c.to_dict() for c in checks])
    else:
        for check in checks:
            print(f"{'ok ' if check.ok else 'BAD'} {check.name}: {check.detail}")
            if check.fix and not check.ok:
                print(f"    fix: {check.fix}")
    if not all(c.ok for c in checks):
        raise typer.Exit(ExitCode.ERROR)


# -- search -------------------------------------------------------------------
@app.command()
@_also_after_the_command
def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="A question or a few words."),
    top: int = typer.Option(5, "--top", "-k", help="How many chunks to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Find the chunks in the local store closest to a question.

    Example: docutrain search "what is the refund policy?" --top 3
    """
    from docutrain_cli.store.search import search as search_store

    hits = search_store(_settings(ctx), query, top=top)
    if as_json:
        _emit_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        print("no matching chunks")
    for rank, hit in enumerate(hits, 1):
        pages = f"p. {hit.page_start}" + (f"-{hit.page_end}" if hit.page_end != hit.page_start else "")
        print(f"{rank}. {hit.score:.3f}  {hit.source or hit.document_key}  {pages}  chunk {hit.chunk_index}")
        snippet = " ".join(hit.content.split())
        print(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}")


def main() -> None:
    try:
        # Without standalone mode, Click returns the code of typer.Exit.
        code = app(standalone_mode=False, prog_name="docutrain")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(ExitCode.INTERRUPTED)
    except typer.TyperException as exc:  # bad flags or arguments
        exc.show()
        sys.exit(getattr(exc, "exit_code", ExitCode.USAGE))
    except DocutrainError as exc:
        if _show_traceback:
            raise
        _error_line(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if _show_traceback:
            raise
        _error_line(f"unexpected {type(exc).__name__}: {exc} (run with --traceback for details)")
        sys.exit(ExitCode.ERROR)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)

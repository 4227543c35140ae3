"""The queue's jobs: `status`, `jobs`, `jobs show` and `retry`."""

from __future__ import annotations

import functools
import sys
import time
from typing import List, Optional

import typer

from docutrain_cli.cli.app import (
    AFTER_THE_COMMAND, JsonOption, app, command, emit, error_line, jobs_app, open_queue_for, settings_from,
)
from docutrain_cli.cli.messages import missing_queue, not_listable, not_retried
from docutrain_cli.cli.style import also_after_the_command
from docutrain_cli.errors import ExitCode, UsageError
from docutrain_cli.jobs import JobState


# -- status -------------------------------------------------------------------
@command(app)
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show how many jobs are in each state and whether a runner is working.

    Example: docutrain status --json
    """
    from docutrain_cli.queues import QueueStats
    from docutrain_cli.queues.line import users_in_line
    from docutrain_cli.status.reports import status_report
    from docutrain_cli.cli.words import status_lines

    settings = settings_from(ctx)
    missing = missing_queue(settings)
    line = None
    if missing:
        stats, exclusive = QueueStats.empty(), True
    else:
        with open_queue_for(settings) as queue:
            now = time.time()
            stats, exclusive, line = queue.stats(now), queue.exclusive, users_in_line(queue, now)
    data = status_report(settings, stats, line)  # the same object as serve's GET /v1/status
    emit(data, as_json, lambda: status_lines(data, exclusive=exclusive, known=stats.known, queue_missing=missing))


# -- jobs -----------------------------------------------------------------------
@jobs_app.callback(invoke_without_command=True)
@functools.partial(also_after_the_command, options=AFTER_THE_COMMAND)
def jobs(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, "--state", "-s", metavar="STATE", help="queued, running, retrying, done or dead."),
    limit: int = typer.Option(50, "--limit", "-n", metavar="N", help="At most this many, newest first."),
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first; `jobs show ID` shows one.

    Example: docutrain jobs --state dead
    """
    if ctx.invoked_subcommand:
        return
    from docutrain_cli.jobs import STATES
    from docutrain_cli.cli.render import jobs_table

    if limit < 1:
        raise UsageError(f"--limit: must be at least 1, got {limit}")
    if state is not None and state not in STATES:
        raise UsageError(f"--state: expected one of {', '.join(STATES)}, got {state!r}")
    settings = settings_from(ctx)
    missing = missing_queue(settings)
    found = []
    if not missing:
        with open_queue_for(settings) as queue:
            if state and JobState(state) not in queue.listable_states:
                raise UsageError(not_listable(queue, f"--state {state}"))
            if not state and len(queue.listable_states) < len(JobState):
                print(f"docutrain: {not_listable(queue, 'note')}", file=sys.stderr)
            found = queue.jobs(JobState(state) if state else None, limit=limit)
    from docutrain_cli.batch.ledger import batch_status

    ledger = batch_status(settings.store, waits=True)
    waits = ledger["waits"] if ledger else {}
    none = "no jobs" + (f" in state {state}" if state else "") + (f" ({missing})" if missing else "")
    emit(
        [{**j.to_dict(), "waiting_on_batches": waits.get(j.document_key)} for j in found], as_json,
        lambda: jobs_table(found, waits) if found else none,
    )


@command(jobs_app, "show")
def jobs_show(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., metavar="JOB_ID", help="The job id printed by enqueue."),
    as_json: JsonOption = False,
) -> None:
    """Show one job: file, attempts, errors, timestamps, result, and while
    it waits, its place in line and when it should be done.

    Example: docutrain jobs show 12
    """
    from docutrain_cli.cli.render import job_detail
    from docutrain_cli.queues.line import place_in_line

    settings = settings_from(ctx)
    missing = missing_queue(settings)
    if missing:
        raise UsageError(f"job {job_id}: no such job ({missing})")
    with open_queue_for(settings) as queue:
        job = queue.job(job_id)
        partial = len(queue.listable_states) < len(JobState)
        why = not_listable(queue, f"job {job_id} not found") if partial else f"job {job_id}: no such job"
        place = place_in_line(queue, job, settings, time.time()) if job else None
    if job is None:
        raise UsageError(why)
    emit({**job.to_dict(), **place}, as_json, lambda: job_detail(job, place))


# -- retry --------------------------------------------------------------------
@command(app)
def retry(
    ctx: typer.Context,
    job_ids: Optional[List[int]] = typer.Argument(None, metavar="JOB_ID", help="Ids of dead jobs."),
    all_dead: bool = typer.Option(False, "--all-dead", help="Retry every dead job."),
    as_json: JsonOption = False,
) -> None:
    """Put dead jobs back in the queue with a fresh attempt count.

    Example: docutrain retry 12 15   or   docutrain retry --all-dead
    """
    if job_ids and all_dead:
        raise UsageError("give dead job ids or --all-dead, not both")
    if not job_ids and not all_dead:
        raise UsageError("give the ids of dead jobs, or --all-dead (see them with `docutrain jobs --state dead`)")
    settings = settings_from(ctx)
    revived, not_dead = [], list(job_ids or [])
    unknown = False  # an id no job has: a usage error (exit 2), as for `jobs show`
    missing = missing_queue(settings)
    if missing:  # nothing to retry, and nothing to create
        unknown = bool(not_dead)
        for job_id in not_dead:
            error_line(f"job {job_id}: no such job ({missing})")
    else:
        with open_queue_for(settings) as queue:
            revived = queue.revive(None if all_dead else job_ids)
            not_dead = [i for i in not_dead if i not in revived]
            for job_id in not_dead:
                job = queue.job(job_id)
                # None on Cloudflare may be a job that is not dead: refused (3), not unknown
                unknown = unknown or (job is None and len(queue.listable_states) == len(JobState))
                error_line(not_retried(queue, job_id, job))
    emit(
        {"retried": revived, "refused": not_dead}, as_json,
        lambda: f"{len(revived)} job(s) back in the queue" + (f": {', '.join(map(str, revived))}" if revived else ""),
    )
    if not_dead:
        raise typer.Exit(ExitCode.USAGE if unknown else ExitCode.PARTIAL)

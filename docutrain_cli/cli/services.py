"""The services: setting them up and checking them (`queue init`, `schema`,
`doctor`) and pushing the status outboxes now (`sync`)."""

from __future__ import annotations

import time

import typer

from docutrain_cli.cli.app import JsonOption, app, command, emit, error_line, open_queue_for, queue_app, settings_from
from docutrain_cli.errors import ExitCode


@command(queue_app, "init")
def queue_init(ctx: typer.Context) -> None:
    """Create the queue (pgmq: the queue and its dead-letter queue, installing or
    enabling pgmq if needed; Cloudflare: check the token reaches both queues,
    which wrangler creates). Safe to run again.

    Example: DOCUTRAIN_QUEUE=postgresql://... docutrain queue init
    """
    from docutrain_cli.cli.words import cloudflare_ready_line

    settings = settings_from(ctx)
    if settings.queue_is_cloudflare:
        # Cloudflare queues are made with wrangler (see README); check we can use them.
        with open_queue_for(settings) as queue:
            print(cloudflare_ready_line(queue.stats(time.time()).details))
        return
    if not settings.queue_is_postgres:
        with open_queue_for(settings):
            pass
        print(f"{settings.queue}: local queue file ready")
        return
    from docutrain_cli.queues.pgmq_setup import init_queue

    print(init_queue(settings.queue, settings.queue_name))


# -- Supabase -------------------------------------------------------------------
@command(app)
def schema(ctx: typer.Context) -> None:
    """Print the SQL that creates the Supabase tables, indexes and search function.

    Example: docutrain schema > docutrain.sql   (then paste it into the Supabase SQL editor)
    """
    from docutrain_cli.supabase.schema import render_schema

    print(render_schema(settings_from(ctx)))


@command(app)
def sync(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Push status changes waiting in the outbox to Supabase now.

    Example: docutrain sync
    """
    from docutrain_cli.cli.words import sync_lines
    from docutrain_cli.status.reports import sync as sync_outbox

    result = sync_outbox(settings_from(ctx))
    hooks = result.get("status_webhooks")
    emit(result, as_json, lambda: sync_lines(result))
    failed = [("status webhook", hooks)] if hooks and hooks.get("error") else []
    failed += [("Supabase", result)] if result.get("enabled") and result.get("error") else []
    for name, outcome in failed:
        error_line(f"{name}: {outcome['error']}")
    if failed:
        raise typer.Exit(ExitCode.UNAVAILABLE)
    if (result.get("enabled") and result.get("backlog")) or (hooks and hooks["backlog"]):
        raise typer.Exit(ExitCode.PARTIAL)


@command(app)
def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the configuration and reach Supabase and OpenAI; say how to fix what is wrong.

    Example: docutrain doctor
    """
    from docutrain_cli.cli.doctor import run_checks
    from docutrain_cli.cli.words import doctor_lines

    checks = run_checks(settings_from(ctx))
    emit([c.to_dict() for c in checks], as_json, lambda: doctor_lines(checks))
    if not all(c.ok for c in checks):
        raise typer.Exit(ExitCode.ERROR)

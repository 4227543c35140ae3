"""The `docutrain` Typer app: its global options, the helpers every command
shares (settings from the flags, the queue, JSON and error lines) and `main`.
The commands register themselves on `app` from cli/work.py, cli/jobs.py,
cli/services.py and cli/search.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from docutrain_cli import __version__
from docutrain_cli.cli.style import HelpCommand, HelpGroup, also_after_the_command, run_app
from docutrain_cli.config import Settings, load_settings

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


def command(group: typer.Typer, name: str | None = None):
    """Register a command: Click-style help, and --queue/--store accepted
    after the command name too (`docutrain status --queue other.db`)."""

    def register(function):
        return group.command(name, cls=HelpCommand)(also_after_the_command(function, AFTER_THE_COMMAND))

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
AFTER_THE_COMMAND = {
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


def settings_from(ctx: typer.Context, **flags) -> Settings:
    root = ctx.find_root().obj or {}
    return load_settings(
        {"queue": root.get("queue"), "store": root.get("store"), **flags}, config_file=root.get("config")
    )


def open_queue_for(settings: Settings):
    from docutrain_cli.queues import open_queue

    return open_queue(settings)


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def emit_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def error_line(message: str) -> None:
    print(f"docutrain: error: {message}", file=sys.stderr)


def main() -> None:
    """The console script: one `docutrain: error: ...` line and an exit code
    for every error (see style.run_app)."""
    sys.exit(run_app(app, error_line, traceback_wanted=lambda: _show_traceback))

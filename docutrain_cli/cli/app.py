"""The `docutrain` Typer app: its global options, the helpers every command
shares (settings from the flags, the queue, the `--json` flag and the one
output path `emit`, error lines) and `main`.
The commands register themselves on `app` from cli/work.py, cli/jobs.py,
cli/services.py and cli/search.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from docutrain_cli import __version__
from docutrain_cli.cli.style import HelpCommand, HelpGroup, also_after_the_command, run_app, see_help
from docutrain_cli.config import Settings, flag_name, load_settings
from docutrain_cli.errors import ConfigError

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
    given = {"queue": root.get("queue"), "store": root.get("store"), **flags}
    try:
        return load_settings(given, config_file=root.get("config"))
    except ConfigError as exc:
        raise ConfigError(flag_problem(ctx, str(exc), [name for name, value in given.items() if value is not None]))


def flag_problem(ctx: typer.Context, message: str, flags: list[str]) -> str:
    """A settings error about a value given as a flag, worded as the other
    flags' errors are: `--workers: must be 1 to 256, got 0 (see `docutrain
    run --help`)`. Other errors (a file, the environment) are kept as they are."""
    name, colon, problem = message.partition(": ")
    if colon and name in flags:
        name = flag_name(name)
    if colon and name in {flag_name(flag) for flag in flags}:
        return f"{name}: {problem}{see_help(ctx)}"
    return message


def open_queue_for(settings: Settings):
    from docutrain_cli.queues import open_queue

    return open_queue(settings)


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def json_option(help: str = "Print JSON.") -> Any:
    """The `--json` flag, as a type for a command's parameter
    (`as_json: JsonOption = False`): one declaration for every command."""
    return Annotated[bool, typer.Option("--json", help=help)]


JsonOption = json_option()


def emit(result: Any, as_json: bool, human: Callable[[], Any]) -> None:
    """The one output path of the commands. With --json, `result` as indented
    JSON; else what `human()` renders: a line or a list of lines printed as
    they are, a rich renderable (a table) through rich, None nothing."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    shown = human()
    if shown is None:
        return
    if isinstance(shown, str):
        print(shown)
    elif isinstance(shown, list):
        print("\n".join(shown))
    else:
        console().print(shown)


def error_line(message: str) -> None:
    print(f"docutrain: error: {message}", file=sys.stderr)


def main() -> None:
    """The console script: one `docutrain: error: ...` line and an exit code
    for every error (see style.run_app)."""
    sys.exit(run_app(app, error_line, traceback_wanted=lambda: _show_traceback))

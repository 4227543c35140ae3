"""The `docutrain` console script's entry point: it imports nothing until called.

multiprocessing starts each worker process by importing the script that
started the runner again (for the console script, its line `from
docutrain_cli.console import main`). When that line imported the whole CLI,
every worker paid for typer and the command modules (25-55 ms here) before
its first job, and again for each replacement of a crashed one.

`docutrain run` starts its workers' forkserver first, before the CLI is
loaded: the forkserver's imports (PyMuPDF, numpy) then overlap this
process's (typer, the commands, the queue) instead of following them
(run/forkserver.py).
"""

from __future__ import annotations

import sys

# Root options that take a value: what comes after them is not the command.
_ROOT_OPTIONS_WITH_VALUES = ("--queue", "--store", "--config")


def main() -> None:
    start_workers_early(sys.argv[1:])
    from docutrain_cli.cli import main as cli_main

    cli_main()


def start_workers_early(args: list[str]) -> None:
    """For `docutrain run`, start the workers' forkserver now. Only speed
    is at stake: whatever goes wrong here (a bad setting, an odd command
    line) is left for the CLI to find and report, which it does anyway."""
    command, config, rest = _command_line(args)
    if command != "run" or "--help" in rest or "-h" in rest:
        return
    try:
        from docutrain_cli.config import load_settings
        from docutrain_cli.run.forkserver import start_forkserver

        # A drain (cron) needs no client libraries preloaded; a service does (run/pool.py).
        start_forkserver(load_settings(config_file=config), preload_clients="--drain" not in rest)
    except Exception:  # noqa: BLE001 - the CLI reports it, one line, as for any command
        return


def _command_line(args: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(the command, the --config given before it, the arguments after it)."""
    config = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _ROOT_OPTIONS_WITH_VALUES:
            if arg == "--config" and i + 1 < len(args):
                config = args[i + 1]
            i += 2
        elif arg.startswith("--config="):
            config, i = arg.partition("=")[2], i + 1
        elif arg.startswith("-"):
            i += 1
        else:
            return arg, config, args[i + 1 :]
    return None, config, []

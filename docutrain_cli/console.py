"""The `docutrain` console script's entry point: it imports nothing until called.

multiprocessing starts each worker process by importing the script that
started the runner again (for the console script, its line `from
docutrain_cli.console import main`). When that line imported the whole CLI,
every worker paid for typer and the command modules (25-55 ms here) before
its first job, and again for each replacement of a crashed one.
"""


def main() -> None:
    from docutrain_cli.cli import main as cli_main

    cli_main()

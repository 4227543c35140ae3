"""The `docutrain` command: parses flags, calls the library, maps errors to
exit codes. Everything it calls is usable from Python; how output looks is in
`render` (tables, times) and `style` (help screens, usage errors).

`app` (the Typer app, global options, shared helpers, `main`) is cli/app.py;
the commands are grouped by job in work (enqueue, estimate, run, serve), jobs (status,
jobs, jobs show, retry), services (queue init, schema, sync, doctor) and search.
Importing them registers them, in the order `docutrain --help` lists them.
"""

from docutrain_cli.cli.app import app, main
from docutrain_cli.cli import work, jobs, services, search  # noqa: F401  (registers the commands)

__all__ = ["app", "main"]

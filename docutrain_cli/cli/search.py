"""`docutrain search`: the chunks in the local store closest to a question."""

from __future__ import annotations

from pathlib import Path

import typer

from docutrain_cli.cli.app import app, command, console, emit_json, settings_from
from docutrain_cli.cli.messages import demo_hint
from docutrain_cli.errors import UsageError


# -- search -------------------------------------------------------------------
@command(app)
def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., metavar="QUESTION", help="A question or a few words."),
    top: int = typer.Option(5, "--top", "-k", metavar="N", help="How many chunks to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Find the chunks in the local store closest to a question.

    Example: docutrain search "what is the refund policy?" --top 3
    """
    from docutrain_cli.cli.render import search_hits
    from docutrain_cli.store.search import search as search_store

    settings = settings_from(ctx)
    if not Path(settings.store).exists():  # a usage error: point at the right store
        raise UsageError(
            f"no store at {settings.store}: run `docutrain run` first, or give one with --store PATH{demo_hint()}"
        )
    hits = search_store(settings, query, top=top)
    if as_json:
        emit_json([hit.to_dict() for hit in hits])
    elif not hits:
        print("no matching chunks")
    else:
        console().print(search_hits(hits))

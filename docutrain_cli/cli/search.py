"""`docutrain search`: the chunks in the local store closest to a question."""

from __future__ import annotations

from pathlib import Path

import typer

from docutrain_cli.cli.app import JsonOption, app, command, emit, settings_from
from docutrain_cli.cli.messages import demo_hint
from docutrain_cli.cli.style import see_help
from docutrain_cli.errors import UsageError


# -- search -------------------------------------------------------------------
@command(app)
def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., metavar="QUESTION", help="A question or a few words."),
    top: int = typer.Option(5, "--top", "-k", metavar="N", help="How many chunks to show."),
    as_json: JsonOption = False,
) -> None:
    """Find the chunks in the local store closest to a question.

    Example: docutrain search "what is the refund policy?" --top 3
    """
    from docutrain_cli.cli.render import search_hits
    from docutrain_cli.store.search import search as search_store

    if not query.strip():
        raise UsageError(f"QUESTION: expected a question or a few words, e.g. `docutrain search \"refund policy\"`{see_help(ctx)}")
    if top < 1:
        raise UsageError(f"--top: must be at least 1, got {top}{see_help(ctx)}")
    settings = settings_from(ctx)
    if not Path(settings.store).exists():  # a usage error: point at the right store
        raise UsageError(
            f"no store at {settings.store}: run `docutrain run` first, or give one with --store PATH{demo_hint()}"
        )
    hits = search_store(settings, query, top=top)
    emit([hit.to_dict() for hit in hits], as_json, lambda: search_hits(hits) if hits else "no matching chunks")

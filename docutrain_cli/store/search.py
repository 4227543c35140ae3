"""Search the local store: embed the question the way the chunks were
embedded, then rank chunks by cosine similarity."""

from __future__ import annotations

from pathlib import Path

from docutrain_cli.errors import DocutrainError, ExitCode
from docutrain_cli.pipeline.embed import make_embedder
from docutrain_cli.pipeline.models import DEFAULT_DIMENSIONS, OFFLINE_MODEL
from docutrain_cli.store.local import Hit, LocalStore

__all__ = ["Hit", "SearchError", "search"]


class SearchError(DocutrainError):
    """The store cannot answer: missing, empty, or embedded another way; or
    the question has nothing to search for. The caller's to fix: a usage error."""

    exit_code = ExitCode.USAGE


def search(settings, query: str, top: int = 5) -> list[Hit]:
    if not query.strip():
        raise SearchError("the query is empty")
    if top < 1:
        raise SearchError(f"--top must be at least 1, got {top}")
    path = Path(settings.store)
    if not path.exists():
        raise SearchError(f"no store at {path}: run `docutrain run` first")
    with LocalStore(path) as store:
        model, dimensions = _stored_model(store, settings)
        settings = _settings_for(settings, model, dimensions)
        embedder = make_embedder(settings)
        [vector] = embedder.embed([query])
        if len(vector) != dimensions:
            raise SearchError(
                f"the query embedding has {len(vector)} dimensions but the store's "
                f"{model} vectors have {dimensions}"
            )
        if not any(vector):
            raise SearchError("the query has no searchable words")
        return store.search(vector, top, embedding_model=model)


def _stored_model(store: LocalStore, settings) -> tuple[str, int]:
    """Which vectors to search: the only kind in the store, or the one the
    settings name when there are several."""
    kinds = store.embedding_models()
    if not kinds:
        raise SearchError(f"the store {store.path} has no chunks yet: run `docutrain run` first")
    if len(kinds) == 1:
        return kinds[0][0], kinds[0][1]
    wanted = OFFLINE_MODEL if settings.embedder_kind == "offline" else settings.embedding_model
    matching = [k for k in kinds if k[0] == wanted]
    if settings.embedding_dimensions:
        matching = [k for k in matching if k[1] == settings.embedding_dimensions]
    if len(matching) == 1:
        return matching[0][0], matching[0][1]
    listed = ", ".join(f"{m} ({d} dimensions, {n} chunks)" for m, d, n in kinds)
    raise SearchError(
        f"the store holds vectors from several models: {listed}; choose one with "
        "--embedder / embedding_model / embedding_dimensions"
    )


def _settings_for(settings, model: str, dimensions: int):
    """Settings whose embedder makes vectors comparable with the stored ones."""
    if model == OFFLINE_MODEL:
        return settings.replace(embedder="offline")
    if not settings.openai_api_key:
        raise SearchError(
            f"the store was embedded with {model}; set OPENAI_API_KEY (and OPENAI_BASE_URL "
            "if it was another server) to search it"
        )
    default = DEFAULT_DIMENSIONS.get(model)
    if default == dimensions:
        requested = None  # the model's own size: no `dimensions` parameter
    elif default is not None:
        requested = dimensions
    else:  # a model we do not know: trust the settings if they name it
        requested = settings.embedding_dimensions if settings.embedding_model == model else None
    return settings.replace(embedder="openai", embedding_model=model, embedding_dimensions=requested)

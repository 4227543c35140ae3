"""The one table of embedding models: list prices, default vector sizes and
the offline model's name and size. Used by the embedder, the processor
(cost), search, `docutrain schema` and `docutrain doctor`.

Import-free on purpose: `docutrain schema` reads it without loading openai.
"""

from __future__ import annotations

from docutrain_cli.errors import ConfigError

OFFLINE_MODEL = "offline-hash-v1"
OFFLINE_DIMENSIONS = 384
# The most tokens one embedding input may hold (OpenAI; the offline embedder keeps it too).
MAX_INPUT_TOKENS = 8191

# model -> (US$ per million input tokens at list price, default dimensions)
MODELS = {
    "text-embedding-3-small": (0.02, 1536),
    "text-embedding-3-large": (0.13, 3072),
    "text-embedding-ada-002": (0.10, 1536),
}
DEFAULT_DIMENSIONS = {model: dims for model, (_, dims) in MODELS.items()}
# OpenAI's Batch API embeds the same inputs at half the list price.
BATCH_PRICE_FACTOR = 0.5


def price_per_million_tokens(model: str) -> float | None:
    """List price in US$ per million tokens; 0 offline; None if unknown."""
    if model == OFFLINE_MODEL:
        return 0.0
    known = MODELS.get(model)
    return None if known is None else known[0]


def cost_usd(model: str, tokens: int, *, batch: bool = False) -> float | None:
    """What `tokens` embedded with `model` cost at list price (or, with
    `batch`, at the Batch API's price); None if unknown."""
    price = price_per_million_tokens(model)
    if price is None:
        return None
    return tokens * price * (BATCH_PRICE_FACTOR if batch else 1.0) / 1_000_000


def embedding_model(settings) -> str:
    """The model name these settings embed with."""
    return OFFLINE_MODEL if settings.embedder_kind == "offline" else settings.embedding_model


def vector_dimensions(settings) -> int:
    """The size of the vectors these settings make."""
    if settings.embedder_kind == "offline":
        return OFFLINE_DIMENSIONS
    if settings.embedding_dimensions:
        return settings.embedding_dimensions
    try:
        return DEFAULT_DIMENSIONS[settings.embedding_model]
    except KeyError:
        raise ConfigError(
            f"embedding_dimensions: unknown size for model {settings.embedding_model!r}; "
            "set embedding_dimensions (DOCUTRAIN_EMBEDDING_DIMENSIONS)"
        ) from None


def cache_dimensions(settings) -> int:
    """The dimensions the embedder asks for, as the embedding cache keys
    them: 0 when the model's default size is used."""
    if settings.embedder_kind == "offline":
        return OFFLINE_DIMENSIONS
    return settings.embedding_dimensions or 0

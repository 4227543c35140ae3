"""`docutrain schema`: the SQL a user applies to their Supabase project.

The template ships as package data (schema.sql, next to this module); table names and the
vector size come from Settings, so the SQL always matches what this
configuration writes.
"""

from __future__ import annotations

import re
from importlib import resources

from docutrain_cli.config import Settings
from docutrain_cli.errors import ConfigError
from docutrain_cli.pipeline.models import embedding_model, vector_dimensions

# pgvector's HNSW index takes `vector` up to 2000 dimensions; larger vectors
# are indexed (and compared) as halfvec, which goes to 4000.
HNSW_VECTOR_MAX = 2000
HALFVEC_MAX = 4000
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _identifier(name: str, setting: str) -> str:
    # Table names are pasted into SQL, so only plain lower-case identifiers.
    if not _IDENTIFIER.match(name):
        raise ConfigError(
            f"{setting}: {name!r} is not a plain table name (lower-case letters, digits, _)"
        )
    return name


def render_schema(settings: Settings) -> str:
    dims = vector_dimensions(settings)
    if dims > HALFVEC_MAX:
        raise ConfigError(f"embedding_dimensions: {dims} is over pgvector's index limit ({HALFVEC_MAX})")
    if dims > HNSW_VECTOR_MAX:
        distance = f"c.embedding::halfvec({dims}) <=> query_embedding::halfvec({dims})"
        index_expression = f"(embedding::halfvec({dims})) halfvec_cosine_ops"
    else:
        distance = "c.embedding <=> query_embedding"
        index_expression = "embedding vector_cosine_ops"
    values = {
        "documents": _identifier(settings.documents_table, "documents_table"),
        "chunks": _identifier(settings.chunks_table, "chunks_table"),
        "dimensions": str(dims),
        "model": embedding_model(settings),
        "distance": distance,
        "index_expression": index_expression,
    }
    text = resources.files("docutrain_cli.supabase").joinpath("schema.sql").read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = re.search(r"\{\{\w+\}\}", text)
    assert leftover is None, f"schema.sql: unfilled placeholder {leftover.group(0)}"
    return text

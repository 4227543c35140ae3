"""Token counting that works offline.

tiktoken is exact for OpenAI models but downloads its encoding file on first
use; this machine may have no internet. So tiktoken is used only when it is
installed *and* the encoding file is already in its local cache; otherwise an
estimator counts.

The estimator is realistic for English (about chars/4) but it is not a proof,
so counters carry `exact`: when it is False the chunker also caps every chunk
at `max_input_tokens` UTF-8 bytes. Byte-level BPE never makes more tokens than
bytes, so such a chunk provably fits the model's input limit.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import tempfile
from typing import Protocol

# OpenAI's embedding models all use cl100k_base.
OPENAI_ENCODINGS = {
    "text-embedding-3-small": "cl100k_base",
    "text-embedding-3-large": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base",
}
_ENCODING_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


class TokenCounter(Protocol):
    name: str
    exact: bool

    def count(self, text: str) -> int: ...


# Pieces the estimator prices separately: letter runs, digit runs, other
# non-space runs (punctuation, symbols, other scripts), whitespace runs.
_PIECE = re.compile(r"[A-Za-z]+|[0-9]+|[^\sA-Za-z0-9]+|\s+")


def _piece_cost(piece: str) -> int:
    first = piece[0]
    if first.isspace():
        return 0 if piece == " " else math.ceil(len(piece) / 4)
    if first.isascii() and first.isalpha():
        return math.ceil(len(piece) / 4)
    if first.isascii() and first.isdigit():
        return math.ceil(len(piece) / 3)
    return math.ceil(len(piece.encode("utf-8")) / 2)


class _PieceCosts(dict):
    """piece -> estimated tokens, filled on first sight. Words recur, so most
    lookups hit and a count is one C-level sum instead of a Python loop."""

    def __missing__(self, piece: str) -> int:
        cost = self[piece] = _piece_cost(piece)
        return cost


_MAX_REMEMBERED_PIECES = 200_000


class EstimatingCounter:
    """Deterministic estimate, tuned to be at or above cl100k_base on prose:

    - an ASCII letter run costs ceil(len/4) (real: 1 for most English words),
    - a digit run ceil(len/3) (cl100k groups digits by three),
    - other non-space runs cost ceil(utf8 bytes/2): a lone punctuation mark
      costs 1, a CJK character about 1.5,
    - whitespace: a single space is free (it joins the next word's token),
      longer runs ceil(len/4).
    """

    name = "estimate"
    exact = False

    def __init__(self) -> None:
        self._costs = _PieceCosts()

    def count(self, text: str) -> int:
        if len(self._costs) > _MAX_REMEMBERED_PIECES:  # bounded memory on odd input
            self._costs.clear()
        return sum(map(self._costs.__getitem__, _PIECE.findall(text)))


class TiktokenCounter:
    exact = True

    def __init__(self, encoding) -> None:
        self._encoding = encoding
        self.name = f"tiktoken:{encoding.name}"

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))


def _tiktoken_cache_dir() -> str | None:
    from docutrain_cli.config import environ_flag

    for name in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        value = environ_flag(name)
        if value is not None:
            return value or None  # "" disables tiktoken's cache
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _cached_tiktoken(encoding_name: str):
    """The tiktoken encoding if it can load without the network, else None."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return None
    url = _ENCODING_URLS.get(encoding_name)
    cache_dir = _tiktoken_cache_dir()
    if url is None or cache_dir is None:
        return None
    cached = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    if not os.path.isfile(cached):
        return None
    try:
        import tiktoken

        return tiktoken.get_encoding(encoding_name)
    except Exception:  # a damaged cache file: estimate instead
        return None


# A process-wide cache on purpose: a counter holds no client or connection
# (a tiktoken encoding is immutable data), so sharing it is safe, even across fork.
@functools.lru_cache(maxsize=None)
def counter_for(model: str) -> TokenCounter:
    """The best counter available offline for an embedding model."""
    encoding_name = OPENAI_ENCODINGS.get(model)
    if encoding_name:
        encoding = _cached_tiktoken(encoding_name)
        if encoding is not None:
            return TiktokenCounter(encoding)
    return EstimatingCounter()


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))

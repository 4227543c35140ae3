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
from itertools import accumulate
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

    def count_each(self, texts: list[str]) -> list[int]: ...


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


# What count_each's quick way cannot have: a space next to other
# whitespace, and whitespace other than spaces and newlines (U+3000 is the
# last whitespace character; tests/test_chunk_split.py checks them all).
_NOT_SINGLE_SPACED = ("  ", " \n", "\n ") + tuple(
    c for c in map(chr, range(0x3001)) if c.isspace() and c not in " \n"
)
# Those an ASCII text can hold: fewer tests for most pages.
_NOT_SINGLE_SPACED_ASCII = tuple(c for c in _NOT_SINGLE_SPACED if c.isascii())
_NON_ASCII_WHITESPACE = tuple(c for c in _NOT_SINGLE_SPACED if len(c) == 1 and not c.isascii())


@functools.lru_cache(maxsize=1)  # numpy is imported on first use, not with this module
def _byte_classes():
    """For each UTF-8 byte, the kind of piece it is part of (0 letters, 1
    digits, 2 other, 3 whitespace) and what a token of each kind holds."""
    import numpy as np

    classes = np.full(256, 2, np.uint8)  # other, and every byte of a non-ASCII character
    for byte in range(128):
        char = chr(byte)
        if char.isalpha():
            classes[byte] = 0
        elif char.isdigit():
            classes[byte] = 1
        elif char.isspace():
            classes[byte] = 3
    return classes, np.array([4, 3, 2, 4], np.int64)


def _counts_at_once(texts: list[str], whole: str) -> list[int] | None:
    """count() of each text, for many texts in one numpy pass over their
    UTF-8 bytes: the pieces are the runs of one class of byte (cut where a
    text starts), each costs ceil(length / its kind's divisor), a lone
    space nothing. None when the texts hold whitespace outside ASCII, which
    this pass would take for other characters."""
    if _has_non_ascii_whitespace(whole):
        return None
    if not whole:
        return [0] * len(texts)
    import numpy as np

    classes, divisors = _byte_classes()
    data = np.frombuffer(whole.encode("utf-8"), np.uint8)
    size = len(data)
    starts = np.fromiter(accumulate(map(len, texts), initial=0), np.int64, len(texts) + 1)
    if size != len(whole):  # character offsets to byte offsets: a character starts at a byte not 10xxxxxx
        starts = np.append(np.flatnonzero((data & 0xC0) != 0x80), size)[starts]
    kind = classes.take(data)
    cut = np.empty(size, bool)
    cut[0] = True
    np.not_equal(kind[1:], kind[:-1], out=cut[1:])
    cut[starts[starts < size]] = True
    runs = np.flatnonzero(cut)
    lengths = np.empty_like(runs)
    np.subtract(runs[1:], runs[:-1], out=lengths[:-1])
    lengths[-1] = size - runs[-1]
    divisor = divisors.take(kind.take(runs))
    cost = lengths + divisor
    cost -= 1
    cost //= divisor
    cost[(lengths == 1) & (data.take(runs) == 32)] = 0
    total = np.zeros(len(runs) + 1, np.int64)
    np.cumsum(cost, out=total[1:])
    at = total.take(np.searchsorted(runs, starts))
    return (at[1:] - at[:-1]).tolist()



def _has_non_ascii_whitespace(text: str) -> bool:
    return not text.isascii() and any(map(text.__contains__, _NON_ASCII_WHITESPACE))


# The numpy pass's arrays take a few dozen bytes a character: more text than
# this (a huge page) is counted the other way.
_NUMPY_MOST_CHARS = 1 << 20


class _Costs(dict):
    """text -> estimated tokens of its pieces, filled on first sight. Words
    and pieces recur (a new number is made of known pieces), so most lookups
    hit and a count is a C-level sum."""

    def __missing__(self, text: str) -> int:
        if len(self) >= _MAX_REMEMBERED:  # bounded memory on odd input
            self.clear()
        pieces = _PIECE.findall(text)
        cost = self[text] = _piece_cost(text) if len(pieces) == 1 else sum(map(self.__getitem__, pieces))
        return cost


_MAX_REMEMBERED = 200_000


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
    # From this many characters count_each counts in numpy: a few dozen
    # array operations cost less than a dictionary lookup per word only
    # over a batch of pages (the chunker's), not over one.
    numpy_from_chars = 8192

    def __init__(self) -> None:
        self._cost = _Costs().__getitem__  # of a piece, a word or any text

    def count(self, text: str) -> int:
        # No piece spans whitespace, so the cost is that of the words
        # str.split() finds plus that of the whitespace runs between them;
        # when every run is one character (most text), a space costs 0 and
        # any other whitespace character 1. (str.split() and the regex's \s
        # agree on what whitespace is: both use str.isspace.) A split costs
        # far less than the regex, which pays per piece.
        words = text.split()
        spaces = len(text) - sum(map(len, words))
        if words and spaces == len(words) - 1 + text[:1].isspace() + text[-1:].isspace():
            return sum(map(self._cost, words)) + spaces - text.count(" ")
        # A longer whitespace run somewhere: price the pieces.
        return sum(map(self._cost, _PIECE.findall(text)))

    def count_each(self, texts: list[str]) -> list[int]:
        """count() of each text (the pieces of a few pages, say). Many
        texts together are counted in one numpy pass (_counts_at_once).
        Fewer, the whitespace is checked once for all of them: when no
        space touches other whitespace and the only other whitespace is
        newlines, every space is a free piece of its own and every other
        piece lies between two spaces, so a text costs what the parts
        split(" ") makes of it cost, each remembered like a word."""
        whole = "".join(texts)
        if self.numpy_from_chars <= len(whole) <= _NUMPY_MOST_CHARS:
            counts = _counts_at_once(texts, whole)
            if counts is None:  # whitespace outside ASCII: count the texts holding it one by one
                odd = [i for i, text in enumerate(texts) if _has_non_ascii_whitespace(text)]
                plain = list(texts)
                for i in odd:
                    plain[i] = ""
                counts = _counts_at_once(plain, "".join(plain))
                for i in odd:
                    counts[i] = self.count(texts[i])
            return counts
        if any(map(whole.__contains__, _NOT_SINGLE_SPACED_ASCII if whole.isascii() else _NOT_SINGLE_SPACED)):
            return list(map(self.count, texts))
        cost = self._cost
        return [sum(map(cost, text.split(" "))) for text in texts]


class TiktokenCounter:
    exact = True

    def __init__(self, encoding) -> None:
        self._encoding = encoding
        self.name = f"tiktoken:{encoding.name}"

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def count_each(self, texts: list[str]) -> list[int]:
        return list(map(self.count, texts))


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
    return len(text) if text.isascii() else len(text.encode("utf-8"))

"""The offline embedder: feature hashing of word unigrams and bigrams.

The model (offline-hash-v1) is fixed: lower-cased `\\w+` words; every word
but a stopword and every bigram but two stopwords is a feature; a feature
seen c times weighs 1 + ln(c) (a bigram c/2, or 0.5 when seen once) and
lands, with the sign of its crc32's top bit, in slot crc32 % 384; the vector
is L2-normalised. Features are added in order of first appearance, unigrams
then bigrams, and the norm is a left-to-right sum: the float64 results are
bit for bit those of the plain Python loop this replaced
(tests/test_pinned_output.py).

Speed (issue 24): words get small integer ids through a dictionary that
remembers each word's slot and sign, so crc32 runs once per distinct word
and bigram seen by the process, not per occurrence; counting, ordering and
summing run in numpy over a whole batch of texts at once. numpy is used
because the per-word Python work was the cost (0.25 ms a page, half of
PyMuPDF's own extraction time).
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Iterator, Sequence

import numpy as np

from docutrain_cli.pipeline.models import MAX_INPUT_TOKENS, OFFLINE_DIMENSIONS, OFFLINE_MODEL
from docutrain_cli.pipeline.tokens import EstimatingCounter

BATCH = 128

_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    """a an and are as at be but by for from has have he her his i in is it its
    of on or our she that the their them they this to was we were what which
    who will with you your""".split()
)
_STOP_BYTES = frozenset(word.encode("ascii") for word in STOPWORDS)
# ASCII text: `\w` is [A-Za-z0-9_], so mapping every other byte to a space
# and splitting finds the same words as the regex, several times faster.
_ASCII_NON_WORD = bytes(b if chr(b).isalnum() or b == ord("_") else ord(" ") for b in range(128)) + b" " * 128

_ID_BITS = 22  # a text's position in its batch and two word ids share one int64 key
_MAX_TEXT_WORDS = 1 << 21  # so ids stay below 1 << _ID_BITS (with _MAX_VOCABULARY)
_PASS_WORDS = 1 << 12  # words in one numpy pass: its arrays stay small
_MAX_VOCABULARY = 5_000  # words remembered (under 1 MB) before starting afresh


def words_of(text: str) -> list[bytes]:
    """The text's lower-cased `\\w+` words as UTF-8 (what crc32 hashes)."""
    lower = text.lower()
    if lower.isascii():
        return lower.encode("ascii").translate(_ASCII_NON_WORD).split()
    return [word.encode("utf-8") for word in _WORD.findall(lower)]


def _lifts(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights by count, made with math.log so they match the old loop exactly."""
    unigram = [0.0] + [1.0 + math.log(c) for c in range(1, n)]
    bigram = [0.0, 0.5] + [1.0 + math.log(0.5 * c) for c in range(2, n)]
    return np.array(unigram), np.array(bigram)


# crc32 of "first second" from the crc32s of "first " and "second" (zlib's
# crc32_combine): multiply the first by x^(8 * len(second)) modulo zlib's
# polynomial, then xor the second. For one length that product is linear in
# the first crc's bits, so it is four 256-entry table lookups, in numpy.
_POLY = 0xEDB88320


def _multiply(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (zlib's multmodp, reflected bit order)."""
    product, mask = 0, 1 << 31
    while mask:
        if a & mask:
            product ^= b
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _shift_tables(length: int) -> np.ndarray:
    """(4, 256) tables: crc -> crc * x^(8 * length), byte by byte."""
    power, square, n = 1 << 31, 1 << 30, 8 * length  # x^0; x^1
    while n:
        if n & 1:
            power = _multiply(square, power)
        square = _multiply(square, square)
        n >>= 1
    tables = np.zeros((4, 256), np.uint32)
    for byte in range(4):
        for bit in range(8):
            image = _multiply(power, 1 << (8 * byte + bit))
            tables[byte, 1 << bit : 2 << bit] = tables[byte, : 1 << bit] ^ np.uint32(image)
    return tables


class _Vocabulary(dict):
    """word -> id, filled on first sight with what the features need of the
    word, in numpy arrays indexed by id: its slot, sign and stopword flag as
    a unigram, its crc32 with and without a space after it, and which shift
    table its length takes."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims
        self.size = 0
        self.columns = {
            "slot": np.zeros(1024, np.int64), "sign": np.zeros(1024), "stop": np.zeros(1024, bool),
            "crc": np.zeros(1024, np.uint32), "crc_space": np.zeros(1024, np.uint32),
            "table": np.zeros(1024, np.int64),
        }
        self.tables = np.zeros((0, 4, 256), np.uint32)  # shift tables, by length seen
        self._table_of_length: dict[int, int] = {}

    def __missing__(self, word: bytes) -> int:
        index = self[word] = self.size
        self.size += 1
        columns = self.columns
        if index == len(columns["slot"]):
            for name, column in columns.items():
                columns[name] = np.concatenate([column, np.zeros_like(column)])
        h = zlib.crc32(word)
        columns["slot"][index] = h % self.dims
        columns["sign"][index] = 1.0 if h & 0x80000000 else -1.0
        columns["stop"][index] = word in _STOP_BYTES
        columns["crc"][index] = h
        columns["crc_space"][index] = zlib.crc32(b" ", h)
        columns["table"][index] = self._table(len(word))
        return index

    def _table(self, length: int) -> int:
        if length not in self._table_of_length:
            self._table_of_length[length] = len(self.tables)
            self.tables = np.concatenate([self.tables, _shift_tables(length)[None]])
        return self._table_of_length[length]

    def bigram_crcs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """crc32(first + b" " + second) for arrays of word ids."""
        crc = self.columns["crc_space"][first]
        table = self.columns["table"][second]
        combined = self.columns["crc"][second]
        for byte in range(4):
            combined = combined ^ self.tables[table, byte, (crc >> np.uint32(8 * byte)) & np.uint32(255)]
        return combined


def _in_first_order(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct keys in order of first appearance, their counts and first positions."""
    distinct, first, counts = np.unique(keys, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return distinct[order], counts[order], first[order]


class OfflineEmbedder:
    """Feature hashing of word unigrams and bigrams, L2-normalised.

    No network, deterministic across machines and Python versions (crc32, not
    hash()). Vectors capture word overlap, so search finds chunks that share
    the query's words: lexical, not semantic, but useful on a fresh machine.
    """

    kind = "offline"
    model = OFFLINE_MODEL
    dimensions = OFFLINE_DIMENSIONS
    requested_dimensions = OFFLINE_DIMENSIONS
    max_input_tokens = MAX_INPUT_TOKENS

    def __init__(self) -> None:
        self.counter = EstimatingCounter()
        self.tokens_used = 0
        self.rate_limited = 0  # no rate limit offline
        self.waited = 0.0
        self.deadline = None
        self._vocabulary = _Vocabulary(self.dimensions)
        self._unigram_lift, self._bigram_lift = _lifts(256)

    def embed(self, texts: list[str], token_counts: Sequence[int] | None = None) -> list[list[float]]:
        counts = token_counts if token_counts is not None else [self.counter.count(t) for t in texts]
        vectors: list[list[float]] = []
        group: list[list[bytes]] = []
        size = 0
        for text in texts:  # one numpy pass per _PASS_WORDS words or so
            words = words_of(text)
            if len(words) > _MAX_TEXT_WORDS:
                raise ValueError(f"a text of {len(words):,} words is too long to embed (at most {_MAX_TEXT_WORDS:,})")
            if group and size + len(words) > _PASS_WORDS:
                vectors.extend(self._vectors(group))
                group, size = [], 0
            group.append(words)
            size += len(words)
        if group:
            vectors.extend(self._vectors(group))
        self.tokens_used += sum(counts)
        return vectors

    def embed_batches(
        self, texts: list[str], token_counts: Sequence[int] | None = None
    ) -> Iterator[tuple[range, list[list[float]]]]:
        # No request limits offline, but vectors are lists of Python floats
        # (32 bytes a value) until the caller packs them: small batches keep
        # a 2,000-page document from holding all of them at once.
        for start in range(0, len(texts), BATCH):
            batch = range(start, min(start + BATCH, len(texts)))
            counts = None if token_counts is None else token_counts[batch.start : batch.stop]
            yield batch, self.embed(texts[batch.start : batch.stop], counts)

    def vector(self, text: str) -> list[float]:
        return self.embed([text], [0])[0]

    def _vectors(self, texts: list[list[bytes]]) -> list[list[float]]:
        """The vectors of a few texts' words, in one numpy pass."""
        dims = self.dimensions
        vocabulary = self._vocabulary
        if len(vocabulary) > _MAX_VOCABULARY:
            vocabulary = self._vocabulary = _Vocabulary(dims)  # bounded memory; ids fit _ID_BITS
        flat = [word for words in texts for word in words]
        ids = np.fromiter(map(vocabulary.__getitem__, flat), np.int64, len(flat))
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        position = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        text_shift = 2 * _ID_BITS
        column = vocabulary.columns
        stop = column["stop"]

        # Unigrams: every word but a stopword, counted per (text, word).
        unigrams, counts, first = _in_first_order((position << text_shift) | ids)
        word = unigrams & ((1 << _ID_BITS) - 1)
        keep = ~stop[word]
        unigrams, counts, first, word = unigrams[keep], counts[keep], first[keep], word[keep]
        # Bigrams: neighbours in one text, but two stopwords.
        keep = (position[:-1] == position[1:]) & ~(stop[ids[:-1]] & stop[ids[1:]])
        pairs = (position[:-1] << text_shift) | (ids[:-1] << _ID_BITS) | ids[1:]
        bigrams, pair_counts, pair_first = _in_first_order(pairs[keep])
        pair_first = np.flatnonzero(keep)[pair_first]
        id_mask = (1 << _ID_BITS) - 1
        crcs = vocabulary.bigram_crcs((bigrams >> _ID_BITS) & id_mask, bigrams & id_mask)

        # Each text's features in the old loop's order: its unigrams, then its
        # bigrams, each by first appearance; bincount adds them in that order.
        text_of = np.concatenate([unigrams >> text_shift, bigrams >> text_shift])
        kind = np.repeat([0, 1], [len(unigrams), len(bigrams)])
        order = np.lexsort((np.concatenate([first, pair_first]), kind, text_of))
        slots = np.concatenate([column["slot"][word], (crcs % np.uint32(dims)).astype(np.int64)])
        weights = np.concatenate([
            column["sign"][word] * self._lift(counts, bigram=False),
            np.where(crcs & np.uint32(0x80000000), 1.0, -1.0) * self._lift(pair_counts, bigram=True),
        ])
        values = np.bincount((text_of * dims + slots)[order], weights=weights[order], minlength=len(texts) * dims)
        values = values.reshape(len(texts), dims)
        # Left-to-right sums of squares, as the old loop's sum() made them.
        norms = np.sqrt(np.cumsum(values * values, axis=1)[:, -1])
        norms[norms == 0] = 1.0
        return (values / norms[:, None]).tolist()

    def _lift(self, counts: np.ndarray, *, bigram: bool) -> np.ndarray:
        """1 + ln(weight) by count, from tables made with math.log."""
        if len(counts) and counts.max() >= len(self._unigram_lift):  # a word 256+ times in one text
            self._unigram_lift, self._bigram_lift = _lifts(int(counts.max()) + 1)
        return (self._bigram_lift if bigram else self._unigram_lift)[counts]

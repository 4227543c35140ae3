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
summing run in numpy over a whole batch of texts at once. When every word
of a pass is ASCII (other characters may separate words: ’ “ ” –), numpy
also finds the words and their ids (offline_words.py): only a new word
becomes a bytes object. numpy is used
because the per-word Python work was the cost (0.25 ms a page, half of
PyMuPDF's own extraction time). Finding each feature's count and first
appearance sorts values, not indices: a feature's id and its position share
one int64, and numpy sorts plain integers several times faster than it
argsorts them (np.unique with counts and first indices cost 4x as much).
Which id a word gets does not matter, only that one word has one id.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import math
import re
import zlib
from array import array
from typing import Iterator, Sequence

import numpy as np

from docutrain_cli.pipeline.models import MAX_INPUT_TOKENS, OFFLINE_DIMENSIONS, OFFLINE_MODEL
from docutrain_cli.pipeline.offline_words import WordTable, ascii_word_ids
from docutrain_cli.pipeline.tokens import EstimatingCounter

BATCH = 512

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
# The same, lower-casing too: in ASCII text str.lower() changes only A-Z.
_ASCII_LOWER_WORD = bytes(_ASCII_NON_WORD[b] + (32 if 65 <= b <= 90 else 0) for b in range(256))

# Two word ids and a word's position in its pass share one int64 (62 bits).
_POSITION_BITS = 20
_ID_BITS = 21
_MAX_TEXT_WORDS = 1 << _POSITION_BITS  # a pass holds at most this many words...
_PASS_CHARS = 1 << 17  # ...and usually this many characters or fewer (some 16,000
# words: its arrays stay small); a text is never split between passes
_MAX_VOCABULARY = 5_000  # words remembered (under 1 MB) before starting afresh,
# so ids stay below _MAX_VOCABULARY + _MAX_TEXT_WORDS < 1 << _ID_BITS


class _WordCharacter(Exception):
    """A text has a non-ASCII letter or digit: it has no ASCII form."""


def _space_for_non_word(error: UnicodeError) -> tuple[str, int]:
    """Encoding error handler: a non-ASCII character that is no part of a
    `\\w` word (’ “ ” – • …) becomes a space, as it separates words."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    if any(map(str.isalnum, error.object[error.start : error.end])):  # what `\w` matches, but `_`
        raise _WordCharacter
    return " " * (error.end - error.start), error.end


codecs.register_error("docutrain-offline-space", _space_for_non_word)


def ascii_form(text: str) -> bytes | None:
    """The text as ASCII bytes with the same `\\w+` words, but for case, or
    None when a word of it has a non-ASCII character."""
    if text.isascii():
        return text.encode("ascii")
    try:  # lower() first: it makes some characters ASCII (the Kelvin sign a k)
        return text.lower().encode("ascii", errors="docutrain-offline-space")
    except _WordCharacter:
        return None


def words_of(text: str) -> list[bytes]:
    """The text's lower-cased `\\w+` words as UTF-8 (what crc32 hashes)."""
    if text.isascii():  # one pass over the bytes instead of lower() first
        return text.encode("ascii").translate(_ASCII_LOWER_WORD).split()
    lower = text.lower()  # may still be ASCII (the Kelvin sign lower-cases to k)
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


@functools.lru_cache(maxsize=256)  # kept when a vocabulary starts afresh
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
    """word -> id, in order of first sight. What the features need of a word
    sits in numpy arrays indexed by id (`columns`): its slot, sign and
    stopword flag as a unigram, its crc32 with and without a space after it,
    and where the shift tables of its length start. A pass looks its words
    up, then fills the columns of the new ones all at once (`add_new`):
    a third of the cost of filling them one word at a time."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims
        self.new: list[bytes] = []  # words without columns yet
        self.columns = {
            "slot": np.zeros(0, np.int64), "sign": np.zeros(0), "stop": np.zeros(0, bool),
            "crc": np.zeros(0, np.uint32), "crc_space": np.zeros(0, np.uint32), "table": np.zeros(0, np.int64),
        }
        self.tables = np.zeros(0, np.uint32)  # shift tables, 1,024 values for each length seen
        self.table = WordTable()  # the same ids, found without a bytes object (offline_words.py)
        self._table_of_length: dict[int, int] = {}

    def __missing__(self, word: bytes) -> int:
        index = self[word] = len(self)
        self.new.append(word)
        return index

    def add_new(self) -> None:
        """Fill the columns of the words seen since the last call."""
        new, self.new = self.new, []
        if not new:
            return
        crcs = list(map(zlib.crc32, new))
        crc = np.array(crcs, np.uint32)
        fresh = {
            "slot": (crc % np.uint32(self.dims)).astype(np.int64),
            "sign": np.where(crc & np.uint32(0x80000000), 1.0, -1.0),
            "stop": np.fromiter(map(_STOP_BYTES.__contains__, new), bool, len(new)),
            "crc": crc,
            "crc_space": np.array(list(map(zlib.crc32, itertools.repeat(b" "), crcs)), np.uint32),
            "table": np.fromiter(map(self._table, map(len, new)), np.int64, len(new)),
        }
        self.columns = {name: np.concatenate([column, fresh[name]]) for name, column in self.columns.items()}

    def _table(self, length: int) -> int:
        if length not in self._table_of_length:
            self._table_of_length[length] = len(self.tables)
            self.tables = np.concatenate([self.tables, _shift_tables(length).reshape(-1)])
        return self._table_of_length[length]

    def bigram_crcs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """crc32(first + b" " + second) for arrays of word ids."""
        crc = self.columns["crc_space"][first]
        table = self.columns["table"][second]
        combined = self.columns["crc"][second]
        for byte in range(4):  # one flat index instead of three: a third of the time
            index = table + ((crc >> np.uint32(8 * byte)) & np.uint32(255)).astype(np.int64) + 256 * byte
            combined = combined ^ self.tables[index]
        return combined


def _in_first_order(
    features: np.ndarray, positions: np.ndarray, text_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (text, feature) pairs among features seen at these
    positions (ascending), in order of first appearance: features, counts, texts."""
    mask = (1 << _POSITION_BITS) - 1
    ordered = np.sort((features << _POSITION_BITS) | positions)  # by feature, then position
    feature, position = ordered >> _POSITION_BITS, ordered & mask
    text = text_of[position]
    starts = np.empty(len(ordered), bool)
    starts[:1] = True
    starts[1:] = (feature[1:] != feature[:-1]) | (text[1:] != text[:-1])
    starts = np.flatnonzero(starts)
    ends = np.empty_like(starts)  # np.diff(starts, append=...) costs three times this
    ends[:-1] = starts[1:]
    ends[-1:] = len(ordered)
    counts = ends - starts
    # Each distinct pair's first position is unique and below len(text_of):
    # scattered there, they come out in order without a second sort.
    first = position[starts]
    group_at = np.empty(len(text_of), np.int64)
    group_at[first] = np.arange(len(starts))
    seen = np.zeros(len(text_of), bool)
    seen[first] = True
    order = group_at[np.flatnonzero(seen)]
    chosen = starts[order]
    return feature[chosen], counts[order], text[chosen]


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
        return [vector for matrix in self._matrices(texts, token_counts) for vector in matrix.tolist()]

    def embed_batches(
        self, texts: list[str], token_counts: Sequence[int] | None = None
    ) -> Iterator[tuple[range, list[array]]]:
        # No request limits offline, but batches keep a 2,000-page document
        # from holding all its float64 matrices at once. 512 texts, not 128:
        # the caller caches each batch in one transaction, and a 200-page
        # document's vectors in one write instead of two touch the cache's
        # key pages once (1.7 ms a document instead of 3.0). They come as the
        # float32 arrays the store keeps: a twentieth of the cost of making
        # Python floats first (the same values: both round to nearest).
        for start in range(0, len(texts), BATCH):
            batch = range(start, min(start + BATCH, len(texts)))
            counts = None if token_counts is None else token_counts[batch.start : batch.stop]
            matrices = self._matrices(texts[batch.start : batch.stop], counts)
            yield batch, [array("f", row.tobytes()) for matrix in matrices for row in matrix.astype(np.float32)]

    def _matrices(self, texts: list[str], token_counts: Sequence[int] | None) -> Iterator[np.ndarray]:
        """The texts' vectors, float64 rows of a few matrices: one numpy pass
        per _PASS_CHARS characters or so."""
        counts = token_counts if token_counts is not None else [self.counter.count(t) for t in texts]
        group: list[str] = []
        size = 0
        for text in texts:
            if group and size + len(text) > _PASS_CHARS:
                yield self._vectors(group)
                group, size = [], 0
            group.append(text)
            size += len(text)
        if group:
            yield self._vectors(group)
        self.tokens_used += sum(counts)

    def vector(self, text: str) -> list[float]:
        return self.embed([text], [0])[0]

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """The vectors of a few texts, in one numpy pass."""
        dims = self.dimensions
        vocabulary = self._vocabulary
        if len(vocabulary) > _MAX_VOCABULARY:
            vocabulary = self._vocabulary = _Vocabulary(dims)  # bounded memory; ids fit _ID_BITS
        ascii_texts = list(map(ascii_form, texts))
        if None not in ascii_texts:  # English text with curly quotes or dashes too
            ids, lengths = ascii_word_ids(ascii_texts, vocabulary.table, vocabulary.__getitem__, _ASCII_LOWER_WORD)
        else:
            words = list(map(words_of, texts))
            lengths = np.fromiter(map(len, words), np.int64, len(words))
            ids = np.fromiter(map(vocabulary.__getitem__, itertools.chain.from_iterable(words)), np.int64,
                              int(lengths.sum()))
        too_long = lengths[lengths > _MAX_TEXT_WORDS]
        if len(too_long):
            raise ValueError(f"a text of {int(too_long[0]):,} words is too long to embed (at most {_MAX_TEXT_WORDS:,})")
        vocabulary.add_new()
        text_of = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)  # by word position
        column = vocabulary.columns
        stop = column["stop"]

        # Unigrams: every word but a stopword, counted per (text, word).
        keep = np.flatnonzero(~stop[ids])
        words, counts, word_text = _in_first_order(ids[keep], keep, text_of)
        # Bigrams: neighbours in one text, but two stopwords.
        keep = np.flatnonzero((text_of[:-1] == text_of[1:]) & ~(stop[ids[:-1]] & stop[ids[1:]]))
        pairs, pair_counts, pair_text = _in_first_order((ids[keep] << _ID_BITS) | ids[keep + 1], keep, text_of)
        crcs = vocabulary.bigram_crcs(pairs >> _ID_BITS, pairs & ((1 << _ID_BITS) - 1))

        # The old loop's order within each text: its unigrams, then its
        # bigrams, each by first appearance. bincount adds in array order,
        # and only the order within one text's slot matters, so all
        # unigrams then all bigrams, each by first appearance, will do.
        bins = np.concatenate([word_text * dims + column["slot"][words],
                               pair_text * dims + (crcs % np.uint32(dims)).astype(np.int64)])
        weights = np.concatenate([
            column["sign"][words] * self._lift(counts, bigram=False),
            np.where(crcs & np.uint32(0x80000000), 1.0, -1.0) * self._lift(pair_counts, bigram=True),
        ])
        values = np.bincount(bins, weights=weights, minlength=len(texts) * dims)
        values = values.reshape(len(texts), dims)
        # Left-to-right sums of squares, as the old loop's sum() made them.
        norms = np.sqrt(np.cumsum(values * values, axis=1)[:, -1])
        norms[norms == 0] = 1.0
        return values / norms[:, None]

    def _lift(self, counts: np.ndarray, *, bigram: bool) -> np.ndarray:
        """1 + ln(weight) by count, from tables made with math.log."""
        if len(counts) and counts.max() >= len(self._unigram_lift):  # a word 256+ times in one text
            self._unigram_lift, self._bigram_lift = _lifts(int(counts.max()) + 1)
        return (self._bigram_lift if bigram else self._unigram_lift)[counts]

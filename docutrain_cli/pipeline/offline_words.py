"""Word ids of ASCII texts for the offline embedder, without a Python object
per word (issue 24).

Splitting a text into bytes objects and looking each one up in a dictionary
cost about 70 ns a word: 40 % of the embedder's time on the bench's PDFs.
Here the texts are one byte buffer; numpy finds the words, reads each word of
up to 16 bytes as two big-endian integers (its key: exact, since word bytes
are never zero and the bytes past the word are masked to zero) and looks the
keys up in an open-addressing hash table held in numpy arrays. Only a word
the table has not seen yet, or one longer than 16 bytes, becomes a bytes
object and goes through the vocabulary's dictionary: so a word's id is the
one the dictionary gives it, whichever way it was found.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

_SPACE = ord(" ")
_KEY_BYTES = 8  # a key half: 8 bytes of the word in one uint64
_LONG = 2 * _KEY_BYTES  # longer words go through the dictionary
# _MASK[n]: keeps the first n bytes of a little-endian uint64 (n = 0..8).
_MASK = np.array([(1 << (8 * n)) - 1 for n in range(_KEY_BYTES + 1)], np.uint64)
_MIX_1, _MIX_2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)  # odd: spread the keys' bits


class WordTable:
    """(first 8 bytes, next 8 bytes) of a word -> its id, open addressing
    with linear probing, at most half full."""

    def __init__(self, bits: int = 14) -> None:
        self.bits = bits
        self.first = np.zeros(1 << bits, np.uint64)
        self.second = np.zeros(1 << bits, np.uint64)
        self.ids = np.full(1 << bits, -1, np.int64)  # -1: an empty slot
        self.count = 0

    @staticmethod
    def mixed(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """Both halves of each key in one uint64 (not one to one)."""
        return (first * _MIX_1) ^ (second * _MIX_2)

    def _slots(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return (self.mixed(first, second) >> np.uint64(64 - self.bits)).astype(np.int64)

    def add(self, first: np.ndarray, second: np.ndarray, ids: np.ndarray) -> None:
        """Learn keys it does not have (distinct), all at once: each round
        places, in every free slot wanted, the first key that wants it; the
        others try the next slot, as linear probing would have them."""
        while 2 * (self.count + len(ids)) > len(self.ids):
            used = np.flatnonzero(self.ids >= 0)
            old = self.first[used], self.second[used], self.ids[used]
            self.__init__(self.bits + 1)
            self.add(*old)
        mask = len(self.ids) - 1
        todo = np.arange(len(ids))
        slot = self._slots(first, second)
        while len(todo):
            free = self.ids[slot] < 0
            wanted, first_wish = np.unique(slot[free], return_index=True)
            placed = np.flatnonzero(free)[first_wish]
            keys = todo[placed]
            self.first[wanted], self.second[wanted], self.ids[wanted] = first[keys], second[keys], ids[keys]
            self.count += len(keys)
            left = np.ones(len(todo), bool)
            left[placed] = False
            todo, slot = todo[left], (slot[left] + 1) & mask

    def find(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The ids of these keys, -1 for a key the table lacks."""
        mask = len(self.ids) - 1
        found = np.full(len(first), -1, np.int64)
        todo = np.arange(len(first))
        slot = self._slots(first, second)
        while len(todo):
            ids = self.ids[slot]
            match = (self.first[slot] == first[todo]) & (self.second[slot] == second[todo]) & (ids >= 0)
            found[todo[match]] = ids[match]
            go_on = ~match & (ids >= 0)  # an occupied slot with another key: try the next
            todo, slot = todo[go_on], (slot[go_on] + 1) & mask
        return found


def _looked_up(data: bytes, starts: np.ndarray, ends: np.ndarray, lookup: Callable[[bytes], int]) -> np.ndarray:
    words = [data[start:end] for start, end in zip(starts.tolist(), ends.tolist())]
    return np.fromiter(map(lookup, words), np.int64, len(words))


def ascii_word_ids(
    texts: Sequence[bytes], table: WordTable, lookup: Callable[[bytes], int], translation: bytes
) -> tuple[np.ndarray, np.ndarray]:
    """The ids of the words of ASCII texts, all texts end to end, and each
    text's word count. `translation` lower-cases word bytes and makes every
    other byte a space; `lookup` gives a word its id (the vocabulary)."""
    data = b" ".join(texts).translate(translation)
    is_word = np.zeros(len(data) + 2, bool)  # a space before and after
    np.not_equal(np.frombuffer(data, np.uint8), _SPACE, out=is_word[1:-1])
    edges = np.flatnonzero(is_word[1:] != is_word[:-1])
    starts, ends = edges[0::2], edges[1::2]
    lengths = ends - starts

    # The 8 bytes at each offset, as little-endian uint64s: 8 copies of the
    # buffer, each starting one byte further, end to end (padded with zeros).
    rows = len(data) // _KEY_BYTES + 3
    padded = data + bytes(4 * _KEY_BYTES)
    at = np.concatenate([np.frombuffer(padded, "<u8", rows, offset) for offset in range(_KEY_BYTES)])
    where = (starts & (_KEY_BYTES - 1)) * rows + (starts >> 3)
    first = at[where] & _MASK[np.minimum(lengths, _KEY_BYTES)]
    second = at[where + 1] & _MASK[np.clip(lengths - _KEY_BYTES, 0, _KEY_BYTES)]

    ids = table.find(first, second)
    long = np.flatnonzero(lengths > _LONG)
    if len(long):
        ids[long] = _looked_up(data, starts[long], ends[long], lookup)
    unknown = np.flatnonzero((ids < 0) & (lengths <= _LONG))
    while len(unknown):  # new words: one bytes object per word, not per occurrence
        _, once = np.unique(table.mixed(first[unknown], second[unknown]), return_index=True)
        chosen = unknown[np.sort(once)]  # in order of first sight; mixing two keys alike is
        table.add(first[chosen], second[chosen], _looked_up(data, starts[chosen], ends[chosen], lookup))
        ids[unknown] = table.find(first[unknown], second[unknown])
        unknown = unknown[ids[unknown] < 0]  # possible, if rare: the other one goes next round
    text_ends = np.cumsum([len(text) + 1 for text in texts])  # each text's end, its separator included
    counts = np.diff(np.searchsorted(starts, text_ends), prepend=0)
    return ids, counts

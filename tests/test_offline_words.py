"""The offline embedder against the plain Python loop of its model, on
random texts made to hit what the fast paths treat specially (issue 24):
words of 8, 9, 16 and 17 bytes (the word table's two key halves), ASCII
texts, texts whose only non-ASCII characters separate words (’ “ ” – ² ½),
texts with non-ASCII words, all in one pass, new words on every call, more words than the
vocabulary keeps, empty texts and texts without a word."""

from __future__ import annotations

import math
import random
import re
import zlib

import pytest

from docutrain_cli.pipeline import offline
from docutrain_cli.pipeline.offline import STOPWORDS, OfflineEmbedder
from docutrain_cli.pipeline.offline_words import WordTable

import numpy as np


def reference_vector(text: str) -> list[float]:
    """offline-hash-v1 as a plain loop (see offline.py's docstring)."""
    words = [word.encode("utf-8") for word in re.findall(r"\w+", text.lower())]
    stop = {word.encode() for word in STOPWORDS}
    unigrams: dict[bytes, int] = {}
    for word in words:
        if word not in stop:
            unigrams[word] = unigrams.get(word, 0) + 1
    bigrams: dict[bytes, int] = {}
    for first, second in zip(words, words[1:]):
        if not (first in stop and second in stop):
            bigrams[first + b" " + second] = bigrams.get(first + b" " + second, 0) + 1
    vector = [0.0] * 384
    features = [(w, 1.0 + math.log(c)) for w, c in unigrams.items()]
    features += [(b, 0.5 if c == 1 else 1.0 + math.log(0.5 * c)) for b, c in bigrams.items()]
    for feature, weight in features:
        crc = zlib.crc32(feature)
        vector[crc % 384] += (1.0 if crc & 0x80000000 else -1.0) * weight
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def random_texts(rng: random.Random, count: int, non_ascii_words: bool = True) -> list[str]:
    common = ["rent", "deposit", "the", "and", "of", "Invoice", "LEASE", "tenant_1", "x", "a", "is", "it"]
    edges = ["abcdefgh", "abcdefghi", "abcdefghijklmnop", "abcdefghijklmnopq", "abcdefghijklmnopqrstuvwxyz" * 3,
             "ABCDEFGH", "abcdefgh_", "0123456789012345", "01234567890123456", "_", "__init__"]
    odd = ["café", "Zoë", "東京", "\u212a", "straße", "İstanbul", "naïve"]  # \u212a lower-cases to ASCII k
    separators = [" ", "  ", ", ", ".\n", "\t", " - ", "!?", "\r\n", "/", "'"]
    curly = ["\u2019", " \u201c", "\u201d ", " \u2013 ", "\u2022", "\u2026", "\u00a0", "\u00b2", "\u00bd", "\u0307"]
    texts = []
    for _ in range(count):
        ascii_only = rng.random() < 0.8 or not non_ascii_words
        words = []
        for _ in range(rng.choice([0, 1, 2, 5, 40, 300])):
            pick = rng.random()
            if pick < 0.5:
                words.append(rng.choice(common))
            elif pick < 0.7:
                words.append(rng.choice(edges))
            elif pick < 0.75 and not ascii_only:
                words.append(rng.choice(odd))
            else:  # new words all the time, some long
                letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
                words.append("".join(rng.choice(letters) for _ in range(rng.choice([1, 3, 7, 8, 9, 15, 16, 17, 30]))))
        between = separators + curly if rng.random() < 0.5 else separators  # ’ “ ” – are no word characters
        text = rng.choice(["", " ", "..."]) + "".join(word + rng.choice(between) for word in words)
        texts.append(text if rng.random() < 0.5 else text.rstrip(" ,.\n\t-!?\r/'"))  # ending in a word
    return texts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_embedder_matches_the_plain_loop_on_random_texts(seed):
    rng = random.Random(seed)
    embedder = OfflineEmbedder()
    for _ in range(3):  # again with what earlier calls taught the vocabulary
        texts = random_texts(rng, 120)
        assert embedder.embed(texts, [0] * len(texts)) == [reference_vector(t) for t in texts]


@pytest.mark.parametrize("seed", [4, 5])
def test_the_embedder_matches_the_plain_loop_on_english_with_curly_quotes(seed):
    rng = random.Random(seed)
    texts = random_texts(rng, 300, non_ascii_words=False)
    assert sum(not t.isascii() for t in texts) > 50
    assert OfflineEmbedder().embed(texts, [0] * len(texts)) == [reference_vector(t) for t in texts]


def test_a_word_counts_the_same_wherever_it_stands():
    # The last word of a pass ends the buffer; the others end at a space.
    words = ["rent", "abcdefg", "abcdefgh", "abcdefghi", "abcdefghijklmno", "abcdefghijklmnop", "abcdefghijklmnopq"]
    texts = [f"{word} x {word}" for word in words] + [f"{word}.{word.upper()}" for word in words]
    embedder = OfflineEmbedder()
    assert embedder.embed(texts, [0] * len(texts)) == [reference_vector(t) for t in texts]
    assert [embedder.vector(t) for t in texts] == [reference_vector(t) for t in texts]


def test_the_vocabulary_starts_afresh_without_changing_a_vector(monkeypatch):
    monkeypatch.setattr(offline, "_MAX_VOCABULARY", 50)
    monkeypatch.setattr(offline, "_PASS_CHARS", 2_000)  # many passes, each with new words
    rng = random.Random(7)
    texts = random_texts(rng, 200)
    embedder = OfflineEmbedder()
    got = [v.tobytes() for _, vectors in embedder.embed_batches(texts, [0] * len(texts)) for v in vectors]
    assert got == [np.array(reference_vector(t), np.float32).tobytes() for t in texts]


def test_the_word_table_grows_and_finds_every_key():
    rng = np.random.default_rng(5)
    first = rng.integers(0, 1 << 40, 30_000, dtype=np.uint64)
    second = np.where(rng.random(30_000) < 0.5, 0, first // 3).astype(np.uint64)
    first[:100] = first[100:200]  # same first halves, other second halves
    keys = np.unique(np.stack([first, second]), axis=1)
    table = WordTable(bits=4)
    table.add(keys[0][:7], keys[1][:7], np.arange(7))
    table.add(keys[0][7:], keys[1][7:], np.arange(7, keys.shape[1]))
    assert (table.find(keys[0], keys[1]) == np.arange(keys.shape[1])).all()
    assert (table.find(keys[0] + np.uint64(1 << 41), keys[1]) == -1).all()
    assert 2 * table.count <= len(table.ids)


def test_a_text_too_long_to_embed_is_refused():
    with pytest.raises(ValueError, match="too long to embed"):
        OfflineEmbedder().embed(["a " * (offline._MAX_TEXT_WORDS + 1)], [0])


def test_the_word_table_tells_keys_apart_when_every_key_collides(monkeypatch):
    monkeypatch.setattr(WordTable, "_slots", lambda self, first, second: np.zeros(len(first), np.int64))
    first = np.repeat(np.arange(1, 41, dtype=np.uint64), 3)  # each first half with three second halves
    second = np.tile(np.array([0, 1, 1 << 40], np.uint64), 40)
    table = WordTable(bits=4)
    table.add(first[::2], second[::2], np.arange(0, 120, 2))
    table.add(first[1::2], second[1::2], np.arange(1, 120, 2))
    assert (table.find(first, second) == np.arange(120)).all()
    assert (table.find(first, second + np.uint64(2)) == -1).all()

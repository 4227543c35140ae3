"""The chunker gives what it gave before its packing was rewritten (issue 24).

tests/reference_chunker.py is the chunker as it was, frozen. Here both chunk
random documents made of what the chunker treats specially (prose, wrapped
lines, paragraphs, headings, table and CSV rows, long sentences, huge words,
CJK, odd whitespace, empty pages, outline headings) at many budgets and
overlaps, with the estimator and with an exact counter, and must agree on
every chunk: boundaries, content, token count, pages and heading.
"""

from __future__ import annotations

import base64
import dataclasses
import random
import re

import pytest

import reference_chunker
from docutrain_cli.pipeline.chunk import chunk_pages
from docutrain_cli.pipeline.tokens import _PIECE, EstimatingCounter, _piece_cost

WORDS = (
    "the a of lease rent tenant landlord deposit payment invoice clause notice period renewal "
    "liability insurance agreement e.g. Mr. 3.14 1,200.50 (EUR) Zoë Müller naïve"
).split()
CJK = ["東京は日本の首都です。", "大阪は二番目に大きい都市です！", "本当に？", "はい", "。", "中文"]
ENDS = [".", ".", ".", "!", "?", '."', ".)", "'.", "", ";"]
SPACES = [" "] * 30 + ["  ", "\t", "\u00a0", "\u3000", " \n", "\n", "\n\n", "\n \n", "\r\n", "\x00", "\n\n\n\n"]


class ExactStandIn:
    """Like tiktoken for the chunker: exact, and its count of joined text is
    not the sum of the parts' counts (a token may span their edge)."""

    name = "exact-stand-in"
    exact = True

    def count(self, text: str) -> int:
        return len(re.findall(r"\w{1,3}|[^\w\s]", text))

    def count_each(self, texts: list[str]) -> list[int]:
        return list(map(self.count, texts))


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.choice([1, 3, 8, 15, 25, 60, 200]))]
    text = ""
    for word in words:
        text += word + (rng.choice(SPACES) if rng.random() < 0.15 else " ")
    return text.rstrip() + rng.choice(ENDS)


def line(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.08:
        title = " ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 3, 300])))
        return "#" * rng.randint(1, 7) + rng.choice([" ", "\t", ""]) + title + rng.choice(["", " ##"])
    if kind < 0.15:
        cells = [" ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 2, 150]))) for _ in range(rng.randint(1, 5))]
        return "| " + " | ".join(cells) + rng.choice([" |", "", " | "])
    if kind < 0.2:
        return ",".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
    if kind < 0.23:
        blob = base64.b64encode(rng.randbytes(rng.choice([50, 900, 6000]))).decode()
        return f"Key {blob} end."
    if kind < 0.28:
        return "".join(rng.choice(CJK) for _ in range(rng.randint(1, 40)))
    if kind < 0.3:
        return rng.choice(["|", "#", "| |", "#\t", "||"])
    return " ".join(sentence(rng) for _ in range(rng.randint(1, 6)))


def wrap(text: str, rng: random.Random) -> str:
    """Lines cut at spaces every so often, as PyMuPDF gives a PDF's text."""
    width = rng.choice([40, 90, 10_000])
    return re.sub(rf"(.{{{width}}}\S*) ", lambda m: m.group(1) + "\n", text)


def document(seed: int) -> tuple[list[tuple[int, str]], dict]:
    rng = random.Random(seed)
    options = {
        "chunk_tokens": rng.choice([1, 2, 3, 5, 8, 16, 40, 100, 257, 800, 800, 2000]),
        "overlap": rng.choice([0, 1, 5, 50, 100, 100, 400, 5000]),
        "max_input_tokens": rng.choice([8191, 8191, 8191, 60, 300, 1000]),
    }
    if rng.random() < 0.3:
        options["page_headings"] = lambda page: None if page % 3 == 0 else f"Outline > {page // 2}"
    # Tiny budgets make a chunk of every few characters: keep their text short.
    most = 1500 if options["chunk_tokens"] < 16 else 8000
    pages = []
    for number in range(1, rng.randint(2, 8)):
        if rng.random() < 0.1:
            pages.append((number, rng.choice(["", "   \n\n ", "\x00"])))
            continue
        lines = [line(rng) for _ in range(rng.randint(1, 12))]
        text = "".join(part + rng.choice(["\n", "\n\n", "\n\n", " ", "\n\n\n", "\r\n"]) for part in lines)
        text = text[: rng.randrange(most)]
        pages.append((number, wrap(text, rng) if rng.random() < 0.5 else text))
    return pages, options


def outcome(chunker, pages, counter, options) -> list:
    try:
        return [dataclasses.astuple(chunk) for chunk in chunker(pages, counter, **options)]
    except ValueError as error:  # an exact count over the limit: the same error, after the same chunks
        return [str(error)]


def counter_of(kind: str):
    if kind == "exact":
        return ExactStandIn()
    counter = EstimatingCounter()
    if kind == "estimate in numpy":  # as for big batches of pages, whatever the size
        counter.numpy_from_chars = 0
    return counter


@pytest.mark.parametrize("kind", ["estimate", "estimate in numpy", "exact"])
def test_random_documents_chunk_as_they_did(kind):
    for seed in range(100):
        pages, options = document(seed)
        counter = counter_of(kind)
        expected = outcome(reference_chunker.chunk_pages, pages, counter, options)
        assert outcome(chunk_pages, pages, counter, options) == expected, (seed, options)


def test_the_bench_corpus_chunks_as_it_did():
    """scripts/bench.py's prose, with lines wrapped as its PDFs hold them."""
    rng = random.Random(7)
    vocabulary = WORDS[:14]
    pages = []
    for number in range(1, 60):
        paragraphs = [" ".join(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(8, 22))).capitalize() + "."
                               for _ in range(7)) for _ in range(3)]
        pages.append((number, wrap(f"Section {number}.\n\n" + "\n\n".join(paragraphs), random.Random(1))))
    for chunk_tokens, overlap in [(800, 100), (500, 0), (120, 30), (2000, 400)]:
        options = {"chunk_tokens": chunk_tokens, "overlap": overlap}
        counter = EstimatingCounter()
        assert outcome(chunk_pages, pages, counter, options) == outcome(
            reference_chunker.chunk_pages, pages, counter, options
        )


def test_counting_many_texts_at_once_gives_what_counting_each_gives():
    """count_each's numpy pass (tokens.py) against the estimate's definition,
    on texts made of every kind of character it tells apart."""
    whitespace = [chr(c) for c in range(0x3001) if chr(c).isspace()]
    alphabet = list("abcXYZ0129.,;!é大😀") + [" "] * 20 + ["\n"] * 4 + whitespace
    rng = random.Random(3)
    counter = EstimatingCounter()
    counter.numpy_from_chars = 0
    for _ in range(3000):
        letters = alphabet if rng.random() < 0.3 else [c for c in alphabet if c.isascii() or not c.isspace()]
        texts = ["".join(rng.choice(letters) for _ in range(rng.randrange(14))) for _ in range(rng.randrange(1, 9))]
        expected = [sum(_piece_cost(piece) for piece in _PIECE.findall(text)) for text in texts]
        assert counter.count_each(texts) == expected, texts

"""The chunker's fast paths give what the plain ones gave (issue 24).

The chunker cuts a page into pieces with one regex pass, the estimator counts
a page's pieces with str.split, and the OCR check avoids copying the text.
Each is compared here with the plain code it replaced, written out in full,
on random text made of the characters where they could differ.
"""

from __future__ import annotations

import random
import re
import sys

import pymupdf

from docutrain_cli.pipeline.chunk import _PIECES, normalize_text
from docutrain_cli.pipeline.ocr import MIN_IMAGE_COVER, MIN_REPLACEMENT_SHARE, image_cover, needs_ocr
from docutrain_cli.pipeline.tokens import _NOT_SINGLE_SPACED, _PIECE, EstimatingCounter, _piece_cost

WHITESPACE = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]


def lazy(separator: str) -> re.Pattern:
    return re.compile(rf"(?s:.*?(?:{separator})|.+)")


PARAGRAPHS = lazy(r"\n[ \t]*\n\s*")
LINES = lazy(r"\n\s*")
SENTENCES = lazy(r"[.!?][\"'”’)\]]*\s+|[。！？]\s*")


def random_texts(seed: int, count: int, alphabet: list[str], longest: int = 30):
    rng = random.Random(seed)
    for _ in range(count):
        yield "".join(rng.choice(alphabet) for _ in range(rng.randrange(longest)))


def test_one_pass_cuts_where_paragraphs_lines_and_sentences_did():
    alphabet = list("ab x1.!?。！？\"')]”’#|\n\n\n\t  大") + WHITESPACE
    for text in random_texts(1, 30_000, alphabet):
        text = normalize_text(text).strip()
        if not text:
            continue
        text += "\n\n"
        expected = [
            sentence
            for paragraph in PARAGRAPHS.findall(text)
            for line in LINES.findall(paragraph)
            for sentence in SENTENCES.findall(line)
        ]
        assert _PIECES.findall(text) == expected, repr(text)


def plain_count(text: str) -> int:
    return sum(_piece_cost(piece) for piece in _PIECE.findall(text))


def test_the_estimate_is_the_sum_of_its_pieces_however_it_is_taken():
    alphabet = list("abcXYZ0129.,;!é大") + WHITESPACE + [" "] * 20 + ["\n"] * 4
    counter = EstimatingCounter()
    rng = random.Random(2)
    for text in random_texts(3, 30_000, alphabet):
        assert counter.count(text) == plain_count(text), repr(text)
    for _ in range(20_000):
        texts = list(random_texts(rng.randrange(10**6), rng.randrange(6), alphabet, 12))
        if rng.random() < 0.7:  # mostly single-spaced, as extracted prose is
            texts = [" ".join(t.split()) + rng.choice(["", " ", "\n", "\n\n", "\n" * 5]) for t in texts]
        assert counter.count_each(texts) == [plain_count(t) for t in texts], texts


def test_the_single_space_check_knows_every_whitespace_character():
    others = {c for c in _NOT_SINGLE_SPACED if len(c) == 1}
    assert others == set(WHITESPACE) - {" ", "\n"}


def test_the_ocr_check_still_weighs_replacement_characters(tmp_path):
    doc = pymupdf.open()
    scan = doc.new_page()
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 40, 40), False)
    pixmap.clear_with(200)
    scan.insert_image(scan.rect, pixmap=pixmap)
    doc.new_page().insert_text((72, 72), "typed")
    doc.save(tmp_path / "two.pdf")
    doc = pymupdf.open(tmp_path / "two.pdf")
    scan, typed = doc[0], doc[1]
    assert image_cover(scan) >= MIN_IMAGE_COVER > image_cover(typed)

    def plain(page, text: str) -> bool:
        visible = "".join(text.split())
        if visible and visible.count("\ufffd") < MIN_REPLACEMENT_SHARE * len(visible):
            return False
        return image_cover(page) >= MIN_IMAGE_COVER

    texts = ["", " \n\t", "text", "\ufffd", "\ufffd\ufffd ab", "\ufffd abc", " \ufffd\u00a0\ufffd\ufffd x\n"]
    for page in (scan, typed):
        for text in texts:
            assert needs_ocr(page, text) == plain(page, text), text
    assert [needs_ocr(scan, t) for t in texts] == [True, True, False, True, True, False, True]

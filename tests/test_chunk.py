"""Chunking: budgets, boundaries, overlap, page ranges, streaming."""

from __future__ import annotations

import base64
import random
import re

import pytest

import pdfs
from docutrain_cli.pipeline.chunk import chunk_pages
from docutrain_cli.pipeline.tokens import EstimatingCounter, counter_for, utf8_len

COUNTER = EstimatingCounter()


def book(pages: int = 30, sentences: int = 15) -> list[tuple[int, str]]:
    return [
        (p, f"Chapter {p}.\n\n" + " ".join(pdfs.sentence(p * 1000 + s) for s in range(sentences)))
        for p in range(1, pages + 1)
    ]


def words(text: str) -> list[str]:
    return text.split()


def test_chunks_respect_the_budget_and_are_never_empty():
    chunks = list(chunk_pages(book(), COUNTER, chunk_tokens=120, overlap=20))
    assert len(chunks) > 10
    for c in chunks:
        assert c.content.strip() == c.content and c.content
        assert 0 < c.token_count <= 120
        # The sum of the units' estimates: never below the estimate of the
        # joined text (so never over a limit), and off by at most the stripped
        # whitespace at the chunk's ends.
        assert COUNTER.count(c.content) <= c.token_count <= COUNTER.count(c.content) + 2
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_same_text_gives_the_same_chunks():
    first = list(chunk_pages(book(), COUNTER, chunk_tokens=100, overlap=10))
    again = list(chunk_pages(book(), COUNTER, chunk_tokens=100, overlap=10))
    assert first == again


def test_without_overlap_every_word_appears_once_in_order():
    pages = book(pages=12)
    chunks = list(chunk_pages(pages, COUNTER, chunk_tokens=90, overlap=0))
    assert [w for c in chunks for w in words(c.content)] == [w for _, t in pages for w in words(t)]


def test_overlap_repeats_the_tail_of_the_previous_chunk():
    chunks = list(chunk_pages(book(pages=6), COUNTER, chunk_tokens=100, overlap=25))
    for previous, current in zip(chunks, chunks[1:]):
        shared = 0
        for n in range(1, len(words(current.content)) + 1):
            if words(previous.content)[-n:] == words(current.content)[:n]:
                shared = n
        assert shared > 0, (previous.content[-80:], current.content[:80])
        assert COUNTER.count(" ".join(words(current.content)[:shared])) <= 25


def test_chunks_break_at_sentences_when_they_can():
    chunks = list(chunk_pages(book(), COUNTER, chunk_tokens=150, overlap=0))
    endings = [c.content[-1] for c in chunks]
    assert endings.count(".") == len(endings)


def test_page_ranges_cover_the_pages_the_text_came_from():
    pages = [(p, f"marker{p}start " + "filler words here. " * 30 + f"marker{p}end.") for p in range(1, 9)]
    chunks = list(chunk_pages(pages, COUNTER, chunk_tokens=60, overlap=0))
    for c in chunks:
        found = sorted({int(n) for n in re.findall(r"marker(\d+)", c.content)})
        assert c.page_start <= c.page_end
        if found:
            assert c.page_start <= found[0] and found[-1] <= c.page_end
    assert chunks[0].page_start == 1 and chunks[-1].page_end == 8
    starts = [c.page_start for c in chunks]
    assert starts == sorted(starts)


def test_a_chunk_spanning_pages_reports_both():
    pages = [(1, "Short first page."), (2, "Short second page."), (3, "")]
    [chunk] = chunk_pages(pages, COUNTER, chunk_tokens=100, overlap=10)
    assert (chunk.page_start, chunk.page_end) == (1, 2)
    assert chunk.content == "Short first page.\n\nShort second page."


def test_a_giant_word_is_still_split_and_kept_whole():
    blob = base64.b64encode(random.Random(7).randbytes(60_000)).decode()
    pages = [(1, "Attachment follows: " + blob + " end of attachment.")]
    chunks = list(chunk_pages(pages, COUNTER, chunk_tokens=200, overlap=0))
    assert len(chunks) > 50
    assert all(c.token_count <= 200 for c in chunks)
    joined = "".join(c.content.replace(" ", "") for c in chunks)
    assert blob in joined


def test_estimated_chunks_are_byte_capped_so_they_fit_the_model():
    # CJK text estimated at ~1.5 tokens a character, emoji at 2: with a huge
    # chunk_tokens the byte cap is what keeps chunks under the input limit.
    text = ("合同条款租金每月支付押金将在租期结束时退还" * 400) + " " + ("🙂" * 5000)
    chunks = list(chunk_pages([(1, text)], COUNTER, chunk_tokens=8000, overlap=0, max_input_tokens=8191))
    assert len(chunks) > 2
    for c in chunks:
        assert utf8_len(c.content) <= 8191  # BPE tokens <= bytes: provably within the limit


def test_the_chunker_streams_pages():
    consumed = []

    def pages():
        for number, text in book(pages=200):
            consumed.append(number)
            yield number, text

    stream = chunk_pages(pages(), COUNTER, chunk_tokens=100, overlap=10)
    next(stream)
    assert len(consumed) <= 2  # the first chunk came before the rest was read


def test_empty_and_blank_pages_make_no_chunks():
    assert list(chunk_pages([(1, ""), (2, "   \n\n \f")], COUNTER)) == []


@pytest.mark.parametrize(
    "text",
    [
        "The tenant shall pay the deposit before moving in, and the landlord returns it within thirty days.",
        pdfs.sentence(3) * 20,
    ],
)
def test_the_estimate_is_realistic_for_english(text):
    # cl100k_base gives about one token per 4 characters of English prose.
    ratio = len(text) / COUNTER.count(text)
    assert 3.0 <= ratio <= 5.0


def test_offline_counter_is_used_without_a_cached_tokenizer(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache: no network attempt
    counter_for.cache_clear()
    try:
        counter = counter_for("text-embedding-3-small")
        assert counter.exact is False and counter.count("hello world") >= 2
    finally:
        counter_for.cache_clear()


# -- structure -----------------------------------------------------------------

ROW = "| Item {n} | a sturdy oak table with four legs, a drawer and brass handles | {n}0 EUR |"


def test_table_rows_and_headings_are_not_split_mid_line():
    text = "# Price list\n\n" + "\n".join(ROW.format(n=n) for n in range(60))
    chunker_sentence_max = max(20 // 2, 120 // 8)
    assert COUNTER.count(ROW.format(n=1)) > chunker_sentence_max  # would be cut word by word
    chunks = list(chunk_pages([(1, text)], COUNTER, chunk_tokens=120, overlap=20))
    assert len(chunks) > 5
    for c in chunks:
        for line in filter(None, c.content.splitlines()):
            assert line == "# Price list" or (line.startswith("| Item ") and line.endswith(" EUR |")), line
    rows = [line for c in chunks for line in c.content.splitlines() if line.startswith("|")]
    assert sorted(set(rows)) == sorted(ROW.format(n=n) for n in range(60))


def test_csv_rows_stay_whole(tmp_path):
    import docs
    from docutrain_cli.pipeline.extract import Extraction

    with Extraction(docs.spreadsheet(tmp_path / "orders.csv", rows=120)) as doc:
        chunks = list(chunk_pages(doc.pages(), COUNTER, chunk_tokens=64, overlap=8))
    assert len(chunks) > 10
    for c in chunks:
        for line in filter(None, c.content.splitlines()):  # pages end in a blank line
            assert re.fullmatch(r"customer: Customer \d+; city: (London|Paris); note: order \d+, paid", line), line


def handbook(sections: int = 6) -> str:
    parts = [
        f"## Section {s}\n\n" + " ".join(pdfs.sentence(s * 10 + i) for i in range(4))
        for s in range(1, sections + 1)
    ]
    return "# Handbook\n\nHow we work.\n\n" + "\n\n".join(parts)


def test_chunks_end_before_headings_not_after_them():
    chunks = list(chunk_pages([(1, handbook())], COUNTER, chunk_tokens=150, overlap=0))
    assert len(chunks) >= 3
    for c in chunks:
        assert not c.content.splitlines()[-1].startswith("#"), c.content
    for c in chunks[1:]:
        assert c.content.startswith("## Section "), c.content


def test_a_chunk_records_the_heading_path_it_falls_under():
    chunks = list(chunk_pages([(1, handbook())], COUNTER, chunk_tokens=150, overlap=0))
    assert chunks[0].heading == "Handbook"
    for c in chunks[1:]:
        section = re.match(r"## (Section \d+)", c.content).group(1)
        assert c.heading == f"Handbook > {section}"
    # A heading of the same or a higher level closes the ones below it; the
    # path carries across pages.
    pages = [(1, "# A\n\n## B\n\nText under b."), (2, "# C\n\nText under c.")]
    small = list(chunk_pages(pages, COUNTER, chunk_tokens=16, overlap=0))
    assert [(c.content, c.heading) for c in small] == [
        ("# A\n\n## B\n\nText under b.", "A > B"),  # the path of its first text
        ("# C\n\nText under c.", "C"),
    ]
    # Text without headings has none.
    assert {c.heading for c in chunk_pages(book(pages=2), COUNTER, chunk_tokens=100)} == {None}


def test_a_pdf_outline_gives_chunks_their_heading(tmp_path):
    import pymupdf

    from docutrain_cli.pipeline.extract import Extraction

    path = pdfs.multi_page(tmp_path / "plain.pdf", pages=4, sentences_per_page=6)
    doc = pymupdf.open(path)
    doc.set_toc([[1, "Introduction", 1], [1, "Terms", 2], [2, "Payment", 3], [2, "Notice", 3]])
    doc.save(tmp_path / "outlined.pdf")
    doc.close()
    with Extraction(tmp_path / "outlined.pdf") as pdf:
        chunks = list(chunk_pages(pdf.pages(), COUNTER, chunk_tokens=60, overlap=0, page_headings=pdf.page_headings()))
    by_page = {c.page_start: c.heading for c in chunks}
    # The last bookmark on a page is the one its text falls under, from that page on.
    assert by_page == {1: "Introduction", 2: "Terms", 3: "Terms > Notice", 4: "Terms > Notice"}
    with Extraction(path) as pdf:
        assert pdf.page_headings() is None  # no outline, no headings

"""Token-bounded chunks with overlap, keeping page numbers.

Pages stream in; chunks stream out. Text is cut into small units (sentences,
or words when a sentence is long, or fixed slices when a single "word" is
huge, such as a base64 blob), each tagged with how good a place its end is to
break: paragraph > sentence > word > anywhere. Units are packed until the next
one would overflow the budget; the chunk then ends at the best break that
keeps it at least half full, and the last few units (up to `overlap` tokens)
start the next chunk as well. Pages are read in batches of up to 16 (growing
from one, so the first chunks come after the first page), whose pieces are
counted together; only the text of a batch and the units of the chunk being
built and of the page being packed are held (and up to a few hundred packed
ones, let go of in bulk), never the whole document. A page's units are
parallel lists, packed by bisecting running sums (pipeline/packing.py): no
object per unit.

Structure, where the text has it (Markdown, which the Word, HTML and
PowerPoint readers write): a heading (`## Terms`), a table row (`| a | b |`)
or any line that is a single sentence (a CSV row) is one unit when it fits
half a chunk, so it is not split mid-line; the
place just before a heading is the best break of all, and the place just
after one the worst; and each chunk records the heading path it falls under
("Lease > Rent"), which costs a small stack of the headings seen.

Every unit fits the budget on its own, so every chunk is non-empty and within
it. With an inexact (estimating) counter each chunk is also capped at
`max_input_tokens` UTF-8 bytes, which bounds its real token count too.
"""

from __future__ import annotations

import re
from itertools import compress, repeat
from operator import contains
from typing import Callable, Iterable, Iterator

from docutrain_cli.pipeline.packing import ANYWHERE, PARAGRAPH, SENTENCE, WORD, Chunk, Packer, Units
from docutrain_cli.pipeline.tokens import TokenCounter, utf8_len

__all__ = ["Chunk", "Chunker", "chunk_pages", "normalize_text"]


# A page is cut into pieces in one regex pass (issue 24): a piece ends at
# the first sentence end (. ! or ? with any closing quotes or brackets, then
# whitespace; or 。！？) or line end, whichever comes first, and takes the
# whitespace after it. A piece whose whitespace holds a newline ends its
# line, one holding a blank line (spaces or tabs at most) its paragraph.
# These are the pieces that cutting the text into paragraphs, then lines,
# then sentences would give (tests/test_chunk_split.py), found by a pattern
# spelt out so that the regex engine walks ordinary characters in a tight
# loop: several times faster than a lazy `.*?` per paragraph, line and
# sentence.
_CLOSERS = r"[\"'”’)\]]"
_PIECES = re.compile(
    rf"[^.!?。！？\n]*(?:[.!?](?!{_CLOSERS}*\s)[^.!?。！？\n]*)*"
    rf"(?:[.!?]{_CLOSERS}*\s+|[。！？]\s*|\n\s*)|(?s:.+)"
)
_PARAGRAPH_END = re.compile(r"\n[ \t]*\n")
_HEADING_LINE = re.compile(r"(#{1,6})[ \t]+(\S.*?)[ \t#]*\s*\Z")
_TABLE_ROW = re.compile(r"\|.*\|\s*\Z")
_WORD = re.compile(r"\S+\s*")
_TRAILING_SPACES = re.compile(r"[ \t\u00a0]+\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """Tidy extracted text without changing its words. The one place NUL
    characters go: PDFs and .txt uploads both carry them, and Postgres text
    (Supabase) refuses a request holding one. Every page passes here."""
    # Each replacement and regex only where it can match: a substring test
    # costs far less, and one of a single character (a memchr) least of all.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    if " \n" in text or ("\t" in text and "\t\n" in text) or ("\u00a0" in text and "\u00a0\n" in text):
        text = _TRAILING_SPACES.sub("\n", text)
    return _MANY_NEWLINES.sub("\n\n", text) if "\n\n\n" in text else text


class Chunker:
    def __init__(
        self,
        counter: TokenCounter,
        *,
        chunk_tokens: int = 800,
        overlap: int = 100,
        max_input_tokens: int = 8191,
        page_headings: Callable[[int], str | None] | None = None,
    ) -> None:
        if chunk_tokens < 1 or max_input_tokens < 1:
            raise ValueError("chunk_tokens and max_input_tokens must be positive")
        self.counter = counter
        self.max_input_tokens = max_input_tokens
        self.budget = min(chunk_tokens, max_input_tokens)
        # An estimate is not a proof: cap bytes too (BPE tokens <= UTF-8 bytes).
        self.byte_cap = float("inf") if counter.exact else max_input_tokens
        self.overlap = max(0, min(overlap, (self.budget - 1) // 2))
        # Long sentences become word units so breaks and overlap stay fine-grained.
        self.sentence_max = max(self.overlap // 2, self.budget // 8, 1)
        # A slice of this many characters fits any budget: a character is <= 4 bytes.
        self.slice_chars = max(1, int(min(self.budget, self.byte_cap)) // 4)
        self._headings: list[tuple[int, str]] = []  # (level, title) of the headings in effect
        # Headings known from outside the text (a PDF's outline), by page;
        # headings in the text itself take precedence.
        self._page_headings = page_headings
        self._heading_changes = 0
        self._path_key: tuple[int, int] | None = None
        self._path: str | None = None

    # -- units ----------------------------------------------------------------

    def _fits(self, tokens: int, nbytes: int) -> bool:
        return tokens <= self.budget and nbytes <= self.byte_cap

    def _add(self, units: Units, text: str, page: int, strength: int, head: bool = False) -> None:
        units.add(text, self.counter.count(text), utf8_len(text), strength, self._heading_path(page), head)

    def _heading_path(self, page: int) -> str | None:
        # Asked for every unit: made again only when the headings or the page change.
        key = (self._heading_changes, page)
        if key != self._path_key:
            if self._headings:
                self._path = " > ".join(title for _, title in self._headings)
            else:
                self._path = self._page_headings(page) if self._page_headings else None
            self._path_key = key
        return self._path

    def units(self, page: int, text: str, pieces: list[str], counts: list[int]) -> Units:
        """The units of a page's text (normalized, ending a paragraph), cut into pieces and counted."""
        nbytes = list(map(len, pieces)) if text.isascii() else list(map(utf8_len, pieces))
        if "#" in text or "|" in text:  # perhaps headings or table rows
            return self._structured_units(page, pieces, counts, nbytes)
        return self._prose_units(page, pieces, counts, nbytes)

    def _prose_units(self, page: int, pieces: list[str], counts: list[int], nbytes: list[int]) -> Units:
        """Every piece is a sentence unit unless it is too long. After
        normalize_text no space or tab ends a line, so a piece ends its
        paragraph exactly when it holds a blank line, "\n\n"."""
        n = len(pieces)
        strengths = [SENTENCE] * n
        for i in compress(range(n), map(contains, pieces, repeat("\n\n"))):
            strengths[i] = PARAGRAPH
        path = self._heading_path(page)
        units = Units(pieces, counts, nbytes, strengths, [path] * n, [False] * n)
        # Below both limits no piece is too long (the common case); above
        # them, each piece is weighed as _structured_units weighs it.
        shortest_limit = min(self.budget // 2, self.sentence_max)
        if max(counts) <= shortest_limit and max(nbytes) <= self.byte_cap:
            return units
        suspects = set(compress(range(n), map(shortest_limit.__lt__, counts)))
        if self.byte_cap != float("inf"):
            suspects.update(compress(range(n), map(self.byte_cap.__lt__, nbytes)))
        kept, done = Units(), 0
        for i in sorted(suspects):
            line_start = i == 0 or "\n" in pieces[i - 1]
            if counts[i] <= self._sentence_limit(line_start, pieces[i]) and nbytes[i] <= self.byte_cap:
                continue
            kept.extend(units, done, i)
            self._words(kept, pieces[i], page, strengths[i])
            done = i + 1
        kept.extend(units, done, n)
        return kept

    def _sentence_limit(self, line_start: bool, piece: str) -> int:
        # A line that is one sentence (a CSV row, a list item) stays
        # whole up to half a chunk; longer prose goes word by word.
        return self.budget // 2 if line_start and "\n" in piece else self.sentence_max

    def _structured_units(self, page: int, pieces: list[str], counts: list[int], nbytes: list[int]) -> Units:
        units = Units()
        byte_cap = self.byte_cap
        line_start = True
        i = 0
        while i < len(pieces):
            piece = pieces[i]
            i += 1
            if line_start and piece[0] in "#|":  # perhaps a heading or a table row
                end = i - 1
                while "\n" not in pieces[end]:
                    end += 1
                if self._structured_line(units, "".join(pieces[i - 1 : end + 1]), page):
                    i = end + 1
                    continue
            newlines = piece.count("\n")
            strength = PARAGRAPH if newlines > 1 and _PARAGRAPH_END.search(piece) else SENTENCE
            limit = self._sentence_limit(line_start, piece)
            line_start = newlines > 0
            if counts[i - 1] <= limit and nbytes[i - 1] <= byte_cap:
                units.add(piece, counts[i - 1], nbytes[i - 1], strength, self._heading_path(page))
            else:
                self._words(units, piece, page, strength)
        return units

    def _structured_line(self, units: Units, line: str, page: int) -> bool:
        """A heading or a table row is whole when it fits half a chunk: one
        cut in two means nothing in either half. After a heading is the
        worst place to break; after a row, a line end. False for other lines."""
        heading = _HEADING_LINE.match(line)
        if heading:
            self._enter_heading(len(heading.group(1)), heading.group(2))
        elif not _TABLE_ROW.match(line):
            return False
        last_line = line.count("\n") > 1 and _PARAGRAPH_END.search(line) is not None
        strength = WORD if heading else (PARAGRAPH if last_line else SENTENCE)
        tokens, nbytes = self.counter.count(line), utf8_len(line)
        if tokens <= self.budget // 2 and nbytes <= self.byte_cap:
            units.add(line, tokens, nbytes, strength, self._heading_path(page), head=bool(heading))
        else:
            self._words(units, line, page, strength)
        return True

    def _enter_heading(self, level: int, title: str) -> None:
        self._heading_changes += 1
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, title))

    def _words(self, units: Units, sentence: str, page: int, strength: int) -> None:
        words = _WORD.findall(sentence)
        for i, word in enumerate(words):
            word_strength = strength if i == len(words) - 1 else WORD
            tokens, nbytes = self.counter.count(word), utf8_len(word)
            if self._fits(tokens, nbytes):
                units.add(word, tokens, nbytes, word_strength, self._heading_path(page))
                continue
            step = self.slice_chars
            for start in range(0, len(word), step):
                last = start + step >= len(word)
                self._add(units, word[start : start + step], page, word_strength if last else ANYWHERE)

    # -- packing --------------------------------------------------------------

    def chunks(self, pages: Iterable[tuple[int, str]]) -> Iterator[Chunk]:
        packer = Packer(
            self.budget,
            self.byte_cap,
            self.overlap,
            self.max_input_tokens,
            # An exact tokenizer may merge across unit edges, so count the text
            # again. The estimator's count of joined text never exceeds the sum of
            # its parts, so that sum is a safe count that costs no second pass.
            self.counter.count if self.counter.exact else None,
        )
        for batch in _batches(pages):
            counts = self.counter.count_each([piece for _, _, pieces in batch for piece in pieces])
            done = 0
            for page, text, pieces in batch:
                units = self.units(page, text, pieces, counts[done : done + len(pieces)])
                done += len(pieces)
                if units:
                    yield from packer.add(page, units)
        yield from packer.finish()


# Pages are counted a batch at a time, the estimator's count costing less
# per word over many pages (tokens.py). Taking the pages a batch at a time
# also lets MuPDF and the chunker take turns less often (process_job used to
# read ahead 64 pages for that alone). The batches grow from one page, so
# the first chunks still come after the first page, and stay small enough
# that memory does not grow with the document.
_BATCH_PAGES = 16
_BATCH_CHARS = 1 << 16


def _batches(pages: Iterable[tuple[int, str]]) -> Iterator[list[tuple[int, str, list[str]]]]:
    """Each page with text as (number, text, pieces), a batch at a time."""
    batch: list[tuple[int, str, list[str]]] = []
    size = 1
    chars = 0
    for page, text in pages:
        text = normalize_text(text).strip()
        if text:
            text += "\n\n"  # a page ends a paragraph
            batch.append((page, text, _PIECES.findall(text)))
            chars += len(text)
        if len(batch) >= size or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
            size = min(2 * size, _BATCH_PAGES)
    if batch:
        yield batch


def chunk_pages(
    pages: Iterable[tuple[int, str]],
    counter: TokenCounter,
    *,
    chunk_tokens: int = 800,
    overlap: int = 100,
    max_input_tokens: int = 8191,
    page_headings: Callable[[int], str | None] | None = None,
) -> Iterator[Chunk]:
    """Stream chunks from (page_number, text) pairs; `page_headings` gives
    the heading path of a page when the text itself has no headings."""
    return Chunker(
        counter,
        chunk_tokens=chunk_tokens,
        overlap=overlap,
        max_input_tokens=max_input_tokens,
        page_headings=page_headings,
    ).chunks(pages)

"""Frozen reference: the chunker as it was before issue 24's packing rewrite
(main at 78c7dd7, docutrain_cli/pipeline/chunk.py). tests/test_chunk_reference.py
compares the chunker with it. One change: a page's pieces are counted one by
one with counter.count rather than count_each, so the reference does not lean
on the fast counting (tests/test_chunk_split.py holds the two equal). Do not
edit it to follow the chunker: it is the behaviour that must not change.

The original docstring follows.

Token-bounded chunks with overlap, keeping page numbers.

Pages stream in; chunks stream out. Text is cut into small units (sentences,
or words when a sentence is long, or fixed slices when a single "word" is
huge, such as a base64 blob), each tagged with how good a place its end is to
break: paragraph > sentence > word > anywhere. Units are packed until the next
one would overflow the budget; the chunk then ends at the best break that
keeps it at least half full, and the last few units (up to `overlap` tokens)
start the next chunk as well. Only the units of the chunk being built are
held, never the whole document.

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

import dataclasses
import operator
import re
from typing import Callable, Iterable, Iterator, NamedTuple

from docutrain_cli.pipeline.tokens import TokenCounter, utf8_len

HEADING, PARAGRAPH, SENTENCE, WORD, ANYWHERE = 4, 3, 2, 1, 0



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


@dataclasses.dataclass(frozen=True)
class Chunk:
    index: int
    page_start: int
    page_end: int
    token_count: int
    content: str
    heading: str | None = None  # the heading path it falls under: "Lease > Rent"


class _Unit(NamedTuple):  # a tuple: made once per sentence or word, so cheap to make
    text: str
    tokens: int
    nbytes: int
    page: int
    strength: int  # how good a break the end of this unit is
    heading: str | None = None  # the heading path in effect here
    is_heading: bool = False


_TEXT, _TOKENS, _BYTES = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)  # of a _Unit


def normalize_text(text: str) -> str:
    """Tidy extracted text without changing its words. The one place NUL
    characters go: PDFs and .txt uploads both carry them, and Postgres text
    (Supabase) refuses a request holding one. Every page passes here."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    # Each regex only where it can match: a substring test costs far less.
    if " \n" in text or "\t\n" in text or "\u00a0\n" in text:
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

    def _unit(self, text: str, page: int, strength: int) -> _Unit:
        return _Unit(text, self.counter.count(text), utf8_len(text), page, strength, self._heading_path(page))

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

    def units(self, page: int, text: str) -> Iterator[_Unit]:
        text = normalize_text(text).strip()
        if not text:
            return
        text += "\n\n"  # a page ends a paragraph
        pieces = _PIECES.findall(text)
        counts = list(map(self.counter.count, pieces))
        byte_cap, make = self.byte_cap, _Unit._make  # _make: half the cost of a call
        half, sentence_max = self.budget // 2, self.sentence_max
        path = self._heading_path(page)
        line_start = True
        i = 0
        while i < len(pieces):
            piece = pieces[i]
            i += 1
            if line_start and piece[0] in "#|":  # perhaps a heading or a table row
                end = i - 1
                while "\n" not in pieces[end]:
                    end += 1
                line = self._structured_line("".join(pieces[i - 1 : end + 1]), page)
                if line is not None:
                    yield from line
                    i = end + 1
                    path = self._heading_path(page)
                    continue
            newlines = piece.count("\n")
            strength = PARAGRAPH if newlines > 1 and _PARAGRAPH_END.search(piece) else SENTENCE
            # A line that is one sentence (a CSV row, a list item) stays
            # whole up to half a chunk; longer prose goes word by word.
            limit = half if line_start and newlines else sentence_max
            line_start = newlines > 0
            tokens = counts[i - 1]
            nbytes = len(piece) if piece.isascii() else utf8_len(piece)
            if tokens <= limit and nbytes <= byte_cap:
                yield make((piece, tokens, nbytes, page, strength, path, False))
            else:
                yield from self._words(piece, page, strength)

    def _structured_line(self, line: str, page: int) -> list[_Unit] | None:
        """A heading or a table row is whole when it fits half a chunk: one
        cut in two means nothing in either half. After a heading is the
        worst place to break; after a row, a line end. None for other lines."""
        heading = _HEADING_LINE.match(line)
        if heading:
            self._enter_heading(len(heading.group(1)), heading.group(2))
        elif not _TABLE_ROW.match(line):
            return None
        last_line = line.count("\n") > 1 and _PARAGRAPH_END.search(line) is not None
        strength = WORD if heading else (PARAGRAPH if last_line else SENTENCE)
        unit = self._unit(line, page, strength)
        if unit.tokens <= self.budget // 2 and unit.nbytes <= self.byte_cap:
            return [unit._replace(is_heading=bool(heading))]
        return list(self._words(line, page, strength))

    def _enter_heading(self, level: int, title: str) -> None:
        self._heading_changes += 1
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, title))

    def _words(self, sentence: str, page: int, strength: int) -> Iterator[_Unit]:
        words = _WORD.findall(sentence)
        for i, word in enumerate(words):
            word_strength = strength if i == len(words) - 1 else WORD
            unit = self._unit(word, page, word_strength)
            if self._fits(unit.tokens, unit.nbytes):
                yield unit
                continue
            step = self.slice_chars
            for start in range(0, len(word), step):
                piece = word[start : start + step]
                last = start + step >= len(word)
                yield self._unit(piece, page, word_strength if last else ANYWHERE)

    # -- packing --------------------------------------------------------------

    def chunks(self, pages: Iterable[tuple[int, str]]) -> Iterator[Chunk]:
        buf: list[_Unit] = []
        fresh = 0  # buf[:fresh] repeats the previous chunk's tail (overlap)
        tokens = nbytes = 0
        index = 0

        def emit(final: bool) -> Chunk | None:
            nonlocal buf, fresh, tokens, nbytes, index
            k = len(buf) if final else self._cut(buf, fresh)
            body = buf[:k]
            # The heading path of the chunk's own first text (not of the overlap
            # it repeats, nor only of the headings it starts with).
            own = body[min(fresh, k - 1) :]
            heading = next((u.heading for u in own if not u.is_heading), own[0].heading)
            tail: list[_Unit] = []
            if not final:
                budget = self.overlap
                for unit in reversed(body):
                    if unit.tokens > budget:
                        break
                    tail.insert(0, unit)
                    budget -= unit.tokens
            buf = tail + buf[k:]
            fresh = len(tail)
            tokens = sum(map(_TOKENS, buf))
            nbytes = sum(map(_BYTES, buf))
            content = "".join(map(_TEXT, body)).strip()
            if not content:
                return None
            chunk = Chunk(index, body[0].page, body[-1].page, self._count_joined(body, content), content, heading)
            index += 1
            return chunk

        budget, byte_cap = self.budget, self.byte_cap
        for page, text in pages:
            for unit in self.units(page, text):
                _, unit_tokens, unit_bytes, _, _, _, is_heading = unit
                if is_heading and len(buf) > fresh and not buf[-1].is_heading:
                    # Just before a heading (or a run of them) is the best place to end a chunk.
                    buf[-1] = buf[-1]._replace(strength=HEADING)
                while buf and (tokens + unit_tokens > budget or nbytes + unit_bytes > byte_cap):
                    if fresh == len(buf):  # only overlap left: give some up
                        dropped = buf.pop(0)
                        fresh -= 1
                        tokens -= dropped.tokens
                        nbytes -= dropped.nbytes
                        continue
                    chunk = emit(final=False)
                    if chunk is not None:
                        yield from self._within_limit(chunk)
                buf.append(unit)
                tokens += unit_tokens
                nbytes += unit_bytes
        if fresh < len(buf):
            chunk = emit(final=True)
            if chunk is not None:
                yield from self._within_limit(chunk)

    def _count_joined(self, body: list[_Unit], content: str) -> int:
        # An exact tokenizer may merge across unit edges, so count the text
        # again. The estimator's count of joined text never exceeds the sum of
        # its parts, so that sum is a safe count that costs no second pass.
        if self.counter.exact:
            return self.counter.count(content)
        return sum(map(_TOKENS, body))

    def _cut(self, buf: list[_Unit], fresh: int) -> int:
        """How many units the next chunk takes: the strongest break that keeps
        it at least half full (the latest one among equals); if no break gets
        there, all fresh units."""
        half = self.budget / 2
        best_k, best_strength = len(buf), -1
        running = 0
        for k, unit in enumerate(buf, start=1):
            running += unit.tokens
            if k <= fresh or running < half:
                continue
            if unit.strength >= best_strength:
                best_k, best_strength = k, unit.strength
        return best_k

    def _within_limit(self, chunk: Chunk) -> Iterator[Chunk]:
        # An exact tokenizer may merge across unit edges; this never fires with
        # the estimator, whose counts only shrink when units are joined.
        if chunk.token_count <= self.max_input_tokens:
            yield chunk
            return
        raise ValueError(
            f"chunk {chunk.index} has {chunk.token_count} tokens, over the "
            f"{self.max_input_tokens}-token limit; lower chunk_tokens"
        )


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

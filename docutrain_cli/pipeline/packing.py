"""Packing units into chunks: the second half of pipeline/chunk.py.

Units are held as parallel lists (text, tokens, bytes, ...), not one object
each, and the packer keeps running sums of tokens and bytes beside them. So
where the next chunk overflows, where it is best cut (the strongest break
that keeps it at least half full) and which units its overlap repeats are
each found by bisecting a running sum, not by walking the units in Python:
a chunk of a few dozen units costs a few list operations (issue 24).
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Callable, Iterator

HEADING, PARAGRAPH, SENTENCE, WORD, ANYWHERE = 4, 3, 2, 1, 0

# Packed units are dropped from the front of the lists in bulk, not page by
# page: each drop moves what remains.
_SPENT_KEPT = 256


@dataclasses.dataclass(frozen=True)
class Chunk:
    index: int
    page_start: int
    page_end: int
    token_count: int
    content: str
    heading: str | None = None  # the heading path it falls under: "Lease > Rent"


class Units:
    """A page's units, in order, as parallel lists."""

    __slots__ = ("texts", "tokens", "nbytes", "strengths", "headings", "heads")

    def __init__(self, texts=None, tokens=None, nbytes=None, strengths=None, headings=None, heads=None) -> None:
        self.texts: list[str] = texts if texts is not None else []
        self.tokens: list[int] = tokens if tokens is not None else []
        self.nbytes: list[int] = nbytes if nbytes is not None else []
        self.strengths: list[int] = strengths if strengths is not None else []  # how good a break each end is
        self.headings: list[str | None] = headings if headings is not None else []  # heading path in effect
        self.heads: list[bool] = heads if heads is not None else []  # is the unit a heading line

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, tokens: int, nbytes: int, strength: int, heading: str | None, head: bool = False) -> None:
        if head and self.heads and not self.heads[-1]:
            # Just before a heading (or a run of them) is the best place to end a chunk.
            self.strengths[-1] = HEADING
        self.texts.append(text)
        self.tokens.append(tokens)
        self.nbytes.append(nbytes)
        self.strengths.append(strength)
        self.headings.append(heading)
        self.heads.append(head)

    def extend(self, other: "Units", start: int, stop: int) -> None:
        """Adds other's units [start, stop), none of them a heading line."""
        for mine, theirs in zip(self.columns(), other.columns()):
            mine += theirs[start:stop]

    def columns(self) -> tuple[list, ...]:
        return self.texts, self.tokens, self.nbytes, self.strengths, self.headings, self.heads


class Packer:
    """Packs units, page by page, into chunks of at most `budget` tokens and
    `byte_cap` bytes. The chunk being built holds units [start, j) of `held`,
    j being the next unit of the page to pack: [start, fresh) repeats the
    previous chunk's tail (overlap), [fresh, j) is new. Units before `start`
    are let go of a few hundred at a time."""

    def __init__(
        self,
        budget: int,
        byte_cap: float,
        overlap: int,
        max_input_tokens: int,
        recount: Callable[[str], int] | None,
    ) -> None:
        self.budget, self.byte_cap, self.overlap = budget, byte_cap, overlap
        self.max_input_tokens = max_input_tokens
        self.recount = recount  # an exact counter's count of a chunk's joined text
        self.capped = byte_cap != float("inf")
        self.half = (budget + 1) // 2  # tokens >= budget / 2, for whole tokens
        self.held = Units()
        self.pages: list[int] = []
        # Running sums: sum_tokens[i] is the tokens of the units before held
        # unit i (of those still held, plus those let go: only differences count).
        self.sum_tokens, self.sum_bytes = [0], [0]  # sum_bytes only with a finite byte_cap
        self.start = self.fresh = 0
        self.index = 0

    def add(self, page: int, units: Units) -> Iterator[Chunk]:
        held = self.held
        if self.start > _SPENT_KEPT:  # let go of units no chunk will take again
            drop = self.start
            for column in (*held.columns(), self.pages, self.sum_tokens, *([self.sum_bytes] if self.capped else [])):
                del column[:drop]
            self.start, self.fresh = 0, self.fresh - drop
        if units.heads[0] and held.heads and not held.heads[-1]:
            held.strengths[-1] = HEADING  # the page starts with a heading
        j = len(held)
        for mine, theirs in zip(held.columns(), units.columns()):
            mine += theirs
        self.pages += [page] * len(units)
        sum_tokens, sum_bytes = self.sum_tokens, self.sum_bytes
        sum_tokens += accumulate(units.tokens, initial=sum_tokens.pop())
        capped = self.capped
        if capped:
            sum_bytes += accumulate(units.nbytes, initial=sum_bytes.pop())
        end = len(held)
        budget, byte_cap = self.budget, self.byte_cap
        while j < end:
            # The first unit that does not fit beside the units held before it.
            over = bisect_right(sum_tokens, sum_tokens[self.start] + budget, j + 1, end + 1) - 1
            if capped:
                over = min(over, bisect_right(sum_bytes, sum_bytes[self.start] + byte_cap, j + 1, end + 1) - 1)
            if over == end:
                break
            while self.start < over and (
                sum_tokens[over + 1] - sum_tokens[self.start] > budget
                or (capped and sum_bytes[over + 1] - sum_bytes[self.start] > byte_cap)
            ):
                if self.fresh == over:  # only overlap left: give some up
                    self.start += 1
                    continue
                chunk = self._emit(over, final=False)
                if chunk is not None:
                    yield chunk
            j = over + 1

    def finish(self) -> Iterator[Chunk]:
        if self.fresh < len(self.held):
            chunk = self._emit(len(self.held), final=True)
            if chunk is not None:
                yield chunk

    def _emit(self, end: int, final: bool) -> Chunk | None:
        """The chunk of the held units before `end` (where the next unit
        overflows, or the document ends); keeps its overlap tail held."""
        held, sum_tokens, start = self.held, self.sum_tokens, self.start
        cut = end if final else self._cut(end)
        # The heading path of the chunk's own first text (not of the overlap
        # it repeats, nor only of the headings it starts with).
        own = min(self.fresh, cut - 1)
        try:
            heading = held.headings[held.heads.index(False, own, cut)]
        except ValueError:
            heading = held.headings[own]
        # The tail: the most units at the end that fit the overlap together.
        self.start = cut if final else bisect_left(sum_tokens, sum_tokens[cut] - self.overlap, start, cut)
        self.fresh = cut
        content = "".join(held.texts[start:cut]).strip()
        if not content:
            return None
        tokens = self.recount(content) if self.recount else sum_tokens[cut] - sum_tokens[start]
        if tokens > self.max_input_tokens:
            # An exact tokenizer may merge across unit edges; this never fires with
            # the estimator, whose counts only shrink when units are joined.
            raise ValueError(
                f"chunk {self.index} has {tokens} tokens, over the "
                f"{self.max_input_tokens}-token limit; lower chunk_tokens"
            )
        chunk = Chunk(self.index, self.pages[start], self.pages[cut - 1], tokens, content, heading)
        self.index += 1
        return chunk

    def _cut(self, end: int) -> int:
        """Where the next chunk ends (the index after its last unit): at the
        strongest break that keeps it at least half full, the latest one
        among equals; if no break gets there, after all fresh units."""
        sum_tokens = self.sum_tokens
        half_full = bisect_left(sum_tokens, sum_tokens[self.start] + self.half, self.start + 1, end + 1)
        first = max(self.fresh + 1, half_full)  # the first place the chunk may end
        if first > end:
            return end
        strengths = self.held.strengths[first - 1 : end]
        best = max(strengths)
        strengths.reverse()
        return end - strengths.index(best)

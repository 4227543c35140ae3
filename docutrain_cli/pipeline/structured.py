"""Structured documents (Word, HTML) as pages of Markdown-like text.

Readers turn a document into blocks: headings, paragraphs, list items and
table rows. Written out as Markdown (`## Heading`, `- item`, `| a | b |`),
the structure survives in plain text: the chunker knows a heading or a table
row when it sees one (pipeline/chunk.py), and so does the model that reads
the chunk later. These formats have no printed pages, so a "page" is a
section: a new one starts at each heading of the document's top level (the
smallest level it uses), and page numbers point at sections.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Iterator

HEADING, PARAGRAPH, ITEM, ROW = "heading", "paragraph", "item", "row"
# A section longer than this many characters is cut at a block edge, so one
# huge heading-less document does not become one huge "page".
MAX_SECTION_CHARS = 20_000

_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


class ParsedPages:
    """A reader whose pages were parsed up front (the libraries load the whole
    document anyway): `page_count`, `pages()`, `close()`."""

    pages_text: list[str]

    @property
    def page_count(self) -> int:
        return len(self.pages_text)

    def pages(self) -> Iterator[tuple[int, str]]:
        for number, text in enumerate(self.pages_text, start=1):
            yield number, text

    def close(self) -> None:
        self.pages_text = []


@dataclasses.dataclass(frozen=True)
class Block:
    kind: str  # heading | paragraph | item | row
    text: str
    level: int = 0  # heading level, 1 = top

    def markdown(self) -> str:
        if self.kind == HEADING:
            return "#" * min(max(self.level, 1), 6) + " " + self.text
        if self.kind == ITEM:
            return "- " + self.text
        return self.text


def clean(text: str) -> str:
    """One line: whitespace runs become one space."""
    return _SPACES.sub(" ", text.replace("\n", " ")).strip()


def row(cells: Iterable[str]) -> Block:
    """A table row as a Markdown row; cells lose their pipes and line breaks."""
    values = [clean(c).replace("|", "/") for c in cells]
    return Block(ROW, "| " + " | ".join(values) + " |")


def sections(blocks: list[Block]) -> list[str]:
    """Pages of Markdown text: a new page at each top-level heading."""
    levels = [b.level for b in blocks if b.kind == HEADING]
    top = min(levels) if levels else None
    pages: list[list[Block]] = [[]]
    size = 0
    for block in blocks:
        if not block.text:
            continue
        starts_section = block.kind == HEADING and block.level == top
        if pages[-1] and (starts_section or size >= MAX_SECTION_CHARS):
            pages.append([])
            size = 0
        pages[-1].append(block)
        size += len(block.text)
    return [_join(page) for page in pages if page]


def _join(blocks: list[Block]) -> str:
    # Rows of one table, and items of one list, stay on adjacent lines;
    # everything else is a paragraph of its own.
    text = blocks[0].markdown()
    for before, block in zip(blocks, blocks[1:]):
        same_run = block.kind == before.kind and block.kind in (ROW, ITEM)
        text += ("\n" if same_run else "\n\n") + block.markdown()
    return text


def outline_paths(entries: list[tuple[int, str, int]]) -> list[tuple[int, str]]:
    """A document outline [(level, title, page), ...] (PDF bookmarks) as
    [(page, heading path in effect from that page on), ...], by page."""
    stack: list[tuple[int, str]] = []
    paths: list[tuple[int, str]] = []
    for level, title, page in sorted(entries, key=lambda e: e[2]):
        title = clean(title)
        if not title or page < 1:
            continue
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        path = " > ".join(t for _, t in stack)
        if paths and paths[-1][0] == page:
            paths[-1] = (page, path)  # the last entry on a page wins
        else:
            paths.append((page, path))
    return paths

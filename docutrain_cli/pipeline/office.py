"""Word (.docx) and PowerPoint (.pptx) documents, with python-docx and python-pptx.

Both are zip files of XML that the libraries load whole, so a reader parses
the document once when opened (a corrupt file fails there, with a reason
naming the type) and keeps its pages as text.

- DOCX: paragraphs, headings and tables in document order; a page is a
  section under a top-level heading (Word files carry no page layout).
- PPTX: a page is a slide: its title, its text boxes and tables in reading
  order (top to bottom, left to right), then its speaker notes.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Iterator

from docutrain_cli.errors import PermanentError, one_line
from docutrain_cli.pipeline.structured import HEADING, ITEM, PARAGRAPH, Block, ParsedPages, clean, row, sections

# What another Office file is, by its main part's content type.
PACKAGE_KINDS = {"wordprocessingml": "a Word", "presentationml": "a PowerPoint", "spreadsheetml": "an Excel"}


def _open_failure(kind: str, path: Path, exc: Exception) -> PermanentError:
    """One line naming the type and what is wrong with the file."""
    if not zipfile.is_zipfile(path):
        if _starts_like_zip(path):  # e.g. an upload cut short
            return PermanentError(f"damaged {kind}: cannot open (truncated or corrupt zip package)")
        return PermanentError(f"not a {kind}: cannot open (not a zip package)")
    if isinstance(exc, KeyError):  # a part the package needs is missing
        part = re.search(r"named '([^']+)'", str(exc))
        return PermanentError(f"damaged {kind}: cannot open (missing {part.group(1) if part else one_line(exc)})")
    content_type = re.search(r"content type is '([^']+)'", str(exc))
    if content_type:  # another Office format under this name
        other = next((v for k, v in PACKAGE_KINDS.items() if k in content_type.group(1)), "another kind of")
        return PermanentError(f"not a {kind}: cannot open (it is {other} file)")
    return PermanentError(f"damaged {kind}: cannot open ({one_line(exc)})")


def _starts_like_zip(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


# -- Word ----------------------------------------------------------------------

class DocxReader(ParsedPages):
    def __init__(self, path: Path):
        import docx

        try:
            document = docx.Document(str(path))
            blocks = list(_docx_blocks(document))
        except Exception as exc:  # noqa: BLE001 - zip, XML and package errors alike
            raise _open_failure("DOCX", path, exc) from None
        self.pages_text = sections(blocks)


def _docx_blocks(document) -> Iterator[Block]:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    # Wrapped with the document as their parent: it provides the story part
    # paragraph styles are looked up in, all a parent is asked for.
    for element in _body_elements(document.element.body):
        if element.tag == _W + "tbl":
            yield from _docx_rows(Table(element, document))
            continue
        paragraph = Paragraph(element, document)
        text = clean(paragraph.text)
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = _heading_level(style)
        if level:
            yield Block(HEADING, text, level)
        elif style.startswith("List"):
            yield Block(ITEM, text)
        else:
            yield Block(PARAGRAPH, text)


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _body_elements(parent) -> Iterator:
    """Paragraphs and tables in document order, including those inside
    content controls (w:sdt), where templates and forms keep their text and
    python-docx's iter_inner_content() does not look (it yields the body's
    own w:p and w:tbl only), which is why we walk the XML here."""
    for child in parent.iterchildren():
        if child.tag in (_W + "p", _W + "tbl"):
            yield child
        elif child.tag == _W + "sdt":
            content = child.find(_W + "sdtContent")
            if content is not None:
                yield from _body_elements(content)


def _heading_level(style: str) -> int:
    """'Heading 2' -> 2, 'Title' -> 1 (a section of its own), else 0."""
    if style == "Title":
        return 1
    name, _, number = style.rpartition(" ")
    if name == "Heading" and number.isdigit():
        return int(number)
    return 0


def _docx_rows(table) -> Iterator[Block]:
    for table_row in table.rows:
        grid, cells, column = table_row.cells, [], 0
        while column < len(grid):
            # A merged cell comes once per grid column it spans (vertically
            # merged ones as the cell above): take it once.
            cells.append(grid[column].text)
            column += max(1, grid[column].grid_span)
        if any(c.strip() for c in cells):
            yield row(cells)


# -- PowerPoint ----------------------------------------------------------------

class PptxReader(ParsedPages):
    def __init__(self, path: Path):
        import pptx

        try:
            presentation = pptx.Presentation(str(path))
            self.pages_text = [_slide_text(slide) for slide in presentation.slides]
        except Exception as exc:  # noqa: BLE001 - zip, XML and package errors alike
            raise _open_failure("PPTX", path, exc) from None


def _slide_text(slide) -> str:
    title_shape = slide.shapes.title
    lines: list[str] = []
    if title_shape is not None and clean(title_shape.text_frame.text):
        lines.append("# " + clean(title_shape.text_frame.text))
    for shape in _reading_order(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        lines.extend(_shape_lines(shape))
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = [clean(p.text) for p in frame.paragraphs] if frame is not None else []
        notes = [n for n in notes if n]
        if notes:
            lines.append("Notes: " + "\n".join(notes))
    return "\n\n".join(lines)


def _reading_order(shapes) -> list:
    return sorted(shapes, key=lambda s: (s.top or 0, s.left or 0))


def _shape_lines(shape) -> list[str]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        return [line for inner in _reading_order(shape.shapes) for line in _shape_lines(inner)]
    if getattr(shape, "has_table", False) and shape.has_table:
        rows = [row(cell.text for cell in r.cells).text for r in shape.table.rows]
        return ["\n".join(rows)] if rows else []
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        paragraphs = []
        for paragraph in shape.text_frame.paragraphs:
            text = clean(paragraph.text)
            if text:
                paragraphs.append(("  " * paragraph.level + "- " + text) if paragraph.level else text)
        return ["\n".join(paragraphs)] if paragraphs else []
    return []

"""The one table of document formats: what `docutrain enqueue folder/` picks
up, what extraction opens and with what, and the README's list of formats
(a test checks the README against `readme_table()`), so they cannot drift.

Import-free on purpose: the folder scan reads it without loading PyMuPDF or
the office libraries; readers are named as 'module:Class' and imported in
the worker that needs them.
"""

from __future__ import annotations

import dataclasses

PYMUPDF = "pymupdf"  # opened by MuPDF (pipeline/extract.py)
TEXT = "text"  # read directly as UTF-8 (pipeline/extract.py)


@dataclasses.dataclass(frozen=True)
class Format:
    name: str  # in error messages ("not a DOCX: ...") and the README
    suffixes: tuple[str, ...]
    reader: str  # PYMUPDF, TEXT, or 'module:Class' with page_count, pages(), close()
    page: str  # what a page number means for it
    library: str  # what reads it

    @property
    def opened_by_pymupdf(self) -> bool:
        return self.reader == PYMUPDF


FORMATS: tuple[Format, ...] = (
    Format("PDF", (".pdf",), PYMUPDF, "a page; scanned pages are read by OCR", "PyMuPDF (+ Tesseract)"),
    Format("EPUB", (".epub",), PYMUPDF, "a page as MuPDF lays the book out", "PyMuPDF"),
    Format("XPS", (".xps", ".oxps"), PYMUPDF, "a page", "PyMuPDF"),
    Format("MOBI", (".mobi",), PYMUPDF, "a page as MuPDF lays the book out", "PyMuPDF"),
    Format("FB2", (".fb2",), PYMUPDF, "a page as MuPDF lays the book out", "PyMuPDF"),
    Format("CBZ", (".cbz",), PYMUPDF, "an image, read by OCR", "PyMuPDF (+ Tesseract)"),
    Format("DOCX", (".docx",), "docutrain_cli.pipeline.office:DocxReader", "a section under a top-level heading", "python-docx"),
    Format("PPTX", (".pptx",), "docutrain_cli.pipeline.office:PptxReader", "a slide, with its speaker notes", "python-pptx"),
    Format("HTML", (".html", ".htm"), "docutrain_cli.pipeline.html_text:HtmlReader", "a section under a top-level heading", "lxml"),
    Format("CSV", (".csv",), "docutrain_cli.pipeline.csv_text:CsvReader", "a block of 100 rows (page 3: rows 201-300)", "Python's csv"),
    Format("text", (".txt", ".text"), TEXT, "text between form feeds", "-"),
    Format("Markdown", (".md", ".markdown"), TEXT, "text between form feeds", "-"),
)

BY_SUFFIX: dict[str, Format] = {suffix: f for f in FORMATS for suffix in f.suffixes}
SUPPORTED_SUFFIXES = frozenset(BY_SUFFIX)
# Views of the table by reader.
PYMUPDF_FORMATS = {s: f.name for f in FORMATS if f.reader == PYMUPDF for s in f.suffixes}
TEXT_SUFFIXES = frozenset(s for f in FORMATS if f.reader == TEXT for s in f.suffixes)


def format_for(suffix: str) -> Format | None:
    return BY_SUFFIX.get(suffix.lower())


def readme_table() -> str:
    """The formats table in README.md, generated from FORMATS."""
    lines = ["| format | files | a page is | read with |", "|---|---|---|---|"]
    for f in FORMATS:
        files = ", ".join(f"`{s}`" for s in f.suffixes)
        lines.append(f"| {f.name} | {files} | {f.page} | {f.library} |")
    return "\n".join(lines)

"""Text out of a document, page by page: PyMuPDF for what MuPDF opens, the
readers named in pipeline/formats.py for the rest (Word, PowerPoint, HTML, CSV).

Only worker processes import this module (pymupdf is heavy and MuPDF is not
thread-safe). Pages are loaded one at a time and dropped after use, so memory
does not grow with the page count. MuPDF's own failures become
PermanentErrors with a reason a user can act on. Scanned pages are read by
OCR when a `PageOcr` is given (pipeline/ocr.py decides which pages).
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path
from typing import Callable, Iterator

import pymupdf

from docutrain_cli.errors import PermanentError, one_line
from docutrain_cli.pipeline.formats import SUPPORTED_SUFFIXES, TEXT, format_for
from docutrain_cli.pipeline.ocr import PageOcr
from docutrain_cli.pipeline.structured import outline_paths

log = logging.getLogger(__name__)

# A plain-text "page" is cut at form feeds; very long ones are yielded in
# pieces of about this size (at line ends) so memory stays bounded.
TEXT_SEGMENT_CHARS = 1_000_000
# Drop MuPDF's resource cache every so many pages.
SHRINK_EVERY = 100

_quiet = False  # MuPDF's message settings are global to the process, so is this flag


def quiet_mupdf() -> None:
    """Keep MuPDF's stderr chatter ("format error: ...") out of the logs."""
    global _quiet
    if not _quiet:
        pymupdf.TOOLS.mupdf_display_errors(False)
        pymupdf.TOOLS.mupdf_display_warnings(False)
        _quiet = True


class Extraction:
    """An opened document: `page_count`, then `pages()` yields
    (page_number starting at 1, text). Use as a context manager."""

    def __init__(
        self,
        path: Path,
        *,
        password: str | None = None,
        max_pages: int | None = None,
        ocr: PageOcr | None = None,
    ):
        self.path = Path(path)
        self.ocr = ocr
        self.suffix = self.path.suffix.lower()
        self.unreadable_pages: list[int] = []
        self._doc = None
        self._reader = None
        self.format = format_for(self.suffix)
        if self.format is None:
            kind = self.suffix or "without an extension"
            raise PermanentError(
                f"unsupported file type {kind} (supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})"
            )
        if self.format.reader == TEXT:
            self.page_count = self._count_text_pages()
        elif self.format.opened_by_pymupdf:
            self._doc = _open_with_pymupdf(self.path, self.suffix, self.format.name, password)
            self.page_count = self._doc.page_count
        else:
            self._reader = _load_reader(self.format.reader)(self.path)
            self.page_count = self._reader.page_count
        if max_pages is not None and self.page_count > max_pages:
            self.close()
            raise PermanentError(f"too many pages: {self.page_count}, limit {max_pages}")

    def __enter__(self) -> "Extraction":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._doc is not None:
            self._doc.close()
            self._doc = None

    def page_headings(self) -> Callable[[int], str | None] | None:
        """For a PDF (or book) with an outline: page number -> the heading
        path in effect on that page, from its bookmarks. None without one."""
        if self._doc is None:
            return None
        try:
            paths = outline_paths(self._doc.get_toc(simple=True))
        except (RuntimeError, ValueError):
            return None  # a broken outline costs the headings, not the document
        if not paths:
            return None
        starts = [page for page, _ in paths]

        def heading(page: int) -> str | None:
            i = bisect.bisect_right(starts, page)
            return paths[i - 1][1] if i else None

        return heading

    def pages(self) -> Iterator[tuple[int, str]]:
        """Yield pages; after the last one, raise PermanentError if no page had text."""
        found_text = False
        if self._reader is not None:
            source = self._reader.pages()
        elif self._doc is not None:
            source = self._pymupdf_pages()
        else:
            source = self._text_pages()
        for number, text in source:
            if text.strip():
                found_text = True
            yield number, text
        if not found_text:
            if self.unreadable_pages and len(self.unreadable_pages) == self.page_count:
                raise PermanentError("damaged file: no page could be read")
            if self._reader is not None:
                raise PermanentError(f"no text: the {self.format.name} holds none")
            if self._doc is None:
                raise PermanentError("no text: the file is blank")
            reason = self.ocr.no_text_reason() if self.ocr else None
            if reason is None and self.ocr is None:
                reason = "no extractable text (scanned images? OCR is not enabled)"
            raise PermanentError(reason or "no extractable text: no page has a text layer or looks scanned")

    def _pymupdf_pages(self) -> Iterator[tuple[int, str]]:
        doc = self._doc
        for index in range(self.page_count):
            try:
                page = doc.load_page(index)
                # page.get_text("text") without its wrapper, which also works
                # out a crop box that plain text does not use: 3 % of the
                # extraction, same flags, same text.
                text = page.get_textpage(flags=pymupdf.TEXTFLAGS_TEXT).extractText()
                if self.ocr is not None and self.ocr.wanted(doc, index, page, text):
                    text = self.ocr.read(page)
            except (RuntimeError, ValueError) as exc:
                # A broken page in a repaired file: keep the rest of the document.
                log.warning("%s: page %d cannot be read: %s", self.path.name, index + 1, exc)
                self.unreadable_pages.append(index + 1)
                text = ""
            page = None  # noqa: F841 - release the page before the next one
            if (index + 1) % SHRINK_EVERY == 0:
                pymupdf.TOOLS.store_shrink(100)
            yield index + 1, text

    # -- plain text ---------------------------------------------------------

    def _count_text_pages(self) -> int:
        pages = 1
        with self._open_text() as fh:
            while block := fh.read(1 << 20):
                pages += block.count("\f")
        return pages

    def _open_text(self):
        try:
            return self.path.open("r", encoding="utf-8-sig", errors="replace", newline="")
        except FileNotFoundError:
            raise PermanentError("file not found") from None
        except PermissionError:
            raise PermanentError("cannot read the file: permission denied") from None

    def _text_pages(self) -> Iterator[tuple[int, str]]:
        page, parts, size = 1, [], 0
        with self._open_text() as fh:
            for line in fh:
                *done, rest = line.split("\f")
                for piece in done:
                    parts.append(piece)
                    yield page, "".join(parts)
                    page, parts, size = page + 1, [], 0
                parts.append(rest)
                size += len(rest)
                if size >= TEXT_SEGMENT_CHARS:
                    yield page, "".join(parts)
                    parts, size = [], 0
        yield page, "".join(parts)


def _load_reader(spec: str):
    """'module:Class' from the formats table, imported on first use."""
    import importlib

    module_name, _, name = spec.partition(":")
    return getattr(importlib.import_module(module_name), name)


def _open_with_pymupdf(path: Path, suffix: str, kind: str, password: str | None):
    quiet_mupdf()
    try:
        doc = pymupdf.open(path, filetype=suffix.lstrip("."))
    except pymupdf.EmptyFileError:
        raise PermanentError("empty file") from None
    except pymupdf.FileNotFoundError:
        raise PermanentError("file not found") from None
    except pymupdf.FileDataError:
        if suffix == ".pdf" and _starts_like_pdf(path):
            raise PermanentError("damaged PDF: cannot open (truncated or corrupt)") from None
        raise PermanentError(f"not a {kind}: cannot open") from None
    except PermissionError:
        raise PermanentError("cannot read the file: permission denied") from None
    except RuntimeError as exc:  # MuPDF's other complaints about the bytes
        raise PermanentError(f"not a {kind}: cannot open ({one_line(exc)})") from None
    try:
        doc.page_count  # a badly damaged file can open and still fail here
    except RuntimeError as exc:
        doc.close()
        raise PermanentError(f"damaged {kind}: cannot read its pages ({one_line(exc)})") from None
    if suffix == ".pdf" and not doc.is_pdf:
        doc.close()
        raise PermanentError("not a PDF: cannot open")
    if doc.needs_pass:
        if not password:
            doc.close()
            raise PermanentError("encrypted: needs a password (set pdf_password)")
        if not doc.authenticate(password):
            doc.close()
            raise PermanentError("encrypted: the configured pdf_password does not open it")
    return doc


def _starts_like_pdf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return b"%PDF-" in fh.read(1024)
    except OSError:
        return False

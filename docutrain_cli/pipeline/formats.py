"""The one table of document formats: what `docutrain enqueue folder/` picks
up and what extraction opens, so the two can never drift apart.

Import-free on purpose: the folder scan reads it without loading PyMuPDF.
"""

from __future__ import annotations

# Formats MuPDF opens, and their names in error messages.
PYMUPDF_FORMATS = {
    ".pdf": "PDF",
    ".epub": "EPUB",
    ".xps": "XPS",
    ".oxps": "XPS",
    ".mobi": "MOBI",
    ".fb2": "FB2",
    ".cbz": "CBZ",
}
# Plain text, read directly (a "page" is cut at form feeds).
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".text"})
SUPPORTED_SUFFIXES = frozenset(PYMUPDF_FORMATS) | TEXT_SUFFIXES

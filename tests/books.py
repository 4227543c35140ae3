"""Real EPUB, FB2, MOBI, XPS/OXPS and CBZ files for the tests, written by
hand to each format's container layout (no library here writes them), with
one known sentence to find again."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pymupdf

import pdfs

SENTENCE = "Formats table check: the words of this book."


def epub(path: Path) -> Path:
    """EPUB 3: the stored mimetype first, the container pointing at the package, one chapter."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                   '<rootfiles><rootfile full-path="book.opf" media-type="application/oebps-package+xml"/></rootfiles>'
                   "</container>")
        z.writestr("book.opf",
                   '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
                   '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">book-1</dc:identifier>'
                   "<dc:title>Book</dc:title><dc:language>en</dc:language></metadata>"
                   '<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>'
                   '<spine><itemref idref="c1"/></spine></package>')
        z.writestr("c1.xhtml", f'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>Book</title>'
                               f"</head><body><p>{SENTENCE}</p></body></html>")
    return path


def fb2(path: Path) -> Path:
    """FictionBook 2: one XML file."""
    path.write_text('<?xml version="1.0" encoding="utf-8"?>'
                    '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0"><description><title-info>'
                    "<book-title>Book</book-title><lang>en</lang></title-info></description>"
                    f"<body><section><p>{SENTENCE}</p></section></body></FictionBook>", encoding="utf-8")
    return path


def mobi(path: Path) -> Path:
    """MOBI: a Palm database whose record 0 holds the PalmDOC and MOBI headers
    (uncompressed UTF-8 text) and record 1 the book's HTML."""
    text = f"<html><body><p>{SENTENCE}</p></body></html>".encode()
    name = b"Book"
    mobi_header = bytearray(232)
    mobi_header[0:4] = b"MOBI"
    struct.pack_into(">IIII", mobi_header, 4, len(mobi_header), 2, 65001, 1)  # length, a book, UTF-8, id
    struct.pack_into(">I", mobi_header, 20, 6)  # format version
    struct.pack_into(">I", mobi_header, 64, 2)  # first record after the text
    struct.pack_into(">II", mobi_header, 68, 16 + len(mobi_header), len(name))  # full name: offset, length
    struct.pack_into(">I", mobi_header, 76, 9)  # English
    struct.pack_into(">I", mobi_header, 92, 0xFFFFFFFF)  # no images
    palmdoc = struct.pack(">HHIHHHH", 1, 0, len(text), 1, 4096, 0, 0)  # no compression, 1 text record
    records = [palmdoc + bytes(mobi_header) + name + b"\0\0", text]
    header = bytearray(78)
    header[0:len(name)] = name
    header[60:68] = b"BOOKMOBI"
    struct.pack_into(">H", header, 76, len(records))
    offset, index = 78 + 8 * len(records) + 2, b""
    for number, record in enumerate(records):
        index += struct.pack(">II", offset, 2 * number)
        offset += len(record)
    path.write_bytes(bytes(header) + index + b"\0\0" + b"".join(records))
    return path


def xps(path: Path, open_xps: bool = False) -> Path:
    """XPS (or OpenXPS, `open_xps`): a package of one fixed page whose text is
    a Glyphs run in an embedded TrueType font (MuPDF's own Droid Sans)."""
    ns, rel = (("http://schemas.openxps.org/oxps/v1.0", "http://schemas.openxps.org/oxps/v1.0/fixedrepresentation")
               if open_xps else
               ("http://schemas.microsoft.com/xps/2005/06", "http://schemas.microsoft.com/xps/2005/06/fixedrepresentation"))
    types = "".join(f'<Default Extension="{ext}" ContentType="{kind}"/>' for ext, kind in (
        ("rels", "application/vnd.openxmlformats-package.relationships+xml"),
        ("fdseq", "application/vnd.ms-package.xps-fixeddocumentsequence+xml"),
        ("fdoc", "application/vnd.ms-package.xps-fixeddocument+xml"),
        ("fpage", "application/vnd.ms-package.xps-fixedpage+xml"),
        ("ttf", "application/vnd.ms-opentype"),
    ))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml",
                   f'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">{types}</Types>')
        z.writestr("_rels/.rels", '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                                  f'<Relationship Type="{rel}" Target="/book.fdseq" Id="R0"/></Relationships>')
        z.writestr("book.fdseq", f'<FixedDocumentSequence xmlns="{ns}"><DocumentReference Source="/book.fdoc"/>'
                                 "</FixedDocumentSequence>")
        z.writestr("book.fdoc", f'<FixedDocument xmlns="{ns}"><PageContent Source="/1.fpage"/></FixedDocument>')
        z.writestr("font.ttf", pymupdf.Font("cjk").buffer)
        z.writestr("1.fpage", f'<FixedPage xmlns="{ns}" Width="816" Height="1056" xml:lang="en">'
                              '<Glyphs FontUri="/font.ttf" FontRenderingEmSize="16" OriginX="50" OriginY="100" '
                              f'Fill="#FF000000" UnicodeString="{SENTENCE}"/></FixedPage>')
    return path


def oxps(path: Path) -> Path:
    return xps(path, open_xps=True)


def cbz(path: Path) -> Path:
    """A comic book archive: one PNG page showing the sentence (read by OCR)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("001.png", pdfs.text_image(SENTENCE, fontsize=20).tobytes("png"))
    return path

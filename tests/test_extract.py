"""Extraction and loading against real files made with PyMuPDF."""

from __future__ import annotations

import zipfile

import pytest

import pdfs
from docutrain_cli.errors import PermanentError
from docutrain_cli.pipeline.extract import Extraction
from docutrain_cli.pipeline.load import load_source


def pages_of(path, **kwargs) -> list[tuple[int, str]]:
    with Extraction(path, **kwargs) as doc:
        return list(doc.pages())


def refusal(path, **kwargs) -> str:
    with pytest.raises(PermanentError) as info:
        pages_of(path, **kwargs)
    return str(info.value)


def test_multi_page_pdf_keeps_page_numbers_and_text(tmp_path):
    path = pdfs.multi_page(tmp_path / "contract.pdf", pages=4)
    pages = pages_of(path)
    assert [n for n, _ in pages] == [1, 2, 3, 4]
    for number, text in pages:
        assert f"Page {number} heading." in text
        assert pdfs.sentence(number * 100).split(":")[0] in text


def test_encrypted_pdf_needs_a_password(tmp_path):
    path = pdfs.encrypted(tmp_path / "locked.pdf", password="s3cret")
    assert refusal(path) == "encrypted: needs a password (set pdf_password)"
    assert "does not open it" in refusal(path, password="wrong")
    [(number, text)] = pages_of(path, password="s3cret")
    assert number == 1
    assert "vault code is 4711" in text


def test_empty_file(tmp_path):
    assert refusal(pdfs.empty(tmp_path / "empty.pdf")) == "empty file"
    with pytest.raises(PermanentError, match="^empty file$"):
        load_source(str(tmp_path / "empty.pdf"), max_file_mb=1)


def test_garbage_named_pdf(tmp_path):
    assert refusal(pdfs.garbage(tmp_path / "random.pdf")) == "not a PDF: cannot open"


def test_truncated_pdf_missing_its_tail_is_refused_as_damaged(tmp_path):
    path = pdfs.truncated(tmp_path / "cut.pdf", keep=0.6)
    assert refusal(path) == "damaged PDF: cannot open (truncated or corrupt)"


def test_truncated_pdf_that_mupdf_repairs_gives_its_text(tmp_path):
    path = pdfs.truncated(tmp_path / "nearly.pdf", keep=0.95, pages=20)
    pages = pages_of(path)
    assert len(pages) == 20
    assert all(f"Page {n} heading." in text for n, text in pages)


def test_severely_truncated_pdf_is_a_permanent_error(tmp_path):
    path = pdfs.truncated(tmp_path / "stub.pdf", keep=0.02)
    assert refusal(path).startswith("damaged PDF")


def test_image_only_pdf_says_no_text(tmp_path):
    path = pdfs.image_only(tmp_path / "scan.pdf", pages=2)
    assert refusal(path) == "no extractable text (scanned images? OCR is not enabled)"


def test_pages_without_text_are_fine_among_others(tmp_path):
    path = pdfs.write_pdf(tmp_path / "mixed.pdf", ["first page text", "", "third page text"])
    assert pages_of(path) == [(1, "first page text\n"), (2, ""), (3, "third page text\n")]


def test_non_ascii_text_survives(tmp_path):
    path = pdfs.non_ascii(tmp_path / "intl.pdf")
    [(number, text)] = pages_of(path)
    assert number == 1
    for expected in pdfs.NON_ASCII.values():
        assert expected in text


def test_page_limit(tmp_path):
    path = pdfs.multi_page(tmp_path / "long.pdf", pages=6, sentences_per_page=1)
    assert refusal(path, max_pages=5) == "too many pages: 6, limit 5"
    assert len(pages_of(path, max_pages=6)) == 6


def test_unsupported_type(tmp_path):
    path = tmp_path / "report.doc"  # Word 97: not read (.docx is)
    path.write_bytes(b"\xd0\xcf\x11\xe0 not really")
    assert refusal(path).startswith("unsupported file type .doc (supported: .cbz, .csv, .docx,")


def test_plain_text_and_markdown_split_at_form_feeds(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Title\n\nfirst page\n\fsecond page\n\f\fafter a blank page", encoding="utf-8")
    assert pages_of(path) == [
        (1, "# Title\n\nfirst page\n"),
        (2, "second page\n"),
        (3, ""),
        (4, "after a blank page"),
    ]
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n ")
    assert refusal(blank) == "no text: the file is blank"


def test_epub_opens_through_pymupdf(tmp_path):
    path = tmp_path / "book.epub"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>',
        )
        z.writestr(
            "content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="2.0" unique-identifier="id">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>T</dc:title><dc:identifier id="id">x</dc:identifier></metadata>'
            '<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>'
            '<spine><itemref idref="c1"/></spine></package>',
        )
        z.writestr(
            "c1.xhtml",
            '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
            "<p>The tenant pays the deposit before the renewal.</p></body></html>",
        )
    text = " ".join(t for _, t in pages_of(path))
    assert "tenant pays the deposit" in text


def test_load_refuses_missing_and_large_files(tmp_path):
    with pytest.raises(PermanentError, match="^file not found$"):
        load_source(str(tmp_path / "nope.pdf"), max_file_mb=1)
    big = tmp_path / "big.pdf"
    with big.open("wb") as fh:
        fh.truncate(3 * 1024 * 1024 + 1)
    with pytest.raises(PermanentError, match=r"^too large: 3\.0 MB, limit 2 MB$"):
        load_source(str(big), max_file_mb=2)
    with pytest.raises(PermanentError, match="directory"):
        load_source(str(tmp_path), max_file_mb=2)


def test_load_hashes_the_bytes(tmp_path):
    import hashlib

    path = pdfs.multi_page(tmp_path / "a.pdf", pages=1)
    loaded = load_source(str(path), max_file_mb=5)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.size_bytes == path.stat().st_size


def test_a_folder_scan_finds_every_format_extraction_reads(tmp_path):
    # One formats table drives both: `enqueue folder/` used to skip .markdown and .text.
    from docutrain_cli.pipeline.discover import discover
    from docutrain_cli.pipeline.formats import SUPPORTED_SUFFIXES, TEXT_SUFFIXES

    folder = tmp_path / "uploads"
    folder.mkdir()
    for suffix in sorted(TEXT_SUFFIXES):
        (folder / f"note{suffix}").write_text(f"A note saved as {suffix}.")
    pdfs.multi_page(folder / "contract.pdf", pages=1)
    (folder / "notes.doc").write_text("not a format we read (Word 97)")
    found, refused = discover([str(folder)])
    suffixes = {"." + f.path.rsplit(".", 1)[1] for f in found}
    assert suffixes == TEXT_SUFFIXES | {".pdf"} and not refused
    assert suffixes <= SUPPORTED_SUFFIXES
    for item in found:
        assert load_source(item.path, max_file_mb=1).sha256 == item.sha256  # one hashing function
        assert pages_of(item.path)

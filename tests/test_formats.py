"""Word, PowerPoint, HTML and CSV: real files made with the libraries, read
through the same Extraction the workers use; corrupt ones through a real
`docutrain run`; and the one formats table against the folder scan and the
README."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

import books
import docs
import pdfs
from docutrain_cli.pipeline.discover import discover
from docutrain_cli.errors import PermanentError
from docutrain_cli.pipeline.extract import Extraction
from docutrain_cli.pipeline.formats import FORMATS, SUPPORTED_SUFFIXES, readme_table
from docutrain_cli.pipeline.ocr import OcrOptions, PageOcr

ROOT = Path(__file__).resolve().parent.parent


def pages_of(path) -> list[tuple[int, str]]:
    with Extraction(path) as doc:
        pages = list(doc.pages())
        assert doc.page_count == len(pages)
        return pages


def test_docx_sections_keep_headings_paragraphs_lists_and_table_rows(tmp_path):
    pages = pages_of(docs.word(tmp_path / "lease.docx"))
    # The title and each top-level heading start a section: a "page".
    assert [n for n, _ in pages] == [1, 2, 3]
    title, rent, deposit = (text for _, text in pages)
    assert title == "# Lease agreement\n\nThis lease is made between the landlord Ada and the tenant Alan."
    assert rent.splitlines() == [
        "# Rent",
        "",
        "The rent is due on the first day of each month.",
        "",
        "- Payment by bank transfer only",
        "",
        "| Month | Amount | Due |",
        "| January | 1200 EUR | 1 Jan |",
        "| February | 1200 EUR | 1 Feb |",
    ]
    assert deposit.startswith("# Deposit\n\n## Return of the deposit\n\nThe deposit is returned")


def test_pptx_slide_by_slide_with_notes(tmp_path):
    pages = pages_of(docs.slides(tmp_path / "q3.pptx"))
    assert [n for n, _ in pages] == [1, 2]
    first, second = (text for _, text in pages)
    assert first == (
        "# Quarterly results\n\nRevenue grew twelve percent\n  - Costs fell in Asia"
        "\n\nNotes: Mention the new office in Singapore."
    )
    assert second == "# Sales by region\n\n| Region | Sales |\n| Asia | 42 |\n| Europe | 17 |"


@pytest.mark.parametrize("marks_main", [True, False], ids=["main", "no-main"])
def test_html_keeps_the_content_and_drops_scripts_styles_and_navigation(tmp_path, marks_main):
    pages = pages_of(docs.web_page(tmp_path / "help.html", marks_main=marks_main))
    text = "\n".join(t for _, t in pages)
    for chrome in ("SCRIPT", "font-family", "NAV-", "SITE-HEADER", "HIDDEN-TEXT", "NOSCRIPT", "ASIDE", "FOOTER", "Help centre"):
        assert chrome not in text
    assert [n for n, _ in pages] == [1, 2]
    assert pages[0][1] == (
        "# Returning an order\n\nYou can return any order within thirty days of delivery."
        "\n\n- Open your orders\n- Choose Return\n\n## Refunds\n\nRefunds reach your card within five working days."
    )
    assert pages[1][1] == "# Shipping costs\n\n| Zone | Price |\n| Europe | 5 EUR |"


def test_csv_rows_carry_their_header_in_blocks_of_a_hundred(tmp_path):
    pages = pages_of(docs.spreadsheet(tmp_path / "orders.csv", rows=250))
    assert [n for n, _ in pages] == [1, 2, 3]
    assert [len(t.splitlines()) for _, t in pages] == [100, 100, 50]
    assert pages[0][1].splitlines()[0] == "customer: Customer 1; city: London; note: order 1, paid"
    assert pages[2][1].splitlines()[-1] == "customer: Customer 250; city: Paris; note: order 250, paid"


def test_csv_delimiter_is_sniffed_and_extra_columns_are_named(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("name;city\nAda;London;extra\nAlan;\n", encoding="utf-8")
    [(_, text)] = pages_of(path)
    assert text == "name: Ada; city: London; column 3: extra\nname: Alan"


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("garbage.docx", lambda p: pdfs.garbage(p), "not a DOCX: cannot open (not a zip package)"),
        ("cut.docx", lambda p: docs.truncated(p, docs.word(p.with_name("whole.docx"))), "damaged DOCX: cannot open (truncated or corrupt zip package)"),
        ("hollow.docx", lambda p: docs.without_part(p, docs.word(p.with_name("whole.docx")), "word/document.xml"), "damaged DOCX: cannot open (missing word/document.xml)"),
        ("cut.pptx", lambda p: docs.truncated(p, docs.slides(p.with_name("whole.pptx"))), "damaged PPTX: cannot open (truncated or corrupt zip package)"),
        ("renamed.pptx", lambda p: docs.word(p), "not a PPTX: cannot open (it is a Word file)"),
        ("binary.html", lambda p: pdfs.garbage(p), "not HTML: cannot open (binary data)"),
        ("binary.csv", lambda p: pdfs.garbage(p), "not a CSV: cannot open (binary data)"),
    ],
)
def test_corrupt_files_are_refused_naming_type_and_problem(tmp_path, name, make, reason):
    path = make(tmp_path / name)
    with pytest.raises(PermanentError) as info:
        pages_of(path)
    assert str(info.value) == reason


def test_corrupt_files_end_dead_in_a_real_run_with_one_line_each(docutrain, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    whole = tmp_path / "whole"
    whole.mkdir()
    docs.truncated(uploads / "contract.docx", docs.word(whole / "contract.docx"))
    docs.truncated(uploads / "deck.pptx", docs.slides(whole / "deck.pptx"))
    pdfs.garbage(uploads / "page.html")
    (uploads / "table.csv").write_bytes(b"\0\1\2 not the same bytes as page.html " * 50)
    docs.word(uploads / "good.docx")
    assert docutrain("enqueue", "uploads").returncode == 0
    result = docutrain("run", "--workers", "2", "--drain", "--json")
    assert result.returncode == 3, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["dead"], summary["retried"]) == (1, 4, 0)
    dead = {Path(j["source"]).name: j["errors"][-1] for j in json.loads(docutrain("jobs", "--state", "dead", "--json").stdout)}
    assert dead == {
        "contract.docx": f"{uploads / 'contract.docx'}: damaged DOCX: cannot open (truncated or corrupt zip package)",
        "deck.pptx": f"{uploads / 'deck.pptx'}: damaged PPTX: cannot open (truncated or corrupt zip package)",
        "page.html": f"{uploads / 'page.html'}: not HTML: cannot open (binary data)",
        "table.csv": f"{uploads / 'table.csv'}: not a CSV: cannot open (binary data)",
    }


def test_the_folder_scan_picks_up_every_format_in_the_table_and_nothing_else(tmp_path):
    for suffix in SUPPORTED_SUFFIXES:
        (tmp_path / f"doc{suffix.upper() if suffix == '.pdf' else suffix}").write_bytes(b"x")
    for other in (".doc", ".xlsx", ".png", ".zip"):
        (tmp_path / f"other{other}").write_bytes(b"x")
    found, refused = discover([str(tmp_path)])
    assert refused == []
    assert sorted(Path(f.path).suffix.lower() for f in found) == sorted(SUPPORTED_SUFFIXES)


def plain_text(path: Path) -> Path:
    path.write_text("# Notes\n\nPlain words.")
    return path


# A real file of each suffix in the formats table.
MAKERS = {
    ".pdf": lambda p: pdfs.multi_page(p, pages=1),
    ".epub": books.epub,
    ".xps": books.xps,
    ".oxps": books.oxps,
    ".mobi": books.mobi,
    ".fb2": books.fb2,
    ".cbz": books.cbz,
    ".docx": docs.word,
    ".pptx": docs.slides,
    ".html": docs.web_page,
    ".htm": docs.web_page,
    ".csv": docs.spreadsheet,
    ".txt": plain_text,
    ".text": plain_text,
    ".md": plain_text,
    ".markdown": plain_text,
}
BOOKS = {".epub", ".xps", ".oxps", ".mobi", ".fb2", ".cbz"}  # they hold books.SENTENCE
EVERY_SUFFIX = [pytest.param(f, suffix, id=f"{f.name}{suffix}") for f in FORMATS for suffix in f.suffixes]


def test_every_suffix_in_the_table_has_a_real_file_to_open():
    assert set(MAKERS) == set(SUPPORTED_SUFFIXES)


@pytest.mark.parametrize(("fmt", "suffix"), EVERY_SUFFIX)
def test_every_format_in_the_table_opens(tmp_path, fmt, suffix, request):
    """Each row of the table reaches a reader that reads its own kind of file."""
    ocr = None
    if suffix == ".cbz":  # pages are pictures: only OCR finds their text
        request.getfixturevalue("tesseract")
        ocr = PageOcr(OcrOptions(dpi=150))
    path = MAKERS[suffix](tmp_path / f"doc{suffix}")
    with Extraction(path, ocr=ocr) as doc:
        assert doc.format == fmt
        pages = list(doc.pages())
        assert doc.page_count == len(pages)
    assert pages, suffix
    if suffix in BOOKS:
        text = " ".join(text for _, text in pages)
        assert "formats table check" in text.lower(), text


MUPDF_SUFFIXES = [
    pytest.param(f, suffix, id=f"{f.name}{suffix}", marks=[pytest.mark.skip(
        reason="MuPDF 1.28 segfaults on garbage FB2: a worker crash, retried (tests/test_formats.py cannot survive it)"
    )] if suffix == ".fb2" else [])
    for f in FORMATS if f.opened_by_pymupdf and f.name != "PDF" for suffix in f.suffixes
]  # a wrong PDF: tests/test_extract.py


@pytest.mark.parametrize(("fmt", "suffix"), MUPDF_SUFFIXES)
def test_a_wrong_file_in_a_mupdf_format_says_the_formats_name(tmp_path, fmt, suffix):
    with pytest.raises(PermanentError, match=f"^not an? {fmt.name}: cannot open"):
        pages_of(pdfs.garbage(tmp_path / f"doc{suffix}"))


def test_readme_lists_the_formats_from_the_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table() in readme, "README's formats table is stale: paste readme_table()'s output"
    # and the unsupported-type message lists the same suffixes
    with pytest.raises(PermanentError) as info:
        Extraction(Path("x.doc"))
    listed = set(re.findall(r"\.\w+", str(info.value).split("supported:")[1]))
    assert listed == set(SUPPORTED_SUFFIXES)


def test_a_word_file_is_stored_with_headings_and_found_by_search(docutrain, tmp_path):
    docs.word(tmp_path / "lease.docx")
    assert docutrain("enqueue", "lease.docx").returncode == 0
    small = {"DOCUTRAIN_CHUNK_TOKENS": "40", "DOCUTRAIN_CHUNK_OVERLAP": "0"}
    result = docutrain("run", "--workers", "1", "--drain", "--json", **small)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(docutrain.store) as conn:
        stored = conn.execute("SELECT page_start, page_end, heading, content FROM chunks ORDER BY chunk_index").fetchall()
    assert [row[:3] for row in stored] == [
        (1, 1, "Lease agreement"),
        (2, 2, "Rent"),
        (2, 2, "Rent"),  # the table, whole rows
        (3, 3, "Deposit > Return of the deposit"),
    ], stored
    assert stored[2][3].startswith("| Month | Amount | Due |") and stored[3][3].startswith("# Deposit")
    found = docutrain("search", "when is the deposit returned", "--top", "1", **small)
    first, second = found.stdout.splitlines()[:2]
    assert "p. 3" in first and "chunk 3" in first, found.stdout
    assert second.strip().startswith("under Deposit > Return of the deposit: # Deposit"), found.stdout


@pytest.mark.parametrize(
    "data",
    [
        "<html><body><p>Café Müller, 合同</p></body></html>".encode("utf-8"),  # no charset declared
        '<html><head><meta charset="windows-1252"></head><body><p>Café Müller</p></body></html>'.encode("cp1252"),
        '<?xml version="1.0" encoding="utf-8"?><html><body><p>Café Müller</p></body></html>'.encode("utf-8"),
    ],
    ids=["utf8-undeclared", "cp1252-declared", "xml-declaration"],
)
def test_html_text_is_decoded_right(tmp_path, data):
    path = tmp_path / "page.html"
    path.write_bytes(data)
    [(_, text)] = pages_of(path)
    assert text.startswith("Café Müller")


def test_a_csv_from_excel_on_windows_keeps_its_accents(tmp_path):
    path = tmp_path / "kunden.csv"
    path.write_bytes("Name;Stadt\nMüller;Köln\n".encode("cp1252"))  # Excel's "CSV" (not "CSV UTF-8")
    assert pages_of(path) == [(1, "Name: Müller; Stadt: Köln")]
    path.write_bytes("\ufeffName,Stadt\nMüller,Köln\n".encode("utf-8"))  # "CSV UTF-8", with a BOM
    assert pages_of(path) == [(1, "Name: Müller; Stadt: Köln")]


def test_docx_text_inside_content_controls_is_read(tmp_path):
    """Templates and forms keep text in content controls (w:sdt)."""
    from docx.oxml.ns import qn
    from lxml import etree

    path = docs.word(tmp_path / "form.docx")
    import docx as python_docx

    document = python_docx.Document(path)
    paragraph = document.add_paragraph("Signed by the tenant in a form field.")._p
    sdt = etree.SubElement(paragraph.getparent(), qn("w:sdt"))
    paragraph.addprevious(sdt)
    content = etree.SubElement(sdt, qn("w:sdtContent"))
    content.append(paragraph)  # moves the paragraph into the control
    document.save(path)
    assert pages_of(path)[-1][1].endswith("The deposit is returned within thirty days after the keys are handed back.\n\nSigned by the tenant in a form field.")

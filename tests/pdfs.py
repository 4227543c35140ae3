"""Real documents for the tests, written with PyMuPDF into a folder."""

from __future__ import annotations

from pathlib import Path

import pymupdf

WORDS = (
    "invoice contract payment delivery warranty clause tenant landlord deposit "
    "schedule supplier customer refund notice period renewal liability insurance"
).split()


def sentence(n: int) -> str:
    """Deterministic, varied English-like sentence number n."""
    words = [WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(8 + n % 5)]
    return f"Clause {n}: the " + " ".join(words) + "."


def write_pdf(path: Path, pages: list[str]) -> Path:
    """One page per string, text wrapped into the page box."""
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page()
        if text:
            page.insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=9)
    doc.save(path)
    doc.close()
    return path


def multi_page(path: Path, pages: int = 5, sentences_per_page: int = 12, seed: int = 0) -> Path:
    """Pages of distinct sentences; documents with different seeds share no text."""
    texts = [
        f"Page {p} heading.\n\n"
        + " ".join(sentence(seed * 100_000 + p * 100 + s) for s in range(sentences_per_page))
        for p in range(1, pages + 1)
    ]
    return write_pdf(path, texts)


def encrypted(path: Path, password: str = "s3cret") -> Path:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Confidential: the vault code is 4711.")
    doc.save(
        path,
        encryption=pymupdf.PDF_ENCRYPT_AES_256,
        user_pw=password,
        owner_pw=password + "-owner",
    )
    doc.close()
    return path


def truncated(path: Path, keep: float = 0.5, pages: int = 20) -> Path:
    """A real PDF cut short, as by an interrupted upload."""
    source = multi_page(path.with_name("whole-" + path.name), pages=pages)
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(bytes((i * 37 + 11) % 256 for i in range(4096)))
    return path


def image_only(path: Path, pages: int = 3) -> Path:
    """Scanned-looking pages: a picture each, no text layer."""
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 64, 64), False)
    pixmap.clear_with(200)
    doc = pymupdf.open()
    for _ in range(pages):
        doc.new_page().insert_image(pymupdf.Rect(50, 50, 500, 500), pixmap=pixmap)
    doc.save(path)
    doc.close()
    return path


NON_ASCII = {
    "china-s": "合同条款：租金每月支付。押金将在租期结束时退还。",
    "helv": "Prüfung der Kündigungsfrist: Müller & Søn, café naïve, 25 ½ Øre.",
}


def non_ascii(path: Path) -> Path:
    doc = pymupdf.open()
    page = doc.new_page()
    y = 72
    for font, text in NON_ASCII.items():
        page.insert_text((72, y), text, fontname=font, fontsize=11)
        y += 30
    doc.save(path)
    doc.close()
    return path


def many_pages(path: Path, pages: int = 1000, sentences_per_page: int = 2) -> Path:
    """A long document, built fast. Two short lines a page by default; with
    more sentences, full pages of prose (20 make about one chunk a page)."""
    doc = pymupdf.open()
    for p in range(1, pages + 1):
        page = doc.new_page()
        if sentences_per_page <= 2:
            page.insert_text((50, 72), f"Page {p}. " + sentence(p), fontsize=9)
            page.insert_text((50, 90), sentence(p + 5000), fontsize=9)
        else:
            text = f"Page {p}. " + " ".join(sentence(p * 100 + s) for s in range(sentences_per_page))
            page.insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=9)
    doc.save(path, garbage=1, deflate=True)
    doc.close()
    return path


def text_image(text: str, dpi: int = 150, fontsize: float = 12) -> pymupdf.Pixmap:
    """`text` typeset on an A4 page and photographed: a picture of it."""
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=fontsize)
    pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
    doc.close()
    return pixmap


def scanned(path: Path, pages: list[str], *, dpi: int = 150, sideways: set[int] = frozenset()) -> Path:
    """Image-only pages, like a scanner makes: each page's only content is a
    picture of its text. Pages whose index is in `sideways` are stored turned
    a quarter and shown upright by /Rotate 90, as scanners do for landscape."""
    doc = pymupdf.open()
    for index, text in enumerate(pages):
        if index in sideways:  # stored landscape, the picture turned a quarter
            page = doc.new_page(width=842, height=595)
            page.insert_image(page.rect, pixmap=text_image(text, dpi), rotate=90)
            page.set_rotation(90)
        else:
            page = doc.new_page()
            page.insert_image(page.rect, pixmap=text_image(text, dpi))
    doc.save(path, deflate=True)
    doc.close()
    return path


def mixed(path: Path, typed: list[str], scanned_text: str, scanned_at: int = 1, dpi: int = 150) -> Path:
    """Typed pages with a real text layer and one scanned (image-only) page."""
    doc = pymupdf.open()
    for index, text in enumerate(typed):
        if index == scanned_at:
            doc.new_page().insert_image(pymupdf.Rect(0, 0, 595, 842), pixmap=text_image(scanned_text, dpi))
        doc.new_page().insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=9)
    doc.save(path, deflate=True)
    doc.close()
    return path


def turned_scan(path: Path, pages: list[tuple[str, float]], *, dpi: int = 150) -> Path:
    """Image-only pages of (text, degrees): the text typeset upright, turned
    by `degrees` (90, 180, 270, or a small skew like 4, or both: 94), and
    photographed, as a scanner without orientation detection stores it."""
    doc = pymupdf.open()
    for text, degrees in pages:
        src = pymupdf.open()
        src.new_page().insert_textbox(pymupdf.Rect(50, 50, 550, 800), text, fontsize=12)
        sideways = round(degrees / 90) % 2 == 1
        canvas = pymupdf.open()
        page = canvas.new_page(width=842, height=595) if sideways else canvas.new_page()
        page.show_pdf_page(page.rect, src, 0, rotate=degrees)
        picture = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        scan = doc.new_page(width=page.rect.width, height=page.rect.height)
        scan.insert_image(scan.rect, pixmap=picture)
        canvas.close()
        src.close()
    doc.save(path, deflate=True)
    doc.close()
    return path


def scribbled_scan(path: Path, pages: int = 1, *, strokes: int = 600, seed: int = 1, dpi: int = 150) -> Path:
    """Image-only pages of random pen strokes: a scan with marks and no words."""
    import random

    rng = random.Random(seed)
    doc = pymupdf.open()
    for _ in range(pages):
        canvas = pymupdf.open()
        page = canvas.new_page()
        for _ in range(strokes):
            x, y = rng.uniform(40, 550), rng.uniform(40, 800)
            end = (x + rng.uniform(-8, 8), y + rng.uniform(-8, 8))
            page.draw_line((x, y), end, width=rng.uniform(0.5, 2))
        picture = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        canvas.close()
        doc.new_page().insert_image(pymupdf.Rect(0, 0, 595, 842), pixmap=picture)
    doc.save(path, deflate=True)
    doc.close()
    return path

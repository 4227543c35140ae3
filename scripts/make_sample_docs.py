"""Write a few sample documents for the demo: real PDFs made with PyMuPDF,
including a broken and an encrypted one so the demo shows dead jobs too, a
scanned (image-only) page that needs OCR (it ends dead, saying how to install
Tesseract, where Tesseract is missing), and a Word file and a web page.

Run: python scripts/make_sample_docs.py FOLDER
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pymupdf

TOPICS = {
    "queues.pdf": [
        "A persistent queue keeps every job on disk, so a crash or a restart loses nothing.",
        "Jobs are delivered at least once; processing is idempotent, so a second delivery "
        "replaces the first result instead of doubling it.",
    ],
    "workers.pdf": [
        "Each document is processed in its own worker process. When a worker crashes or "
        "hangs past the job timeout it is replaced, and only that job is retried.",
        "Transient failures such as rate limits are retried with exponential backoff.",
    ],
    "embeddings.pdf": [
        "Text is extracted page by page and split into chunks of about eight hundred tokens.",
        "Each chunk is embedded and stored with its page numbers so answers can cite pages.",
    ],
}


def write_pdf(path: Path, paragraphs: list[str], pages: int = 3) -> None:
    doc = pymupdf.open()
    for number in range(1, pages + 1):
        page = doc.new_page()
        body = "\n\n".join(textwrap.fill(p, 80) for p in paragraphs)
        page.insert_text((72, 72), f"{path.stem.title()}, page {number}\n\n{body}", fontsize=10)
    doc.save(path)


def write_scan(path: Path, text: str) -> None:
    """A page whose only content is a picture of its text, as a scanner makes."""
    typed = pymupdf.open()
    typed.new_page().insert_textbox(pymupdf.Rect(72, 72, 520, 400), text, fontsize=12)
    picture = typed[0].get_pixmap(dpi=150)
    doc = pymupdf.open()
    doc.new_page().insert_image(pymupdf.Rect(0, 0, 595, 842), pixmap=picture)
    doc.save(path, deflate=True)


def write_word(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Retries", 1)
    document.add_paragraph("A failed job waits longer after every attempt, up to max_attempts.")
    table = document.add_table(rows=3, cols=2)
    for r, (attempt, wait) in enumerate([("attempt", "wait"), ("1", "5-10 s"), ("2", "10-20 s")]):
        table.cell(r, 0).text, table.cell(r, 1).text = attempt, wait
    document.save(path)


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, paragraphs in TOPICS.items():
        write_pdf(out / name, paragraphs)
    (out / "notes.txt").write_text("Plain text files are documents too.\n")
    write_scan(out / "scanned-letter.pdf", "Dear customer, your scanned letters are read by OCR when Tesseract is installed.")
    write_word(out / "retries.docx")
    (out / "help.html").write_text(
        "<html><head><script>track()</script></head><body><nav>Home | Blog</nav>"
        "<h1>Supabase</h1><p>Status changes go through an outbox, so an outage never loses one.</p></body></html>"
    )
    (out / "broken.pdf").write_bytes(b"%PDF-1.7 this file was cut off in the upload")
    secret = out / "locked.pdf"
    write_pdf(secret, ["A document behind a password."], pages=1)
    doc = pymupdf.open(secret)
    doc.save(str(secret) + ".tmp", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="pw", owner_pw="owner")
    Path(str(secret) + ".tmp").replace(secret)
    print(f"wrote {len(list(out.iterdir()))} sample documents to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2] or ["samples"])

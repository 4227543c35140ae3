"""Real Word, PowerPoint, HTML and CSV files for the tests, written with the
same libraries users' tools produce them with (python-docx, python-pptx)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import docx
import pptx
from pptx.util import Inches

LEASE_TABLE = [("Month", "Amount", "Due"), ("January", "1200 EUR", "1 Jan"), ("February", "1200 EUR", "1 Feb")]


def word(path: Path) -> Path:
    """A title, two top-level sections (one with a sub-heading), a list and a table."""
    document = docx.Document()
    document.add_heading("Lease agreement", 0)
    document.add_paragraph("This lease is made between the landlord Ada and the tenant Alan.")
    document.add_heading("Rent", 1)
    document.add_paragraph("The rent is due on the first day of each month.")
    document.add_paragraph("Payment by bank transfer only", style="List Bullet")
    table = document.add_table(rows=len(LEASE_TABLE), cols=3)
    for r, values in enumerate(LEASE_TABLE):
        for c, value in enumerate(values):
            table.cell(r, c).text = value
    document.add_heading("Deposit", 1)
    document.add_heading("Return of the deposit", 2)
    document.add_paragraph("The deposit is returned within thirty days after the keys are handed back.")
    document.save(path)
    return path


def slides(path: Path) -> Path:
    """Two slides: bullets with speaker notes, and a table."""
    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
    first.shapes.title.text = "Quarterly results"
    body = first.placeholders[1].text_frame
    body.text = "Revenue grew twelve percent"
    point = body.add_paragraph()
    point.text = "Costs fell in Asia"
    point.level = 1
    first.notes_slide.notes_text_frame.text = "Mention the new office in Singapore."
    second = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    second.shapes.title.text = "Sales by region"
    table = second.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(4), Inches(1.5)).table
    for r, values in enumerate([("Region", "Sales"), ("Asia", "42"), ("Europe", "17")]):
        for c, value in enumerate(values):
            table.cell(r, c).text = value
    deck.save(path)
    return path


WEB_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Help centre</title>
<style>body { font-family: sans-serif } .ad { color: red }</style>
<script>window.tracking = "SCRIPT-SECRET";</script></head>
<body>
<header><a href="/">ACME home</a> <span>SITE-HEADER</span></header>
<nav><ul><li><a href="/pricing">NAV-PRICING</a></li><li><a href="/blog">NAV-BLOG</a></li></ul></nav>
<main>
<h1>Returning an order</h1>
<p>You can return any order within <b>thirty days</b> of delivery.</p>
<ol><li>Open your orders</li><li>Choose <em>Return</em></li></ol>
<h2>Refunds</h2>
<p>Refunds reach your card within five working days.</p>
<h1>Shipping costs</h1>
<table><tr><th>Zone</th><th>Price</th></tr><tr><td>Europe</td><td>5 EUR</td></tr></table>
<div hidden>HIDDEN-TEXT</div>
<noscript>NOSCRIPT-TEXT</noscript>
</main>
<aside>ASIDE-TEXT</aside>
<footer>FOOTER-TEXT Copyright ACME</footer>
<script>console.log("SCRIPT-TWO")</script>
</body></html>
"""


def web_page(path: Path, marks_main: bool = True) -> Path:
    """A help page with site chrome around it; without `marks_main` the
    content is not in a <main>, so the chrome has to be recognised."""
    page = WEB_PAGE if marks_main else WEB_PAGE.replace("<main>", "<div>").replace("</main>", "</div>")
    path.write_text(page, encoding="utf-8")
    return path


def spreadsheet(path: Path, rows: int = 250) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["customer", "city", "note"])
        for n in range(1, rows + 1):
            writer.writerow([f"Customer {n}", "London" if n % 2 else "Paris", f"order {n}, paid"])
    return path


def truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    """A real file cut short, as by an interrupted upload."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def without_part(path: Path, source: Path, part: str) -> Path:
    """A zip package with one of its parts missing."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            if item.filename != part:
                dst.writestr(item, src.read(item))
    return path

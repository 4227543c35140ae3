"""OCR of scanned pages: image-only PDFs made here (text typeset, rendered to
a picture, the picture inserted as the page's only content) must come back
with their words. OCR costs about a second a page, so these documents are
one or two pages, read at a modest resolution."""

from __future__ import annotations

import json
import re
import time

import pymupdf
import pytest

import pdfs
from docutrain_cli.config import Settings
from docutrain_cli.errors import PermanentError
from docutrain_cli.jobs import Job
from docutrain_cli.pipeline.extract import Extraction
from docutrain_cli.pipeline.ocr import OcrOptions, OcrSupport, PageOcr, find_support, ocr_check
from docutrain_cli.pipeline.tesseract import orientation_available
from docutrain_cli.run.process import process_job
from docutrain_cli.run.worker import WorkerContext

TEST_DPI = 150  # enough for 12 pt text; 300 (the default) doubles the time


def process(job: Job, settings: Settings):
    context = WorkerContext(settings)
    try:
        return process_job(job, context)
    finally:
        context.close()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def recall(expected: str, got: str) -> float:
    """Share of the expected words found, in order-insensitive multiset terms."""
    want, have = words(expected), words(got)
    pool: dict[str, int] = {}
    for w in have:
        pool[w] = pool.get(w, 0) + 1
    found = 0
    for w in want:
        if pool.get(w):
            pool[w] -= 1
            found += 1
    return found / len(want)


def paragraph(start: int, count: int = 6) -> str:
    return "\n".join(pdfs.sentence(n) for n in range(start, start + count))


def read(path, **options) -> tuple[list[tuple[int, str]], PageOcr]:
    ocr = PageOcr(OcrOptions(dpi=TEST_DPI, **options))
    with Extraction(path, ocr=ocr) as doc:
        return list(doc.pages()), ocr


def test_scanned_pages_come_back_with_their_words(tesseract, tmp_path):
    texts = [paragraph(1), paragraph(50)]
    pages, ocr = read(pdfs.scanned(tmp_path / "scan.pdf", texts))
    assert [n for n, _ in pages] == [1, 2]
    for (_, got), expected in zip(pages, texts):
        assert recall(expected, got) >= 0.9, got
    assert ocr.pages_done == 2 and ocr.seconds > 0


def test_a_page_turned_a_quarter_is_read_upright(tesseract, tmp_path):
    text = paragraph(7)
    [(_, got)], ocr = read(pdfs.scanned(tmp_path / "sideways.pdf", [text], sideways={0}))
    assert recall(text, got) >= 0.9, got
    assert ocr.pages_done == 1


@pytest.mark.parametrize("degrees", [90, 180, 270, 4, -4, 94, 266])
def test_a_scan_turned_or_skewed_is_read_upright(tesseract, tmp_path, degrees):
    """Stored turned, as a scanner without orientation detection does, and skewed."""
    text = paragraph(20)
    [(_, got)], ocr = read(pdfs.turned_scan(tmp_path / "turned.pdf", [(text, degrees)]))
    assert recall(text, got) >= 0.8, got
    assert ocr.unreadable == []


@pytest.fixture
def only_english(tmp_path):
    """A tessdata folder with English and without osd.traineddata."""
    folder = tmp_path / "tessdata"
    folder.mkdir()
    (folder / "eng.traineddata").symlink_to(f"{find_support(None).tessdata}/eng.traineddata")
    return folder


def test_without_orientation_data_each_turn_is_tried(tesseract, only_english, tmp_path):
    texts = [paragraph(30), paragraph(40)]
    pages, _ = read(pdfs.turned_scan(tmp_path / "turned.pdf", list(zip(texts, [180, 90]))), tessdata=str(only_english))
    for (_, got), expected in zip(pages, texts):
        assert recall(expected, got) >= 0.8, got


def scribbles_after_text(path, text_pages: list[str], scribbled_pages: int):
    """Scanned text pages, then scanned pages of pen strokes without a word."""
    scans = pdfs.turned_scan(path.with_name("text-" + path.name), [(t, 0) for t in text_pages])
    marks = pdfs.scribbled_scan(path.with_name("marks-" + path.name), scribbled_pages)
    with pymupdf.open(scans) as doc, pymupdf.open(marks) as more:
        doc.insert_pdf(more)
        doc.save(path)
    return path


def test_a_page_of_scribbles_is_counted_unreadable_and_not_stored(tesseract, tmp_path):
    text = paragraph(60)
    path = scribbles_after_text(tmp_path / "scan.pdf", [text], 1)
    pages, ocr = read(path)
    assert recall(text, pages[0][1]) >= 0.9
    assert pages[1] == (2, "") and ocr.unreadable == [2]
    settings = Settings(store=str(tmp_path / "store.db"), embedder="offline", ocr_dpi=TEST_DPI)
    result = process(Job(id=1, source=str(path)), settings)
    assert result.unreadable_pages == [2] and result.ocr_pages == 2
    assert result.chunks == 1


def test_a_document_of_only_unreadable_scans_ends_dead_with_its_reason(tesseract, docutrain, tmp_path):
    path = pdfs.scribbled_scan(tmp_path / "marks.pdf", 1)
    settings = Settings(store=str(tmp_path / "store.db"), embedder="offline", ocr_dpi=TEST_DPI)
    with pytest.raises(PermanentError) as info:
        process(Job(id=1, source=str(path)), settings)
    assert str(info.value) == (
        "no extractable text: OCR of the scanned page was unreadable (low confidence, few dictionary words)"
    )


def test_jobs_show_and_the_dashboard_name_the_unreadable_pages(tesseract, docutrain, tmp_path):
    import httpx
    from dashboard_server import dashboard

    scribbles_after_text(docutrain.workdir / "scan.pdf", [paragraph(70)], 1)
    assert docutrain("enqueue", "scan.pdf").returncode == 0
    run = docutrain("run", "--workers", "1", "--drain", DOCUTRAIN_OCR_DPI=str(TEST_DPI))
    assert run.returncode == 0, run.stderr
    assert "unreadable: page 2" in run.stderr
    shown = docutrain("jobs", "show", "1")
    assert re.search(r"unreadable pages\s+\[2\]", shown.stdout), shown.stdout
    with dashboard(docutrain, token=None) as url, httpx.Client(base_url=url) as client:
        page = client.get("/jobs/1")
    assert page.status_code == 200
    assert re.search(r'id="job-unreadable">2: text not stored', page.text)


def test_a_mixed_document_keeps_its_text_and_reads_only_the_scanned_page(tesseract, tmp_path):
    typed = [paragraph(100), paragraph(200)]
    scanned_text = paragraph(300)
    pages, ocr = read(pdfs.mixed(tmp_path / "mixed.pdf", typed, scanned_text, scanned_at=1))
    assert ocr.pages_done == 1
    assert [n for n, _ in pages] == [1, 2, 3]
    # Typed pages come from the text layer: exactly their words, in order.
    assert words(pages[0][1]) == words(typed[0])
    assert words(pages[2][1]) == words(typed[1])
    assert recall(scanned_text, pages[1][1]) >= 0.9


def test_force_reads_every_page_by_ocr(tesseract, tmp_path):
    text = paragraph(400, count=3)
    path = pdfs.write_pdf(tmp_path / "typed.pdf", [text])
    [(_, got)], ocr = read(path, mode="force")
    assert ocr.pages_done == 1
    assert recall(text, got) >= 0.9


def test_off_leaves_scanned_pages_and_says_so(tmp_path):
    path = pdfs.scanned(tmp_path / "scan.pdf", ["Nothing to see"], dpi=50)
    with pytest.raises(PermanentError) as info:
        read(path, mode="off")
    assert str(info.value) == "no extractable text: the pages are scanned images and OCR is off (set ocr = auto)"


def test_without_tesseract_the_reason_says_how_to_get_it(tmp_path):
    path = pdfs.scanned(tmp_path / "scan.pdf", ["Nothing to see"], dpi=50)
    missing = tmp_path / "no-tessdata"
    missing.mkdir()
    with pytest.raises(PermanentError) as info:
        read(path, tessdata=str(missing))
    assert str(info.value) == (
        "no extractable text: the pages are scanned images and OCR is not available: "
        f"no Tesseract language data in {missing} (tessdata setting / TESSDATA_PREFIX)"
    )
    # Nothing configured and nothing installed: the install command.
    assert OcrSupport(None).problem("eng") == "Tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)"


def test_a_missing_language_is_named_with_its_package(tesseract, tmp_path):
    path = pdfs.scanned(tmp_path / "scan.pdf", ["Nothing to see"], dpi=50)
    with pytest.raises(PermanentError, match=r"Tesseract has no xyz language data in .*apt-get install tesseract-ocr-xyz"):
        read(path, language="eng+xyz")
    with pytest.raises(PermanentError, match="^OCR is forced .* but Tesseract has no xyz"):
        read(path, language="xyz", mode="force")
    # Forced OCR that cannot run does not stand in the way of a file that needs none.
    notes = tmp_path / "notes.txt"
    notes.write_text("Plain words.")
    assert read(notes, language="xyz", mode="force")[0] == [(1, "Plain words.")]


def test_more_scanned_pages_than_the_limit_are_refused_before_any_ocr(tesseract, tmp_path):
    path = pdfs.scanned(tmp_path / "long.pdf", ["one", "two", "three"], dpi=50)
    with pytest.raises(PermanentError) as info:
        read(path, max_pages=2)
    assert str(info.value) == "too many pages to OCR: 3 scanned pages, limit 2 (max_ocr_pages)"


def test_ocr_stops_with_a_reason_rather_than_run_into_the_job_timeout(tesseract, tmp_path):
    path = pdfs.scanned(tmp_path / "scan.pdf", ["one", "two"], dpi=50)
    ocr = PageOcr(OcrOptions(dpi=TEST_DPI), deadline=time.monotonic() + 1.0)
    with pytest.raises(PermanentError) as info:
        with Extraction(path, ocr=ocr) as doc:
            list(doc.pages())
    assert str(info.value).startswith("OCR does not fit in the job timeout: 0 of 2 scanned pages read")
    assert ocr.pages_done == 0


def test_a_job_reports_its_ocr_pages_and_seconds(tesseract, tmp_path):
    text = paragraph(500)
    path = pdfs.scanned(tmp_path / "scan.pdf", [text])
    settings = Settings(store=str(tmp_path / "store.db"), embedder="offline", ocr_dpi=TEST_DPI)
    result = process(Job(id=1, source=str(path)), settings)
    assert result.ocr_pages == 1 and result.ocr_seconds > 0
    assert result.chunks >= 1


def test_doctor_reports_ocr_and_its_languages(tesseract, docutrain, only_english):
    checks = {c["name"]: c for c in json.loads(docutrain("doctor", "--json").stdout)}
    ocr = checks["OCR (Tesseract)"]
    assert ocr["ok"] and "installed languages: eng" in ocr["detail"]
    orientation = checks["OCR orientation detection"]
    assert orientation["ok"] and orientation["detail"].startswith("available (osd.traineddata in ")
    without = {c["name"]: c for c in json.loads(docutrain("doctor", "--json", TESSDATA_PREFIX=str(only_english)).stdout)}
    assert without["OCR orientation detection"]["detail"].startswith(f"no osd.traineddata in {only_english}")
    assert without["OCR orientation detection"]["fix"] == "install it: apt-get install tesseract-ocr-osd"
    bad = {c["name"]: c for c in json.loads(docutrain("doctor", "--json", DOCUTRAIN_OCR_LANGUAGE="eng+xyz").stdout)}
    assert not bad["OCR (Tesseract)"]["ok"]


def test_ocr_check_without_tesseract_is_a_hint_not_a_failure(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    configured = Settings(tessdata=str(empty))
    ok, detail, _ = ocr_check(configured)
    assert not ok and str(empty) in detail  # a folder was named: it must hold the data
    assert ocr_check(Settings(ocr="off"))[0]


def test_a_run_shows_ocr_progress_and_counts_ocr_in_the_summary(tesseract, docutrain, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    pdfs.scanned(uploads / "scan.pdf", [paragraph(600, 3), paragraph(700, 3)])
    assert docutrain("enqueue", "uploads").returncode == 0
    result = docutrain("run", "--workers", "1", "--drain", "--json", DOCUTRAIN_OCR_DPI=str(TEST_DPI))
    assert result.returncode == 0, result.stderr
    assert "OCR page 1/2" in result.stderr and "OCR page 2/2" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["totals"]["ocr_pages"] == 2 and summary["ocr_seconds"] > 0
    again = docutrain("enqueue", "uploads", "--force")
    assert again.returncode == 0
    logged = docutrain("run", "--workers", "1", "--drain", DOCUTRAIN_OCR_DPI=str(TEST_DPI))
    assert re.search(r"2 pages read by OCR in [\d.]+s of worker time", logged.stderr), logged.stderr


def test_a_scan_with_no_words_ends_dead_saying_ocr_found_none(tesseract, tmp_path):
    path = pdfs.scanned(tmp_path / "blank.pdf", ["", ""], dpi=50)  # scans of blank sheets
    settings = Settings(store=str(tmp_path / "store.db"), embedder="offline", ocr_dpi=72)
    with pytest.raises(PermanentError) as info:
        process(Job(id=1, source=str(path)), settings)
    assert str(info.value) == "no extractable text, even by OCR of 2 scanned pages"


def test_broken_language_data_fails_the_pages_not_the_worker(tesseract, tmp_path):
    broken = tmp_path / "tessdata"
    broken.mkdir()
    (broken / "eng.traineddata").write_bytes(b"not a model")
    path = pdfs.scanned(tmp_path / "scan.pdf", ["one", "two"], dpi=50)
    with pytest.raises(PermanentError) as info:
        read(path, tessdata=str(broken))
    assert str(info.value).startswith("no extractable text: OCR failed on every scanned page (")


def test_without_ocr_a_mixed_document_is_done_and_says_which_pages_were_left(docutrain, tmp_path):
    pdfs.mixed(tmp_path / "mixed.pdf", [paragraph(800), paragraph(900)], "Scanned words", scanned_at=1, dpi=50)
    assert docutrain("enqueue", "mixed.pdf").returncode == 0
    result = docutrain("run", "--workers", "1", "--drain", DOCUTRAIN_OCR="off")
    assert result.returncode == 0, result.stderr
    assert "(3 pages, 1 chunk, 1 scanned page left unread (no OCR))" in result.stderr


def test_ocr_settings_are_checked_and_tessdata_prefix_is_read(tmp_path):
    from docutrain_cli.config import load_settings
    from docutrain_cli.errors import ConfigError

    settings = load_settings(environ={"TESSDATA_PREFIX": "/opt/tessdata", "DOCUTRAIN_OCR_LANGUAGE": "eng+deu"})
    assert (settings.tessdata, settings.ocr_language, settings.ocr, settings.ocr_dpi) == ("/opt/tessdata", "eng+deu", "auto", 200)
    for bad, message in [
        ({"ocr": "sometimes"}, "ocr: expected auto, off or force"),
        ({"ocr_language": "eng deu"}, "ocr_language: expected Tesseract language names joined with '+'"),
        ({"ocr_dpi": 20}, "ocr_dpi: must be between 72 and 1200"),
        ({"max_ocr_pages": 0}, "max_ocr_pages: must be at least 1"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(bad, environ={})

"""The dashboard in a real browser: Debian's Chromium driven by Playwright
(with the system Chromium as its executable; Playwright's own browsers are
never downloaded). One browser for the module, a fresh context per test.

Skips with the reason when Chromium or Playwright is missing (scripts/test
installs Chromium when it runs as root), and fails instead when CI is set.

DOCUTRAIN_SCREENSHOTS=docs saves the screenshots the README shows there;
otherwise they go to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from dashboard_server import dashboard

sys.path.insert(0, str(Path(__file__).parent))
from pdfs import multi_page  # noqa: E402

TOKEN = "test-token-123"
HOSTILE = "<img src=x onerror=alert(1)>.pdf"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _unavailable("no chromium on PATH (apt-get install chromium; scripts/test does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def fast_refresh(monkeypatch):
    from docutrain_cli.serve import dashboard as dashboard_module

    monkeypatch.setattr(dashboard_module, "REFRESH_SECONDS", 1)


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = os.environ.get("DOCUTRAIN_SCREENSHOTS")
    return Path(folder) if folder else tmp_path


def new_page(browser, **context):
    page = browser.new_context(**context).new_page()
    page.set_default_timeout(20_000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    return page


def log_in(page, url: str, target: str = "/") -> None:
    page.goto(url + target)
    assert page.url.startswith(url + "/login")
    page.fill("#token", TOKEN)
    page.click("form.login button[type=submit]")
    page.wait_for_url(url + target)


def count(page, state: str) -> int:
    return int(page.inner_text(f"#count-{state}").replace(",", ""))


def status(docutrain) -> dict:
    return docutrain.status()


def test_counts_change_while_a_run_drains_then_log_out(browser, docutrain, fast_refresh, shots):
    # Slow jobs (a test processor that sleeps in real worker processes), so the
    # page has time to show the run in progress.
    for i in range(6):
        (docutrain.workdir / f"sleep-0.7-{i}.pdf").write_text(f"document {i}")  # distinct content: no dedup
    (docutrain.workdir / "permanent-scan.pdf").write_text("fails for good")
    assert docutrain("enqueue", str(docutrain.workdir)).returncode == 0
    env = {"DOCUTRAIN_PROCESSOR": "tests.processors:by_name"}
    with dashboard(docutrain) as url:
        page = new_page(browser)
        log_in(page, url)
        assert count(page, "queued") == 7 and count(page, "done") == 0
        page.evaluate("window.notReloaded = true")
        # a search being typed survives the refreshes
        page.fill("input[name=q]", "sleep-0.7-3")
        before = page.inner_text("p.updated")
        page.wait_for_timeout(2500)
        assert page.input_value("input[name=q]") == "sleep-0.7-3"
        assert page.inner_text("p.updated") == before  # held back while typing
        page.locator("input[name=q]").blur()
        end = time.monotonic() + 10
        while page.inner_text("p.updated") == before and time.monotonic() < end:
            page.wait_for_timeout(100)
        assert page.inner_text("p.updated") != before  # refreshing again
        run = docutrain.start("run", "--drain", "--workers", "1", **env)
        try:
            seen = set()
            end = time.monotonic() + 60
            while count(page, "done") < 6 and time.monotonic() < end:
                seen.add(count(page, "done"))
                if count(page, "done") == 2 and not (shots / "dashboard.png").exists():
                    # mid-run: a worker shows what it is on, the chart has bars
                    page.wait_for_selector("table.workers td.file a")
                    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
                page.wait_for_timeout(200)
            assert run.wait(timeout=60) == 3, run.stderr.read()  # one dead
        finally:
            if run.poll() is None:
                run.kill()
        assert count(page, "done") == 6 and count(page, "queued") == 0 and count(page, "dead") == 1
        assert seen - {0, 6}, f"never saw the run in progress: {sorted(seen)}"
        assert page.evaluate("window.notReloaded") is True  # refreshed in place
        page.wait_for_selector("#runner-holder.warn")  # the runner let go of the queue
        assert "last 5 minutes: 7 jobs" in page.inner_text("section.charts")  # 6 done + 1 dead, a short run

        page.click("form.logout button")
        page.wait_for_url(url + "/login")
        page.goto(url + "/")
        assert page.url.startswith(url + "/login")
        assert not page.dialogs


def test_a_dead_job_with_a_hostile_name_shows_as_text_and_retry_queues_it(browser, docutrain, shots):
    multi_page(docutrain.workdir / "report.pdf", pages=2)
    (docutrain.workdir / HOSTILE).write_bytes(b"not a PDF at all")
    assert docutrain("enqueue", str(docutrain.workdir)).returncode == 0
    assert docutrain("run", "--drain", "--workers", "1").returncode == 3  # one dead
    with dashboard(docutrain) as url:
        page = new_page(browser)
        log_in(page, url)
        dead = page.locator("section.dead table.jobs td.file a")
        assert dead.count() == 1
        assert dead.text_content().endswith("/" + HOSTILE)  # the name, as text (folder and name are two boxes)
        assert page.locator("main img").count() == 0  # no element was made from it

        dead.click()
        page.wait_for_selector("#job-source")
        assert page.inner_text("#job-source").endswith("/" + HOSTILE)
        assert "not a PDF" in page.inner_text("ol.errors")
        assert page.locator("main img").count() == 0
        page.screenshot(path=str(shots / "dead-job.png"), full_page=True)

        page.click("button.retry")
        page.wait_for_selector("p.notice")
        assert page.inner_text("p.notice") == "1 job(s) back in the queue"
        assert page.inner_text("h1 .badge") == "queued"
        assert (status(docutrain)["dead"], status(docutrain)["queued"]) == (0, 1)

        # dead again, then "Retry all dead" from the dashboard
        assert docutrain("run", "--drain", "--workers", "1").returncode == 3
        page.goto(url + "/")
        page.click("#retry-all-dead")
        page.wait_for_selector("p.notice")
        assert page.inner_text("p.notice") == "1 job(s) back in the queue"
        assert count(page, "queued") == 1 and count(page, "dead") == 0
        assert not page.dialogs  # the onerror handler never ran


def test_reads_on_a_phone(browser, docutrain, shots):
    for i in range(3):
        multi_page(docutrain.workdir / f"contract-{i}.pdf", pages=2, seed=i)
    (docutrain.workdir / "broken-scan-with-a-rather-long-file-name.pdf").write_bytes(b"%PDF-1.4 truncated")
    assert docutrain("enqueue", str(docutrain.workdir)).returncode == 0
    assert docutrain("run", "--drain", "--workers", "1").returncode == 3
    with dashboard(docutrain) as url:
        page = new_page(browser, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
        log_in(page, url)
        assert count(page, "done") == 3
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
        # tables become labelled cards: the header row is hidden
        assert not page.locator("section.dead table.jobs thead").is_visible()
        assert page.locator("section.dead table.jobs td.error").first.is_visible()
        page.screenshot(path=str(shots / "dashboard-phone.png"))
    assert json.loads(docutrain("status", "--json").stdout)["dead"] == 1


# -- issue 26: names kept whole, a leased job's own look, one time format, a chart window, OCR progress --

ZONED_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z][A-Za-z+\-0-9]*"  # 2026-12-03 04:59:16 UTC


def names_whole_and_folders_shortened(page) -> tuple[int, int]:
    """For every file link: the name on one line, not clipped, whole in its
    cell. Returns (links, links whose folder is shortened)."""
    return tuple(page.evaluate("""() => {
        let links = 0, shortened = 0;
        for (const a of document.querySelectorAll("a.path")) {
            const name = a.querySelector(".name"), folder = a.querySelector(".folder");
            // The cell, as far as it shows: a table may scroll inside its frame.
            const td = a.closest("td").getBoundingClientRect(), frame = a.closest(".table-wrap").getBoundingClientRect();
            const cell = {left: Math.max(td.left, frame.left), right: Math.min(td.right, frame.right)};
            const box = name.getBoundingClientRect();
            if (name.getClientRects().length !== 1) throw new Error("name on two lines: " + name.textContent);
            if (name.scrollWidth > name.clientWidth + 1) throw new Error("name clipped: " + name.textContent);
            if (box.left < cell.left - 1 || box.right > cell.right + 1) throw new Error("name outside its cell: " + name.textContent + " at " + window.innerWidth + " px");
            links += 1;
            if (folder && folder.scrollWidth > folder.clientWidth + 1) shortened += 1;
        }
        return [links, shortened];
    }"""))


def test_file_names_stay_whole_and_a_leased_job_waiting_for_a_worker_looks_its_own(browser, docutrain, fast_refresh, shots):
    """One worker holds `wait-…` until the test lets it go; the runner has
    leased a second job, which waits in the pool's line (not `running`)."""
    deep = docutrain.workdir / "customers" / "acme-corporation" / "2024" / "contracts" / "live" / "uploads"
    deep.mkdir(parents=True)
    names = ["wait-report-40.pdf", "wait-quarterly-summary-of-the-board.pdf", "signed-agreement-with-annexes.pdf"]
    for i, name in enumerate(names):
        (deep / name).write_text(f"document {i}")
    (deep / "permanent-broken-scan.pdf").write_text("fails for good")
    assert docutrain("enqueue", str(deep)).returncode == 0
    run = docutrain.start("run", "--workers", "1", DOCUTRAIN_PROCESSOR="tests.processors:by_name")
    try:
        with dashboard(docutrain) as url:
            page = new_page(browser, viewport={"width": 1000, "height": 900})
            log_in(page, url)
            leased = page.locator("section.runner table.jobs .badge.state-leased")
            leased.first.wait_for()
            page.wait_for_selector("table.workers a.path")
            running = page.locator("section.runner table.jobs .badge.state-running")
            assert (leased.count(), running.count()) == (1, 1), page.inner_text("section.runner")
            assert leased.inner_text() == "leased"
            look = "b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).borderStyle]"
            assert leased.evaluate(look) != running.evaluate(look)  # not the blue `running` badge
            row = page.locator("section.runner table.jobs tr", has=page.locator(".badge.state-leased"))
            assert "waiting for a worker" in row.inner_text()

            page.screenshot(path=str(shots / "dashboard-names.png"), full_page=True)
            links, shortened = names_whole_and_folders_shortened(page)
            assert links >= 6 and shortened >= 1, (links, shortened)  # narrow cells: the folder gave way
            texts = page.locator("section.recent a.path").evaluate_all("els => els.map(e => e.textContent)")
            assert sorted(t.rsplit("/", 1)[1] for t in texts) == sorted(names + ["permanent-broken-scan.pdf"])

            # One time format, with the zone, in the header and the tables.
            # A locator assertion, not wait_for_function: the page's CSP forbids eval,
            # which wait_for_function needs once it has to poll.
            from playwright.sync_api import expect
            expect(page.locator("#refresh-status")).to_have_text(re.compile(r"^updated "), timeout=20_000)
            assert re.fullmatch("updated " + ZONED_TIME, page.inner_text("#refresh-status"))
            for cell in page.locator("section.recent td[data-label=when]").all_inner_texts():
                assert re.fullmatch(ZONED_TIME, cell.strip()), cell

            for name in names[:2]:  # let both go; the rest finish
                (deep / name).with_suffix(".go").write_text("go")
            end = time.monotonic() + 60
            while count(page, "done") < 3 and time.monotonic() < end:
                page.wait_for_timeout(200)
            assert count(page, "done") == 3 and count(page, "dead") == 1
            # A short run: the charts show the last 5 minutes, not one thin bar of an hour.
            charts = page.inner_text("section.charts")
            assert "last 5 minutes: 4 jobs" in charts and "−5 min" in charts, charts
            assert page.locator("section.runner .badge.state-leased").count() == 0
            page.set_viewport_size({"width": 390, "height": 844})  # a phone: names whole there too
            page.wait_for_timeout(1500)
            assert names_whole_and_folders_shortened(page)[0] >= 4
            assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
            page.screenshot(path=str(shots / "dashboard-names-phone.png"), full_page=True)
    finally:
        run.terminate()
        run.wait(timeout=60)


def test_the_workers_table_shows_the_ocr_progress_the_cli_shows(browser, docutrain, fast_refresh, shots):
    from docutrain_cli.pipeline.ocr import find_support
    from pdfs import scanned

    problem = find_support(None).problem("eng")
    if problem:
        _unavailable(f"OCR needs Tesseract: {problem}")
    (docutrain.workdir / "uploads").mkdir()
    scanned(docutrain.workdir / "uploads" / "scanned-letter.pdf",
            [f"Page {i} of a scanned letter about refunds and deposits." for i in range(1, 13)])
    assert docutrain("enqueue", "uploads").returncode == 0
    run = docutrain.start("run", "--workers", "1", "--drain")
    try:
        with dashboard(docutrain) as url:
            page = new_page(browser)
            log_in(page, url)
            progress = page.locator("table.workers .progress")
            progress.first.wait_for(timeout=60_000)
            assert re.fullmatch(r"OCR page \d+/12", progress.first.inner_text()), progress.first.inner_text()
            page.screenshot(path=str(shots / "dashboard-ocr.png"), full_page=True)
        assert run.wait(timeout=120) == 0, run.stderr.read()
    finally:
        if run.poll() is None:
            run.kill()

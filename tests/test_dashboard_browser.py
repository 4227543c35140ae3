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
        assert "last hour: 7 jobs" in page.inner_text("section.charts")  # 6 done + 1 dead

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
        assert dead.inner_text().endswith("/" + HOSTILE)  # the name, as text
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

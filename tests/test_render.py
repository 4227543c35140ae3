"""What the CLI shows, rendered at fixed terminal widths (80 and 120 columns):
file names stay whole, errors wrap, the live display tells the truth."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from docutrain_cli.config import Settings
from docutrain_cli.jobs import Job, JobResult, JobState
from docutrain_cli.cli.progress import RATE_WINDOW, LiveCounts, RichObserver, summary_line, summary_text
from docutrain_cli.queues.base import QueueStats
from docutrain_cli.cli.render import FileName, job_detail, jobs_table, search_hits
from docutrain_cli.cli.words import plural
from docutrain_cli.run.summary import RunSummary
from docutrain_cli.store.local import Hit

DEEP = "/home/someone/projects/docutrain/demo/uploads/2024/contracts/"
NAMES = ["truncated.pdf", "workers-and-crash-recovery-notes.pdf", "a.txt"]
ERROR = "corrupt or not a PDF (cannot open: format error: No default Layer config found in this file)"


def rendered(renderable, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), highlight=False, color_system=None)
    console.print(renderable)
    return console.file.getvalue().splitlines()


def assert_names_whole(lines: list[str], width: int, names=NAMES) -> None:
    assert all(len(line.rstrip()) <= width for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    for name in names:
        assert name in text, f"{name} was cut:\n{text}"


def dead_jobs() -> list[Job]:
    return [
        Job(id=i, source=DEEP + name, state=JobState.DEAD, attempts=5, errors=[f"{DEEP + name}: {ERROR}"])
        for i, name in enumerate(NAMES, 1)
    ]


@pytest.mark.parametrize("width", [80, 120])
def test_jobs_table_keeps_file_names_whole_and_wraps_the_error(width):
    lines = rendered(jobs_table(dead_jobs()), width)
    assert_names_whole(lines, width)
    assert "…" in "\n".join(lines)  # the folder part was shortened, not the name
    assert len(lines) > len(NAMES) + 1  # the long error wrapped onto more lines
    shown = set("\n".join(lines).split())
    assert set(ERROR.split()) <= shown  # and none of it was lost


def test_a_path_that_fits_is_shown_whole():
    lines = rendered(jobs_table([Job(id=1, source="in/a.pdf", state=JobState.QUEUED)]), 80)
    assert "in/a.pdf" in lines[1]


def test_a_name_longer_than_the_terminal_is_folded_not_dropped():
    name = "x" * 100 + ".pdf"
    assert FileName(DEEP + name).fitted(40) == name  # the name, no folder, no ellipsis
    jobs = [Job(id=1, source=DEEP + name, state=JobState.QUEUED), Job(id=2, source="a.pdf", errors=["a.pdf: boom"])]
    for width in (60, 80):
        lines = rendered(jobs_table(jobs), width)
        assert all(len(line.rstrip()) <= width for line in lines), "\n".join(lines)
        assert "".join(line.strip() for line in lines).count("x") >= 100
        assert "boom" in "\n".join(lines)


@pytest.mark.parametrize("width", [80, 120])
def test_search_hits_keep_file_names_whole(width):
    hits = [
        Hit(score=0.5 - i / 10, document_key=DEEP + name, source=DEEP + name, chunk_index=i, page_start=1,
            page_end=2, content="workers survive a crash " * 30)
        for i, name in enumerate(NAMES)
    ]
    lines = rendered(search_hits(hits), width)
    assert_names_whole(lines, width)
    assert "p. 1-2" in "\n".join(lines) and "chunk 2" in "\n".join(lines)


def test_job_detail_shows_the_result_as_a_small_table():
    job = Job(id=7, source="in/a.pdf", sha256="ab" * 32, state=JobState.DONE, attempts=1, enqueued_at=time.time(),
              result=JobResult(pages=3, chunks=2, tokens_embedded=1234, model="offline-hash-v1", sha256="ab" * 32,
                               document_key="in/a.pdf", cost_usd=0.0))
    text = "\n".join(rendered(job_detail(job), 80))
    assert "result:" in text and "{" not in text  # not a raw JSON line
    assert text.count("ab" * 32) == 1 and text.count("in/a.pdf") == 1  # the result does not repeat the job
    assert "$0.0000 at list price" in text
    assert any(line.split()[-2:] == ["embedded", "1,234"] for line in text.splitlines()), text
    assert any(line.split()[-2:] == ["pages", "3"] for line in text.splitlines()), text


class FakeRunner:
    """What RichObserver reads from a runner."""

    settings = Settings(workers=2, embedder="offline")

    def __init__(self, running: list[Job], progress: dict[int, str] | None = None):
        self.running = running
        self.progress = progress or {}  # job id -> what its worker last reported


def test_the_live_display_starts_with_the_real_queued_count_and_says_dead():
    console = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None, record=True)
    observer = RichObserver(console)
    observer.started(FakeRunner([]), QueueStats({"queued": 40, "running": 0, "retrying": 0, "done": 0, "dead": 0}, None, None, None))
    try:
        first_frame = console.export_text(clear=False)
        assert "40 remaining" in first_frame, first_frame
        observer.job_finished(Job(id=1, source="in/bad.pdf"), "dead", "in/bad.pdf: corrupt")
        observer.live.refresh()  # what rich's refresh thread does 4 times a second
        frame = console.export_text(clear=False)
        assert "1 dead" in frame and "failed" not in frame
        assert "39 remaining" in frame
    finally:
        observer.finished(RunSummary())


@pytest.mark.parametrize("width", [80, 120])
def test_the_live_display_shows_each_running_job_its_whole_name_and_time(width):
    now = time.time()
    running = [Job(id=i, source=DEEP + name, started_at=now - 12 * i) for i, name in enumerate(NAMES, 1)]
    observer = RichObserver(Console(width=width, file=io.StringIO()))
    observer.runner = FakeRunner(running)
    lines = rendered(observer.render(), width)
    assert_names_whole(lines, width)
    text = "\n".join(lines)
    assert "12s" in text and "24s" in text and "36s" in text


@pytest.mark.parametrize("width", [80, 120])
def test_a_running_job_shows_what_its_worker_reports(width):
    now = time.time()
    running = [Job(id=i, source=DEEP + name, started_at=now - 12 * i) for i, name in enumerate(NAMES, 1)]
    observer = RichObserver(Console(width=width, file=io.StringIO()))
    observer.runner = FakeRunner(running, progress={2: "OCR page 3/40"})
    lines = rendered(observer.render(), width)
    assert_names_whole(lines, width)
    [line] = [line for line in lines if "job 2" in line]
    assert line.rstrip().endswith("24s  OCR page 3/40"), line


def test_the_live_counts_take_in_jobs_that_arrive_and_use_a_recent_rate():
    """A service: 5 jobs at start, 10 more arrive while it runs; the rate is
    the last minute's, and an idle service says so instead of a falling rate."""
    counts = LiveCounts(now=0.0)
    counts.counted(5)
    for t in range(1, 4):  # one job a second
        counts.started()
        counts.settled("done", now=float(t))
    assert (counts.done, counts.unfinished, counts.total) == (3, 2, 5)
    assert counts.rate(now=3.0) == 1.0 and counts.eta_seconds(now=3.0) == 2.0
    counts.counted(12)  # the queue says 12 unfinished: 10 arrived
    assert (counts.unfinished, counts.total) == (12, 15)
    assert "3 done" in counts.line(3.0) and "12 remaining" in counts.line(3.0) and "ETA 12s" in counts.line(3.0)
    for _ in range(3):  # started here before the next count: still counted
        counts.started()
    counts.counted(0)
    assert counts.unfinished == 3 and counts.total == 6
    for t in (4.0, 5.0, 6.0):
        counts.settled("done", now=t)
    # Nothing for a while: the rate falls to 0 within the window, it is not the run's average.
    assert counts.rate(now=6.0 + RATE_WINDOW + 1) == 0.0
    counts.idle = True
    line = counts.line(6.0 + RATE_WINDOW + 1)
    assert "6 done" in line and "0 remaining" in line and "idle, waiting for jobs" in line and "docs/s" not in line
    counts.started()  # a job arrives: not idle any more
    assert "idle" not in counts.line(70.0)
    counts.settled("retry", now=71.0)  # a retry is not finished: still remaining, not in the rate
    assert (counts.done, counts.rate(now=71.0)) == (6, 0.0)


def test_the_live_display_counts_jobs_the_queue_reports_after_start():
    console = Console(width=100, file=io.StringIO(), force_terminal=True, color_system=None, record=True)
    observer = RichObserver(console)
    stats = lambda queued, running=0: QueueStats(  # noqa: E731
        {"queued": queued, "running": running, "retrying": 0, "done": 0, "dead": 0}, None, None, None)
    observer.started(FakeRunner([]), stats(2))
    try:
        for i in (1, 2):
            observer.job_started(Job(id=i, source=f"in/{i}.pdf"))
            observer.job_finished(Job(id=i, source=f"in/{i}.pdf"), "done", None)
        observer.live.refresh()
        assert "0 remaining" in console.export_text()
        observer.queue_counts(stats(17, running=1))  # 18 arrived while it ran
        observer.live.refresh()
        frame = console.export_text()
        assert "2 done" in frame and "18 remaining" in frame and "ETA" in frame and "ETA -" not in frame
        observer.idle(stats(0))
        observer.live.refresh()
        assert "idle, waiting for jobs" in console.export_text()
    finally:
        observer.finished(RunSummary())


def test_the_running_time_moves_on_every_refresh_without_any_event():
    console = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None, record=True)
    job = Job(id=3, source="in/slow.pdf", started_at=time.time())
    runner = FakeRunner([job])
    observer = RichObserver(console)
    observer.started(runner, QueueStats.empty())
    try:
        job.started_at = time.time() - 72  # as if 72 s went by with no job starting or ending
        observer.live.refresh()  # what rich's refresh thread does 4 times a second
        assert "1.2m" in console.export_text(clear=False)
    finally:
        observer.finished(RunSummary())


def test_the_summary_counts_in_words():
    summary = RunSummary(done=1, retried=1, elapsed=1.0)
    summary.totals.update(pages=1, chunks=1, tokens_embedded=1, tokens_cached=0)
    line = summary_line(summary)
    assert "1 retry," in line.replace(";", ",") and "1 page, 1 chunk, 1 token embedded" in line
    summary.totals.update(pages=2, chunks=3)
    summary.retried = 2
    assert "2 pages, 3 chunks" in summary_line(summary) and "2 retries" in summary_line(summary)
    assert plural(1, "entry") == "1 entry" and plural(2, "entry") == "2 entries" and plural(2, "day") == "2 days"


@pytest.mark.parametrize("width", [40, 80, 120])
def test_the_end_of_run_summary_wraps_between_words(width):
    """At 120 columns it once broke `3,391,334 from cache` into `from c` / `ache`."""
    summary = RunSummary(done=1812, dead=3, retried=7, released=2, elapsed=5423.7, cost_usd=12.3456,
                         given_back=4, ocr_seconds=311.2, remaining={"queued": 18, "retrying": 2})
    summary.totals.update(pages=48211, chunks=96402, tokens_embedded=61727734, tokens_cached=3391334, ocr_pages=402)
    words = summary_line(summary).split()
    lines = rendered(summary_text(summary), width)
    assert len(lines) > 1 and all(len(line.rstrip()) <= width for line in lines), "\n".join(lines)
    assert [word for line in lines for word in line.split()] == words  # every word whole, in order

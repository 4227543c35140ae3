"""`docutrain estimate`: real `docutrain` processes on real PDFs, with the
OpenAI stand-in configured as the embedding server. The estimate must send
it nothing, and must come within 10 % of what a real run is then billed (the
stand-in counts the tokens it bills)."""

from __future__ import annotations

import json
import time

import pytest
from rich.console import Console

import pdfs
from docutrain_cli.config import environ_flag, load_settings
from docutrain_cli.pipeline.ocr import find_support

KEY = "sk-proj-estimate-test-0123456789abcdefXYZ"


def corpus(folder, seeds, pages: int = 5) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    return [pdfs.multi_page(folder / f"doc{seed:03}.pdf", pages=pages, seed=seed) for seed in seeds]


def env_for(standin, **extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": standin.base_url, **extra}


def estimate(docutrain, *args: str, **env: str) -> dict:
    result = docutrain("estimate", *args, "--json", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def drain(docutrain, standin, folder) -> int:
    """Queue and run the folder against the stand-in; the tokens it billed."""
    before = standin.tokens
    assert docutrain("enqueue", str(folder)).returncode == 0
    result = docutrain("run", "--workers", "2", "--drain", "--json", **env_for(standin))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dead"] == 0
    return standin.tokens - before


def test_the_estimate_sends_nothing_and_comes_within_ten_percent_of_the_bill(docutrain, tmp_path, openai_standin):
    openai_standin.limit(tpm=600_000)  # its answers carry the limit headers, as OpenAI's do
    # One earlier document: the rate budget learns the limit and how the server counts.
    drain(docutrain, openai_standin, corpus(tmp_path / "earlier", [900])[0].parent)
    corpus(tmp_path / "uploads", range(1, 9), pages=6)
    requests_before = len(openai_standin.requests)

    first = estimate(docutrain, "uploads", **env_for(openai_standin))

    assert len(openai_standin.requests) == requests_before  # not one request
    assert (first["files"], first["pages"], first["cached_tokens"], first["refused"]) == (8, 48, 0, [])
    assert first["server_tokens_per_estimated_token"]  # calibrated by the earlier run
    billed = drain(docutrain, openai_standin, tmp_path / "uploads")
    print(f"estimated {first['tokens']:,} tokens, billed {billed:,} ({first['tokens'] / billed - 1:+.1%})")
    assert abs(first["tokens"] - billed) <= 0.10 * billed
    assert first["chunks"] == sum(len(r.inputs) for r in openai_standin.requests[requests_before:])
    assert first["cost_usd"] == pytest.approx(first["tokens"] * 0.02 / 1e6, abs=1e-6)
    assert first["batch_cost_usd"] == pytest.approx(first["cost_usd"] / 2, abs=1e-6)
    assert (first["tokens_per_minute_limit"], first["limit_source"]) == (600_000, "headers")
    assert first["minutes_at_limit"] == round(first["tokens"] / 600_000, 2)

    # Everything is in the embedding cache now: nothing left to pay.
    again = estimate(docutrain, "uploads", **env_for(openai_standin))
    assert again["tokens"] == 0 and again["cost_usd"] == 0
    assert abs(again["cached_tokens"] - billed) <= 0.10 * billed
    assert (again["files"], again["chunks"]) == (first["files"], first["chunks"])


def test_a_first_estimate_says_it_is_not_calibrated_yet(docutrain, tmp_path, openai_standin):
    corpus(tmp_path / "uploads", [1, 2])
    result = docutrain("estimate", "uploads", **env_for(openai_standin))
    assert result.returncode == 0, result.stderr
    assert openai_standin.requests == []
    assert "tokens to pay" in result.stdout and "not yet calibrated" in result.stdout
    assert "no rate limit known" in result.stdout
    assert not (tmp_path / "queue.db").exists() and not (tmp_path / "docutrain.db").exists()  # nothing created
    data = estimate(docutrain, "uploads", **env_for(openai_standin))
    assert (data["counted_with"], data["server_tokens_per_estimated_token"], data["minutes_at_limit"]) == (
        "estimate", None, None,
    )


def test_the_limit_from_the_settings_and_the_queue_ahead(docutrain, tmp_path, openai_standin):
    corpus(tmp_path / "queued", [11, 12, 13])
    corpus(tmp_path / "mine", [21])
    assert docutrain("enqueue", "queued").returncode == 0
    env = env_for(openai_standin, DOCUTRAIN_EMBEDDING_TPM="60000")

    queued_alone = estimate(docutrain, "queued", **env)
    mine = estimate(docutrain, "mine", **env)

    assert openai_standin.requests == []
    assert (mine["tokens_per_minute_limit"], mine["limit_source"]) == (60_000, "settings")
    assert mine["minutes_at_limit"] == round(mine["tokens"] / 60_000, 2)
    ahead = mine["queue_ahead"]
    assert (ahead["jobs"], ahead["counted_jobs"], ahead["tokens"]) == (3, 3, queued_alone["tokens"])
    assert ahead["minutes_at_limit"] == round(queued_alone["tokens"] / 60_000, 2)
    shown = docutrain("estimate", "mine", **env).stdout
    assert "queue ahead" in shown and "3 jobs" in shown and "from the settings" in shown


def test_a_long_queue_is_counted_from_a_sample(tmp_path, monkeypatch):
    from docutrain_cli.run import estimate as estimating
    from docutrain_cli.queues.enqueue import enqueue_paths
    from docutrain_cli.queues import open_queue

    files = corpus(tmp_path / "queued", range(31, 35), pages=3)  # four documents of the same size
    settings = load_settings({"queue": str(tmp_path / "q.db"), "store": str(tmp_path / "s.db")}, environ={})
    whole = estimating.estimate(settings, [str(f) for f in files]).tokens
    monkeypatch.setattr(estimating, "QUEUE_COUNTED_AT_MOST", 2)
    with open_queue(settings) as queue:
        enqueue_paths(queue, [str(f) for f in files])
        ahead = estimating.estimate(settings, [str(files[0])], queue).queue_ahead
    assert (ahead.jobs, ahead.counted_jobs) == (4, 2)
    assert abs(ahead.tokens - whole) <= 0.05 * whole  # two counted, doubled


def test_worker_processes_count_as_one_process_does(tmp_path):
    from docutrain_cli.run.estimate import estimate as estimate_paths

    files = corpus(tmp_path / "uploads", range(41, 49), pages=2)
    pdfs.garbage(tmp_path / "uploads" / "garbage.pdf")
    settings = load_settings({"queue": str(tmp_path / "q.db"), "store": str(tmp_path / "s.db")}, environ={})
    alone = estimate_paths(settings.replace(workers=1), [str(tmp_path / "uploads")])
    pooled = estimate_paths(settings.replace(workers=2), [str(tmp_path / "uploads")])
    assert pooled == alone and (alone.files, alone.pages, len(alone.refused)) == (len(files), 16, 1)


def test_bad_files_are_one_line_each_and_the_rest_is_counted(docutrain, tmp_path):
    folder = tmp_path / "uploads"
    corpus(folder, [1])
    pdfs.garbage(folder / "garbage.pdf")
    pdfs.empty(folder / "empty.pdf")
    pdfs.encrypted(folder / "locked.pdf")
    (folder / "copy.pdf").write_bytes((folder / "doc001.pdf").read_bytes())

    result = docutrain("estimate", "uploads", "missing.pdf", "--json")

    assert result.returncode == 3, result.stderr
    data = json.loads(result.stdout)
    assert (data["files"], data["pages"], data["duplicates"]) == (1, 5, 1)
    reasons = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in data["refused"]}
    assert reasons == {
        "missing.pdf": "no such file or folder",
        "garbage.pdf": "not a PDF: cannot open",
        "empty.pdf": "empty file",
        "locked.pdf": reasons["locked.pdf"],
    } and "password" in reasons["locked.pdf"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("docutrain: error: ") for line in lines)
    assert "Traceback" not in result.stderr
    assert docutrain("estimate").returncode == 2  # no path: a usage error


@pytest.fixture
def tesseract():
    problem = find_support(None).problem("eng")
    if problem:
        if environ_flag("CI"):
            pytest.fail(f"needs Tesseract: {problem}")
        pytest.skip(f"needs Tesseract: {problem}")


def test_scanned_pages_are_counted_not_read(docutrain, tmp_path, tesseract):
    folder = tmp_path / "uploads"
    folder.mkdir()
    pdfs.scanned(folder / "scan.pdf", ["A scanned page about the lease."] * 3)
    pdfs.mixed(folder / "mixed.pdf", [pdfs.sentence(n) for n in range(3)], "The scanned annex.")
    started = time.monotonic()
    data = estimate(docutrain, "uploads")
    assert time.monotonic() - started < 20  # OCR at 300 dpi would take seconds a page
    assert (data["files"], data["pages"], data["ocr_pages"], data["refused"]) == (2, 7, 4, [])
    # As a run with OCR off would, the estimate refuses the all-scanned file.
    off = docutrain("estimate", "uploads", "--json", DOCUTRAIN_OCR="off")
    assert off.returncode == 3 and "OCR is off" in json.loads(off.stdout)["refused"][0]["reason"]


def test_the_table_fits_eighty_columns():
    from docutrain_cli.cli.render import estimate_table
    from docutrain_cli.cli.words import estimate_note

    data = {
        "files": 1200, "pages": 36_000, "chunks": 40_100, "tokens": 31_000_000, "cached_tokens": 1_000,
        "cost_usd": 0.62, "batch_cost_usd": 0.31, "minutes_at_limit": 31.0, "model": "text-embedding-3-small",
        "counted_with": "estimate", "server_tokens_per_estimated_token": 0.62, "tokens_per_minute_limit": 1_000_000,
        "limit_source": "headers", "ocr_pages": 3, "duplicates": 2, "refused": [{"path": "a", "reason": "b"}],
        "queue_ahead": {"jobs": 5000, "counted_jobs": 200, "tokens": 90_000_000, "minutes_at_limit": 90.0},
    }
    console = Console(width=80, record=True)
    console.print(estimate_table(data))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for expected in ("31,000,000", "$0.6200", "$0.3100 with --batch", "31.0m at 1,000,000 tokens/min",
                     "5,000 jobs", "90,000,000 tokens (200 counted); 1.5h at the limit", "1 refused, 2 duplicates"):
        assert expected in text, expected
    assert estimate_note(data) is None  # calibrated by the server

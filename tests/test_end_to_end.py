"""The whole product through the CLI: real PDFs, real worker processes, the
real pipeline, the local store, and the real openai client against the
stand-in server."""

from __future__ import annotations

import json
import sqlite3

import pytest

import pdfs


def _store_counts(path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as conn:
        documents = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        distinct = conn.execute("SELECT count(DISTINCT document_id || ':' || chunk_index) FROM chunks").fetchone()[0]
    return documents, chunks, distinct


def _make_corpus(folder, count: int, pages: int = 6) -> None:
    folder.mkdir()
    for i in range(count):
        pdfs.multi_page(folder / f"doc{i:03}.pdf", pages=pages, seed=i + 1)


def test_enqueue_run_search_with_bad_files_landing_as_dead_jobs(docutrain, tmp_path):
    uploads = tmp_path / "uploads"
    _make_corpus(uploads, 3)
    pdfs.encrypted(uploads / "locked.pdf")
    pdfs.garbage(uploads / "garbage.pdf")
    pdfs.image_only(uploads / "scan.pdf")
    pdfs.empty(uploads / "empty.pdf")
    assert docutrain("enqueue", "uploads").returncode == 0
    result = docutrain("run", "--workers", "2", "--drain", "--json")
    assert result.returncode == 3, result.stderr  # some jobs are dead, on purpose
    summary = json.loads(result.stdout)
    assert summary["done"] == 3 and summary["dead"] == 4 and summary["retried"] == 0
    assert summary["totals"]["pages"] == 18 and summary["totals"]["chunks"] > 0
    assert "offline embedder" in result.stderr  # says once which embedder runs
    dead = {j["source"].rsplit("/", 1)[1]: j["errors"][-1] for j in json.loads(docutrain("jobs", "--state", "dead", "--json").stdout)}
    assert "encrypted: needs a password" in dead["locked.pdf"]
    assert "no extractable text" in dead["scan.pdf"]
    assert "empty file" in dead["empty.pdf"]
    assert "garbage.pdf: " in dead["garbage.pdf"]
    for reason in dead.values():
        assert "\n" not in reason
    with sqlite3.connect(docutrain.store) as conn:
        rows = conn.execute("SELECT source, status, error FROM documents").fetchall()
    by_name = {source.rsplit("/", 1)[1]: (status, error) for source, status, error in rows}
    assert by_name["doc000.pdf"][0] == "ready"
    assert by_name["locked.pdf"][0] == "error" and "password" in by_name["locked.pdf"][1]
    hits = json.loads(docutrain("search", "Clause 100105", "--top", "3", "--json").stdout)
    assert hits and hits[0]["source"].endswith("doc000.pdf")


def test_kill_9_and_restart_leaves_exactly_one_chunk_set_per_document(docutrain, tmp_path):
    _make_corpus(tmp_path / "uploads", 40, pages=30)
    docutrain("enqueue", "uploads")
    runner = docutrain.start("run", "--workers", "2", "--drain")

    def some_done():  # read the queue file directly: polling must be quick
        with sqlite3.connect(docutrain.queue, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM docutrain_done").fetchone()[0] >= 3

    docutrain.wait_for(some_done, what="a few documents done")
    runner.kill()
    runner.wait(timeout=10)
    interrupted = docutrain.status()
    assert interrupted["done"] < 40, "the runner finished before it was killed; make the corpus bigger"
    result = docutrain("run", "--workers", "2", "--drain", "--json")
    assert result.returncode == 0, result.stderr
    status = docutrain.status()
    assert status["done"] == 40 and status["dead"] == 0 and status["queued"] == 0
    documents, chunks, distinct = _store_counts(docutrain.store)
    assert documents == 40
    assert chunks == distinct  # no chunk stored twice
    with sqlite3.connect(docutrain.store) as conn:
        mismatched = conn.execute(
            "SELECT count(*) FROM documents d WHERE chunk_count != (SELECT count(*) FROM chunks c WHERE c.document_id = d.id)"
            " OR status != 'ready'"
        ).fetchone()[0]
    assert mismatched == 0
    # Running everything again replaces, never doubles.
    docutrain("enqueue", "uploads", "--force")
    assert docutrain("run", "--workers", "2", "--drain").returncode == 0
    assert _store_counts(docutrain.store) == (documents, chunks, distinct)


def test_the_run_summary_reports_pages_chunks_tokens_and_cost(docutrain, tmp_path):
    _make_corpus(tmp_path / "uploads", 2, pages=3)
    docutrain("enqueue", "uploads")
    result = docutrain("run", "--workers", "2", "--drain")
    assert result.returncode == 0, result.stderr
    # Not a terminal: the summary is the log's last record, on stderr.
    line = result.stderr.strip().splitlines()[-1]
    assert "run finished:" in line
    assert "2 done" in line and "6 pages" in line and "from cache" in line
    assert "$0.0000 at list price" in line  # the offline embedder costs nothing


def test_openai_compatible_endpoint_gets_batched_requests_and_cache_skips_rerun(docutrain, tmp_path, openai_standin):
    _make_corpus(tmp_path / "uploads", 4, pages=10)
    docutrain("enqueue", "uploads")
    env = {"OPENAI_API_KEY": "sk-test-key-for-the-stand-in", "OPENAI_BASE_URL": openai_standin.base_url}
    result = docutrain("run", "--workers", "2", "--drain", "--json", **env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "text-embedding-3-small" in result.stderr
    assert len(openai_standin.requests) == 4  # one request per document: all chunks batched
    assert summary["totals"]["tokens_embedded"] == openai_standin.tokens > 0
    assert summary["cost_usd"] == pytest.approx(openai_standin.tokens * 0.02 / 1e6)  # list price
    with sqlite3.connect(docutrain.store) as conn:
        models = conn.execute("SELECT DISTINCT embedding_model, length(embedding) FROM chunks").fetchall()
    assert models == [("text-embedding-3-small", 1536 * 4)]
    # Same files again: every vector comes from the cache, no tokens sent.
    openai_standin.reset()
    docutrain("enqueue", "uploads", "--force")
    again = json.loads(docutrain("run", "--workers", "2", "--drain", "--json", **env).stdout)
    assert openai_standin.requests == [] and again["totals"]["tokens_embedded"] == 0
    with sqlite3.connect(docutrain.store) as conn:
        (stored_tokens,) = conn.execute("SELECT sum(token_count) FROM chunks").fetchone()
    assert again["totals"]["tokens_cached"] == stored_tokens  # our own count of what was skipped

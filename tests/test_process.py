"""process_job end to end: real files, real store, the real openai client
against the stand-in; and search over what it stored."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pdfs
from docutrain_cli.config import Settings
from docutrain_cli.errors import PermanentError, TransientError
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.run.process import process_job
from docutrain_cli.run.worker import WorkerContext
from docutrain_cli.store.search import SearchError, search
from docutrain_cli.store.local import LocalStore, unpack_vector
from openai_standin import fake_vector, float32_roundtrip

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-process-0123456789"


def offline(tmp_path, **changes) -> Settings:
    return Settings(store=str(tmp_path / "store.db"), embedder="offline", **changes)


def online(tmp_path, standin, **changes) -> Settings:
    changes.setdefault("embedding_dimensions", 8)
    return Settings(
        store=str(tmp_path / "store.db"),
        openai_api_key=KEY,
        openai_base_url=standin.base_url,
        **changes,
    )


_contexts: dict[Settings, WorkerContext] = {}


@pytest.fixture(autouse=True)
def _close_contexts():
    yield
    while _contexts:
        _contexts.popitem()[1].close()


def process(job: Job, settings: Settings):
    """process_job with one WorkerContext per settings, as a worker keeps
    its context for all its jobs."""
    context = _contexts.setdefault(settings, WorkerContext(settings))
    return process_job(job, context)


def job(path, n: int = 1, **kwargs) -> Job:
    return Job(id=n, source=str(path), **kwargs)


def stored(settings: Settings, key: str) -> list[tuple]:
    with LocalStore(settings.store) as store:
        return store.conn.execute(
            """SELECT c.chunk_index, c.page_start, c.page_end, c.token_count, c.content,
                      c.embedding, c.embedding_model
               FROM chunks c JOIN documents d ON d.id = c.document_id
               WHERE d.document_key = ? ORDER BY c.chunk_index""",
            (key,),
        ).fetchall()


def test_offline_run_stores_chunks_and_reports(tmp_path):
    path = pdfs.multi_page(tmp_path / "lease.pdf", pages=6, sentences_per_page=40)
    settings = offline(tmp_path, chunk_tokens=200, chunk_overlap=20)
    summary = process(job(path, user_id="u1", document_id="doc-1"), settings)
    assert JobResult.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary  # JSON-able for the queue
    assert summary.pages == 6 and summary.chunks > 6
    assert summary.embedder == "offline" and summary.model == "offline-hash-v1"
    assert summary.tokens_embedded == sum(r[3] for r in stored(settings, "doc-1"))
    assert summary.tokens_cached == 0 and summary.cost_usd == 0.0
    rows = stored(settings, "doc-1")
    assert len(rows) == summary.chunks
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert rows[0][1] == 1 and rows[-1][2] == 6
    assert all(len(r[5]) == 4 * 384 and r[6] == "offline-hash-v1" for r in rows)
    with LocalStore(settings.store) as store:
        doc = store.get_document("doc-1")
    assert doc["id"] == summary.document_id
    assert (doc["user_id"], doc["source"], doc["page_count"], doc["chunk_count"]) == ("u1", str(path), 6, len(rows))
    assert doc["sha256"] == summary.sha256 and doc["processing_seconds"] is not None


def test_running_twice_leaves_one_identical_set(tmp_path):
    path = pdfs.multi_page(tmp_path / "a.pdf", pages=3)
    settings = offline(tmp_path, chunk_tokens=100, chunk_overlap=10)
    first = process(job(path), settings)
    rows = stored(settings, str(path))
    second = process(job(path), settings)
    assert stored(settings, str(path)) == rows
    assert first.document_id == second.document_id


def test_a_shorter_new_version_leaves_no_stale_chunks(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(pdfs.sentence(i) for i in range(200)))
    settings = offline(tmp_path, chunk_tokens=100, chunk_overlap=0)
    long_run = process(job(path), settings)
    path.write_text("Only one short paragraph now.")
    short_run = process(job(path), settings)
    assert long_run.chunks > 5 and short_run.chunks == 1
    assert [r[4] for r in stored(settings, str(path))] == ["Only one short paragraph now."]


def test_openai_vectors_are_stored_as_float32_of_the_right_size(tmp_path, openai_standin):
    path = pdfs.multi_page(tmp_path / "a.pdf", pages=2)
    settings = online(tmp_path, openai_standin, embedding_dimensions=16)
    summary = process(job(path), settings)
    assert (summary.embedder, summary.model, summary.dimensions) == (
        "openai", "text-embedding-3-small", 16
    )
    for _, _, _, _, content, blob, model in stored(settings, str(path)):
        assert model == "text-embedding-3-small"
        assert list(unpack_vector(blob)) == float32_roundtrip(fake_vector(content, 16))
    assert summary.tokens_embedded == openai_standin.tokens  # the server's count
    assert summary.cost_usd == pytest.approx(openai_standin.tokens * 0.02 / 1e6)


def test_a_second_run_sends_no_tokens(tmp_path, openai_standin):
    paths = [pdfs.multi_page(tmp_path / f"d{i}.pdf", pages=3, seed=i) for i in range(3)]
    settings = online(tmp_path, openai_standin)
    first = [process(job(p, i), settings) for i, p in enumerate(paths)]
    assert all(s.tokens_embedded > 0 and s.tokens_cached == 0 for s in first)
    requests = len(openai_standin.requests)
    again = [process(job(p, i), settings) for i, p in enumerate(paths)]
    assert len(openai_standin.requests) == requests  # nothing sent
    for before, after in zip(first, again):
        assert after.tokens_embedded == 0
        assert after.tokens_cached == sum(r[3] for r in stored(settings, after.document_key))
        assert after.chunks == before.chunks


def test_offline_vectors_are_cached_too(tmp_path, monkeypatch):
    # A cache hit costs ~4 us a chunk, computing an offline vector ~530 us:
    # a re-run of unchanged text computes nothing, whichever the embedder.
    path = pdfs.multi_page(tmp_path / "a.pdf", pages=3)
    settings = offline(tmp_path)
    first = process(job(path), settings)
    assert first.tokens_cached == 0
    from docutrain_cli.pipeline.offline import OfflineEmbedder

    def must_not_compute(self, texts):
        raise AssertionError("computed a vector the cache holds")

    monkeypatch.setattr(OfflineEmbedder, "_vectors", must_not_compute)
    again = process(job(path), settings)
    assert again.tokens_embedded == 0 and again.tokens_cached > 0
    assert [r[4:] for r in stored(settings, str(path))] and again.chunks == first.chunks


def test_a_copy_of_a_document_costs_no_tokens(tmp_path, openai_standin):
    original = pdfs.multi_page(tmp_path / "a.pdf", pages=2)
    copy = tmp_path / "copy-of-a.pdf"
    copy.write_bytes(original.read_bytes())
    settings = online(tmp_path, openai_standin)
    first = process(job(original), settings)
    second = process(job(copy, 2), settings)
    assert second.tokens_embedded == 0 and second.tokens_cached > 0
    assert len(openai_standin.requests) == 1
    assert [r[4:] for r in stored(settings, str(copy))] == [r[4:] for r in stored(settings, str(original))]
    assert first.chunks == second.chunks


def test_many_chunks_take_two_requests(tmp_path, openai_standin):
    path = tmp_path / "items.txt"
    path.write_text("".join(f"Item {i}: alpha beta gamma delta.\n" for i in range(3000)))
    settings = online(tmp_path, openai_standin, chunk_tokens=16, chunk_overlap=0)
    summary = process(job(path), settings)
    assert summary.chunks == 3000
    assert [len(r.inputs) for r in openai_standin.requests] == [2048, 952]
    assert summary.tokens_embedded == openai_standin.tokens


def test_transient_failures_raise_and_leave_the_store_alone(tmp_path, openai_standin):
    path = pdfs.multi_page(tmp_path / "a.pdf", pages=2)
    settings = online(tmp_path, openai_standin)
    openai_standin.fail_next(3, status=500, retry_after=0.01)
    with pytest.raises(TransientError):
        process(job(path), settings)
    assert stored(settings, str(path)) == []
    summary = process(job(path), settings)  # the job's retry
    assert len(stored(settings, str(path))) == summary.chunks > 0


@pytest.mark.parametrize(
    "make, message",
    [
        (pdfs.encrypted, "encrypted: needs a password (set pdf_password)"),
        (pdfs.garbage, "not a PDF: cannot open"),
        (pdfs.empty, "empty file"),
    ],
)
def test_bad_documents_are_permanent_errors(tmp_path, make, message):
    path = make(tmp_path / "bad.pdf")
    settings = offline(tmp_path)
    with pytest.raises(PermanentError) as info:
        process(job(path), settings)
    assert str(info.value) == message
    assert stored(settings, str(path)) == []


def test_the_configured_password_opens_encrypted_pdfs(tmp_path):
    path = pdfs.encrypted(tmp_path / "locked.pdf", password="open sesame")
    summary = process(job(path), offline(tmp_path, pdf_password="open sesame"))
    assert summary.chunks == 1


def test_limits_from_settings(tmp_path):
    path = pdfs.multi_page(tmp_path / "a.pdf", pages=4, sentences_per_page=1)
    with pytest.raises(PermanentError, match="^too many pages: 4, limit 3$"):
        process(job(path), offline(tmp_path, max_pages=3))
    with pytest.raises(PermanentError, match="^too large: "):
        process(job(path), offline(tmp_path, max_file_mb=0.001))
    with pytest.raises(PermanentError, match="^file not found$"):
        process(job(tmp_path / "missing.pdf"), offline(tmp_path))


def test_search_finds_the_right_document(tmp_path):
    lease = tmp_path / "lease.txt"
    lease.write_text("The tenant pays a security deposit of two months rent before moving in.")
    report = tmp_path / "report.md"
    report.write_text("# Q3\n\nQuarterly revenue grew in Asia while costs fell.")
    settings = offline(tmp_path)
    for n, path in enumerate([lease, report]):
        process(job(path, n), settings)
    hits = search(settings, "how much is the security deposit?", top=2)
    assert [h.source for h in hits] == [str(lease), str(report)]
    assert hits[0].score > hits[1].score
    assert (hits[0].page_start, hits[0].page_end, hits[0].chunk_index) == (1, 1, 0)
    # A key in the environment later does not change how an offline store is searched.
    with_key = settings.replace(openai_api_key=KEY, embedder="auto")
    assert search(with_key, "quarterly revenue", top=1)[0].source == str(report)


def test_search_uses_the_stored_openai_model(tmp_path, openai_standin):
    path = tmp_path / "a.txt"
    path.write_text("The tenant pays the deposit.")
    settings = online(tmp_path, openai_standin, embedding_dimensions=32)
    process(job(path), settings)
    hits = search(settings.replace(embedding_dimensions=None), "The tenant pays the deposit.", top=1)
    assert hits[0].score == pytest.approx(1.0, abs=1e-6)  # same text, same vector
    assert openai_standin.requests[-1].dimensions == 32
    with pytest.raises(SearchError, match="set OPENAI_API_KEY"):
        search(settings.replace(openai_api_key=None, embedder="auto"), "deposit")


def test_search_explains_an_empty_or_missing_store(tmp_path):
    settings = offline(tmp_path)
    with pytest.raises(SearchError, match="no store at"):
        search(settings, "anything")
    LocalStore(settings.store).set_status("k", "pending")
    with pytest.raises(SearchError, match="no chunks yet"):
        search(settings, "anything")


MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys, tracemalloc
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import pdfs
    from docutrain_cli.config import Settings
    from docutrain_cli.jobs import Job
    from docutrain_cli.run.process import process_job

    def peak_rss_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    folder = Path(sys.argv[2])
    # Full pages of prose: about a chunk a page, so per-chunk data shows up.
    small = pdfs.many_pages(folder / "small.pdf", pages=100, sentences_per_page=20)
    large = pdfs.many_pages(folder / "large.pdf", pages=1000, sentences_per_page=20)
    from docutrain_cli.run.worker import WorkerContext
    out = {}
    # Two rounds with their own stores (the embedding cache would make a
    # second round cheaper): peak RSS first, then Python's own peak.
    # tracemalloc's tables live in RSS too, so it is off while RSS counts.
    for store in ("rss.db", "py.db"):
        context = WorkerContext(Settings(store=str(folder / store), embedder="offline"))
        process_job(Job(id=0, source=str(small)), context)  # warm up: imports, caches
        for name, path in (("small", small), ("large", large)):
            if store == "py.db":
                tracemalloc.start()
            summary = process_job(Job(id=1, source=str(path)), context)
            if store == "py.db":
                out[name + "_py_peak"] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            else:
                out[name + "_rss_peak_kb"] = peak_rss_kb()
            out[name + "_pages"] = summary.pages
            out[name + "_chunks"] = summary.chunks
    print(json.dumps(out))
    """
)


def test_a_thousand_pages_process_in_flat_memory(tmp_path):
    # A fresh interpreter, so other tests' allocations do not blur the peaks.
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(ROOT / "tests"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout.strip().splitlines()[-1])
    assert (m["small_pages"], m["large_pages"]) == (100, 1000)
    # Ten times the pages may cost a little more (the chunk texts and packed
    # vectors until the one replace transaction), never ten times the memory.
    assert m["large_chunks"] >= 900, m
    rss_growth_mb = (m["large_rss_peak_kb"] - m["small_rss_peak_kb"]) / 1024
    assert rss_growth_mb < 25, m  # measured: 16 MB; 58 MB when all vectors were held as floats
    assert m["large_py_peak"] < 12 * 1024 * 1024, m

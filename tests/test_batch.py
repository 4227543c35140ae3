"""Batch API mode (issue 18): `docutrain run --batch` against an OpenAI Files +
Batches stand-in (tests/openai_batch_standin.py) through the real openai
client, with real worker processes, real PDFs, real SQLite files and, for the
crash tests, a real `docutrain run --batch` killed with SIGKILL between steps."""

from __future__ import annotations

import json
import signal
import sqlite3
from array import array

import pytest

from docutrain_cli.batch import plan
from docutrain_cli.pipeline.models import cost_usd
from openai_batch_standin import BatchServer
from openai_standin import fake_vector
from pdfs import multi_page

KEY = "sk-test-key-for-the-batch-stand-in"


@pytest.fixture
def batch_api():
    with BatchServer() as state:
        yield state


class BatchStepRig:
    """A BatchStep on a fresh local store, and a way to park a document's chunks for it."""

    def __init__(self, tmp_path, batch_api):
        from docutrain_cli.batch.ledger import Ledger
        from docutrain_cli.batch.step import BatchStep
        from docutrain_cli.config import load_settings
        from docutrain_cli.status.recorder import StatusRecorder
        from docutrain_cli.store.local import LocalStore

        self.settings = load_settings({"store": str(tmp_path / "s.db")}, environ=env_for(batch_api))
        self.store = LocalStore(self.settings.store)
        self.ledger = Ledger(self.store)
        self.status = StatusRecorder(self.settings)
        self.step = BatchStep(self.settings, self.status)

    def park(self, source: str, texts: list[str], tokens: int = 2) -> None:
        from docutrain_cli.batch.ledger import PendingChunk

        # Stand-in text hashes that sort as parked: the batch's lines go by hash,
        # and the tests count on a line holding one document's chunks.
        chunks = [PendingChunk(i, 1, 1, tokens, text, f"{source}#{i}") for i, text in enumerate(texts)]
        self.ledger.park(source, chunks, model="text-embedding-3-small", dimensions=0, page_count=1,
                         remote_id=None, user_id=None, source=source, sha256=f"sha-{source}")

    def close(self) -> None:
        self.step.close(), self.status.close(), self.store.close()


@pytest.fixture
def batch_step(tmp_path, batch_api):
    rig = BatchStepRig(tmp_path, batch_api)
    yield rig
    rig.close()


def env_for(state) -> dict:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": state.base_url}


def run_batch(docutrain, state, *extra, **env):
    result = docutrain("run", "--batch", "--drain", "--workers", "1", "--json", *extra, **{**env_for(state), **env})
    summary = json.loads(result.stdout) if result.stdout.strip() else None
    return result, summary


def documents(docutrain) -> dict[str, str]:
    with sqlite3.connect(docutrain.store) as conn:
        return dict(conn.execute("SELECT source, status FROM documents"))


def chunk_vectors(docutrain) -> list[tuple[str, array]]:
    with sqlite3.connect(docutrain.store) as conn:
        return [(content, array("f", blob)) for content, blob in conn.execute("SELECT content, embedding FROM chunks")]


def enqueue_pdfs(docutrain, tmp_path, n: int = 3, pages: int = 2) -> list[str]:
    paths = [str(multi_page(tmp_path / f"doc{i}.pdf", pages=pages, seed=i + 1)) for i in range(n)]
    assert docutrain("enqueue", *paths).returncode == 0
    return paths


# -- planning ------------------------------------------------------------------


def test_files_stay_within_every_limit_with_as_few_files_and_requests_as_allowed():
    texts = [f"text number {i} " * (1 + i % 7) for i in range(1000)]
    tokens = [1 + i % 50 for i in range(1000)]
    limits = plan.Limits(requests=3, inputs=120, bytes=20_000, tokens=10_000, inputs_per_request=50,
                         tokens_per_request=1_000)
    files = list(plan.plan_files(texts, tokens, "text-embedding-3-small", 0, limits))
    placed = [i for f in files for line in f.lines for i in line]
    assert placed == list(range(1000))  # every text once, in order
    for f in files:
        content = plan.jsonl("docutrain-abc-1", "text-embedding-3-small", 0, [[texts[i] for i in l] for l in f.lines])
        assert len(f.lines) <= limits.requests
        assert sum(len(l) for l in f.lines) <= limits.inputs
        assert len(content) <= limits.bytes and f.bytes <= limits.bytes
        assert f.tokens == sum(tokens[i] for l in f.lines for i in l) <= limits.tokens
        for line in f.lines:
            assert len(line) <= limits.inputs_per_request
            assert sum(tokens[i] for i in line) <= limits.tokens_per_request
    total_bytes = sum(f.bytes for f in files)
    floor = max(plan.minimum_files(1000, sum(tokens), total_bytes, limits), -(-sum(
        len(r) for r in plan.plan_batches(tokens, max_inputs=50, max_tokens=1000)) // limits.requests))
    assert len(files) <= floor + 2  # packing is greedy and in order: close to the floor, never far


def test_results_are_matched_by_custom_id_whatever_their_order():
    lines = {0: 2, 1: 1, 2: 1}
    output = [
        {"custom_id": "t-2", "response": {"status_code": 200, "body": {"data": [{"index": 0, "embedding": [2.0]}],
                                                                        "usage": {"total_tokens": 5}}}, "error": None},
        {"custom_id": "t-0", "response": {"status_code": 200, "body": {"data": [
            {"index": 1, "embedding": [0.1]}, {"index": 0, "embedding": [0.0]}], "usage": {"total_tokens": 7}}}},
        {"custom_id": "other-1", "response": {"status_code": 200, "body": {"data": []}}},
    ]
    errors = [{"custom_id": "t-1", "response": {"status_code": 500, "body": {"error": {"message": "boom"}}}, "error": None}]
    results = plan.Results()
    results.read("t", "\n".join(json.dumps(o) for o in output), lines)
    results.read("t", "\n".join(json.dumps(o) for o in errors), lines)
    assert results.vectors == {(0, 0): [0.0], (0, 1): [0.1], (2, 0): [2.0]}
    assert results.failures == {1: "500: boom"} and results.tokens == 12


# -- end to end ----------------------------------------------------------------


def test_batch_run_parks_chunks_then_a_later_run_finishes_them_at_half_price(docutrain, tmp_path, batch_api):
    paths = enqueue_pdfs(docutrain, tmp_path, n=2)
    notes = tmp_path / "lease.md"
    notes.write_text("# Lease\n\n## Rent\n\n" + " ".join(f"Rent is due on day {i}." for i in range(40)) + "\n")
    assert docutrain("enqueue", str(notes)).returncode == 0
    paths.append(str(notes))
    result, summary = run_batch(docutrain, batch_api)
    assert result.returncode == 0, result.stderr
    assert summary["done"] == 3
    assert set(documents(docutrain).values()) == {"embedding"}
    assert chunk_vectors(docutrain) == []  # nothing searchable before its vectors exist
    assert batch_api.files_created == 1 and batch_api.batches_created == 1
    assert summary["batch"]["files"] == 1 and summary["batch"]["requests"] == 1  # all texts in one request
    (batch_id,) = batch_api.batch_ids()

    status = docutrain("status", **env_for(batch_api))
    assert batch_id in status.stdout and "validating" in status.stdout  # polled once right after creating
    batch_api.advance(batch_id, "in_progress")
    result, summary = run_batch(docutrain, batch_api)  # polls, nothing to apply yet
    assert result.returncode == 0 and summary["batch"]["batches_applied"] == 0
    shown = json.loads(docutrain("status", "--json").stdout)["batches"]
    assert [b["remote_status"] for b in shown["in_flight"]] == ["in_progress"]
    assert shown["documents_waiting"] == 3
    listed = json.loads(docutrain("jobs", "--json").stdout)
    assert {j["source"]: j["waiting_on_batches"] for j in listed} == {p: [batch_id] for p in paths}
    assert "waits on batch" in docutrain("jobs").stdout

    batch_api.advance(batch_id, "completed")
    result, summary = run_batch(docutrain, batch_api)
    assert result.returncode == 0, result.stderr
    assert set(documents(docutrain).values()) == {"ready"}
    assert summary["batch"]["documents_ready"] == 3
    assert summary["batch"]["tokens_embedded"] == batch_api.tokens_billed > 0
    half = cost_usd("text-embedding-3-small", batch_api.tokens_billed) / 2
    assert summary["batch"]["cost_usd"] == pytest.approx(half)
    assert summary["cost_usd"] == pytest.approx(half)
    with sqlite3.connect(docutrain.store) as conn:  # headings come through the parked chunks
        assert ("Lease > Rent",) in conn.execute("SELECT heading FROM chunks").fetchall()
    vectors = chunk_vectors(docutrain)
    assert vectors and all(v == pytest.approx(fake_vector(c, 1536), abs=1e-6) for c, v in vectors[:5])
    assert batch_api.files_created == 1 and batch_api.batches_created == 1  # nothing sent twice
    assert json.loads(docutrain("status", "--json").stdout)["batches"]["in_flight"] == []
    some_chunk = vectors[0][0]
    hits = docutrain("search", some_chunk, "--json", **env_for(batch_api))  # the stand-in's vectors: exact text wins
    assert hits.returncode == 0, hits.stderr
    assert json.loads(hits.stdout)[0]["content"] == some_chunk


@pytest.mark.parametrize("step", ["planned", "uploaded", "created", "downloaded", "applied"])
def test_kill_9_between_steps_pays_nothing_twice_and_loses_nothing(docutrain, tmp_path, batch_api, step):
    enqueue_pdfs(docutrain, tmp_path, n=2)
    if step in ("downloaded", "applied"):
        run_batch(docutrain, batch_api)
        batch_api.advance(None, "completed")
    result, _ = run_batch(docutrain, batch_api, DOCUTRAIN_CRASH_AT=step)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr)
    result, summary = run_batch(docutrain, batch_api)
    assert result.returncode == 0, result.stderr
    batch_api.advance(None, "completed")
    result, summary = run_batch(docutrain, batch_api)
    assert result.returncode == 0, result.stderr
    assert set(documents(docutrain).values()) == {"ready"}
    assert batch_api.files_created == 1 and batch_api.batches_created == 1
    texts = {c for c, _ in chunk_vectors(docutrain)}
    assert batch_api.inputs_run == len(texts)  # every text embedded once, none twice


def test_failed_lines_go_into_the_next_batch_and_an_expired_batch_keeps_what_completed(batch_step, batch_api):
    store, step = batch_step.store, batch_step.step
    for d in range(4):
        batch_step.park(f"/docs/{d}.pdf", [f"document {d} chunk {i} words" for i in range(3)], tokens=4)
    step.limits = plan.Limits(tokens=batch_step.settings.batch_queue_tokens, inputs_per_request=3)  # a line per document
    batch_api.fail_texts = {"document 1 chunk 0 words"}
    assert step.step(flush=True).files == 1
    (first,) = batch_api.batch_ids()
    batch_api.advance(first, "expired", expire_after=3)  # lines 0-2 ran, line 3 did not
    report = step.step(flush=True)
    assert report.batches_applied == 1 and report.documents_ready == 2  # documents 0 and 2
    assert report.files == 1  # document 1's failed line and document 3's unrun line: the next batch
    (second,) = [b for b in batch_api.batch_ids() if b != first]
    lines = [json.loads(l) for l in batch_api.files[batch_api.batches[second]["input_file_id"]]["_content"].splitlines()]
    assert sorted(t for l in lines for t in l["body"]["input"]) == sorted(
        [f"document 1 chunk {i} words" for i in range(3)] + [f"document 3 chunk {i} words" for i in range(3)])
    batch_api.fail_texts = set()
    batch_api.advance(second, "completed")
    report = step.step(flush=True)
    assert report.documents_ready == 2
    assert {store.get_document(f"/docs/{d}.pdf")["status"] for d in range(4)} == {"ready"}
    assert store.chunk_count() == 12


def test_a_line_that_fails_in_two_batches_is_embedded_with_a_normal_request(tmp_path, batch_api):
    """Failed once: resubmitted in the next batch; failed again: a normal
    request at full price, and the document is ready (the report says so)."""
    from docutrain_cli.batch.ledger import MAX_LINE_FAILURES, Ledger, PendingChunk
    from docutrain_cli.batch.step import BatchStep
    from docutrain_cli.config import load_settings
    from docutrain_cli.status.recorder import StatusRecorder
    from docutrain_cli.store.local import LocalStore

    settings = load_settings({"store": str(tmp_path / "s.db")}, environ={
        "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": batch_api.base_url})
    store = LocalStore(settings.store)
    Ledger(store).park("/docs/flaky.pdf", [PendingChunk(0, 1, 1, 2, "flaky text", "f"),
                                           PendingChunk(1, 1, 1, 2, "fine text", "g")],
                       model="text-embedding-3-small", dimensions=0, page_count=1, remote_id=None, user_id=None,
                       source="/docs/flaky.pdf", sha256="s", job_id=1)
    status = StatusRecorder(settings)
    step = BatchStep(settings, status)
    batch_api.fail_texts, batch_api.fail_in_sync = {"flaky text"}, False
    assert step.step(flush=True).files == 1
    batch_api.advance(None, "completed")
    report = step.step(flush=True)  # failed once: into the next batch
    assert report.files == 1 and report.documents_ready == 0 and report.full_price_texts == 0
    batch_api.advance(None, "completed")
    report = step.step(flush=True)  # failed twice: a normal request
    assert batch_api.batches_created == MAX_LINE_FAILURES == 2
    assert (report.documents_ready, report.documents_dead, report.files) == (1, 0, 0)
    # both texts shared the failing request line: both go by a normal request
    assert report.full_price_texts == 2 and report.full_price_tokens == batch_api.sync_tokens > 0
    assert batch_api.sync_requests == 1
    full = cost_usd("text-embedding-3-small", batch_api.sync_tokens)
    assert report.full_price_cost_usd == pytest.approx(full) and report.cost_usd == pytest.approx(full)
    assert store.get_document("/docs/flaky.pdf")["status"] == "ready" and store.chunk_count() == 2
    step.close(), status.close(), store.close()


def test_a_line_failing_three_times_in_a_row_ends_a_dead_job_that_queue_store_and_supabase_agree_on(
    docutrain, tmp_path, batch_api, supabase_standin
):
    """The same request line fails in a batch, in the batch it is resubmitted
    in, and in a normal request: its document's job is dead in the queue with
    the reason, `error` in the store and in Supabase; every other document is
    done, ready and ready. `docutrain retry` brings it back like any dead job."""
    import uuid

    from pdfs import write_pdf

    project = supabase_standin.project
    env = dict(SUPABASE_URL=supabase_standin.url, SUPABASE_SERVICE_ROLE_KEY=supabase_standin.key)
    docs = {}
    for name in ("good0", "poisoned", "good1"):
        path = tmp_path / f"{name}.pdf"
        marker = " POISON-7f3a." if name == "poisoned" else ""
        write_pdf(path, [f"Page {p} of {name}. Some words about leases and rent.{marker}" for p in (1, 2)])
        storage_path = f"{uuid.uuid4()}/{name}.pdf"
        project.put_object("documents", storage_path, path.read_bytes())
        docs[name] = project.add_document("pending", storage_path=storage_path)
    assert docutrain("enqueue", "--from-supabase", **env).returncode == 0
    batch_api.fail_marker = "POISON-7f3a"

    def agree(expected: dict[str, tuple[str, str, str]]) -> None:
        """name -> (queue state, store status, Supabase status), for every document."""
        jobs = {j["document_id"]: j for j in json.loads(docutrain("jobs", "--limit", "100", "--json").stdout)}
        with sqlite3.connect(docutrain.store) as conn:
            store = dict(conn.execute("SELECT document_key, status FROM documents"))
        seen = {name: (jobs[d]["state"], store[d], project.document(d)["status"]) for name, d in docs.items()}
        assert seen == expected

    result, _ = run_batch(docutrain, batch_api, **env)  # parked, batch 1 sent
    assert result.returncode == 0, result.stderr
    for _ in range(2):  # batch 1 back (the line fails), batch 2 with it again, back (fails again)
        batch_api.advance(None, "completed")
        result, summary = run_batch(docutrain, batch_api, **env)
    assert result.returncode == 3, result.stderr  # partly done: one document could not be embedded
    assert batch_api.batches_created == 2 and batch_api.sync_failures >= 1  # and the normal request failed
    assert summary["batch"]["documents_dead"] == 1 and "could not be embedded" in result.stderr
    agree({"good0": ("done", "ready", "ready"), "poisoned": ("dead", "error", "error"),
           "good1": ("done", "ready", "ready")})
    (dead,) = json.loads(docutrain("jobs", "--state", "dead", "--json").stdout)
    reason = dead["errors"][-1]
    assert "failed in 2 batches" in reason and "500" in reason and "normal request" in reason
    assert project.document(docs["poisoned"])["error_message"] and "500" in project.document(docs["poisoned"])["error_message"]
    status = json.loads(docutrain("status", "--json").stdout)
    assert (status["done"], status["dead"]) == (2, 1)

    batch_api.fail_marker = None  # the server is well again
    retried = docutrain("retry", str(dead["id"]), "--json")
    assert retried.returncode == 0, retried.stderr
    result, summary = run_batch(docutrain, batch_api, **env)
    assert result.returncode == 0, result.stderr
    assert summary["batch"]["full_price_texts"] >= 1 and summary["batch"]["documents_ready"] == 1
    assert batch_api.batches_created == 2  # the retried job's failed text went straight to a normal request
    agree({name: ("done", "ready", "ready") for name in docs})
    status = json.loads(docutrain("status", "--json").stdout)
    assert (status["done"], status["dead"]) == (3, 0)
    counts: dict[str, int] = {}
    for row in project.rows("document_chunks"):
        counts[row["user_document_id"]] = counts.get(row["user_document_id"], 0) + 1
    assert all(counts[d] == project.document(d)["chunk_count"] > 0 for d in docs.values())


def test_a_rejected_key_stops_the_run_with_exit_5_and_nothing_lost(docutrain, tmp_path, batch_api):
    enqueue_pdfs(docutrain, tmp_path, n=1)
    batch_api.required_key = "sk-the-right-one"
    result, summary = run_batch(docutrain, batch_api)
    assert result.returncode == 5, result.stderr
    assert summary["stop_reason"] == "account" and "401" in summary["account_problem"]
    assert KEY not in result.stderr + result.stdout
    assert batch_api.files_created == 0
    batch_api.required_key = None
    result, summary = run_batch(docutrain, batch_api)
    assert result.returncode == 0 and batch_api.files_created == 1 and batch_api.batches_created == 1


def test_an_old_store_learns_the_embedding_status(tmp_path):
    from docutrain_cli.store.local import LocalStore

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        from docutrain_cli.store import local

        conn.executescript(local.SCHEMA.replace("'processing', 'embedding', 'ready'", "'processing', 'ready'"))
        conn.execute("INSERT INTO documents (document_key, status, created_at, updated_at) VALUES ('k', 'ready', 'x', 'x')")
        conn.execute("INSERT INTO chunks (document_id, chunk_index, page_start, page_end, token_count, content, "
                     "embedding, embedding_model) VALUES (1, 0, 1, 1, 1, 'c', x'00000000', 'm')")
    with LocalStore(path) as store:
        store.set_status("k", "embedding")
        assert store.get_document("k")["status"] == "embedding" and store.chunk_count("k") == 1


def test_supabase_rows_stay_processing_until_the_batch_is_back_and_get_chunks_before_ready(
    docutrain, tmp_path, batch_api, supabase_standin
):
    import uuid

    project = supabase_standin.project
    docs = []
    for i in range(2):
        path = multi_page(tmp_path / f"doc{i}.pdf", pages=2, seed=i + 1)
        storage_path = f"{uuid.uuid4()}/doc{i}.pdf"
        project.put_object("documents", storage_path, path.read_bytes())
        docs.append(project.add_document("pending", storage_path=storage_path))
    env = dict(SUPABASE_URL=supabase_standin.url, SUPABASE_SERVICE_ROLE_KEY=supabase_standin.key)
    assert docutrain("enqueue", "--from-supabase", **env).returncode == 0
    result, _ = run_batch(docutrain, batch_api, **env)
    assert result.returncode == 0, result.stderr
    assert {project.document(d)["status"] for d in docs} == {"processing"}
    assert project.rows("document_chunks") == []

    batch_api.advance(None, "completed")
    supabase_standin.fail("POST", "/rest/v1/document_chunks", 500)  # the chunk upload fails this time
    result, summary = run_batch(docutrain, batch_api, **env)
    assert result.returncode == 0, result.stderr
    assert summary["batch"]["documents_ready"] == 0 and "500" in summary["batch"]["problem"]
    assert {project.document(d)["status"] for d in docs} == {"processing"}  # never ready without chunks
    assert set(documents(docutrain).values()) == {"embedding"}
    assert "finishing documents failed last time" in docutrain("status").stdout

    supabase_standin.heal()
    result, summary = run_batch(docutrain, batch_api, **env)
    assert result.returncode == 0, result.stderr
    assert summary["batch"]["documents_ready"] == 2
    counts: dict[str, int] = {}
    for row in project.rows("document_chunks"):
        counts[row["user_document_id"]] = counts.get(row["user_document_id"], 0) + 1
    for d in docs:
        row = project.document(d)
        assert (row["status"], row["chunk_count"], row["page_count"]) == ("ready", counts[d], 2)
    assert batch_api.files_created == 1 and batch_api.batches_created == 1


def test_a_service_polls_its_batches_on_a_timer_while_idle_and_tells_supabase(
    docutrain, tmp_path, batch_api, supabase_standin
):
    import uuid

    project = supabase_standin.project
    path = multi_page(tmp_path / "doc.pdf", pages=2, seed=5)
    storage_path = f"{uuid.uuid4()}/doc.pdf"
    project.put_object("documents", storage_path, path.read_bytes())
    doc = project.add_document("pending", storage_path=storage_path)
    env = dict(SUPABASE_URL=supabase_standin.url, SUPABASE_SERVICE_ROLE_KEY=supabase_standin.key)
    assert docutrain("enqueue", "--from-supabase", **env).returncode == 0
    runner = docutrain.start("run", "--batch", "--workers", "1", **env_for(batch_api), **env,
                             DOCUTRAIN_BATCH_POLL_INTERVAL="0.2")
    try:
        docutrain.wait_for(lambda: batch_api.batch_ids(), 60, "a batch sent by the idle service")
        assert project.document(doc)["status"] != "ready"  # ('processing' reaches it when the outbox flushes)
        batch_api.advance(None, "completed")
        docutrain.wait_for(lambda: project.document(doc)["status"] == "ready", 60, "the row ready in Supabase")
    finally:
        runner.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, err
    assert len(project.rows("document_chunks")) == project.document(doc)["chunk_count"] > 0
    assert set(documents(docutrain).values()) == {"ready"}
    assert batch_api.files_created == 1 and batch_api.batches_created == 1


def test_a_batch_that_fails_as_a_whole_returns_its_texts_and_pauses_new_batches(batch_step, batch_api, monkeypatch):
    from docutrain_cli.batch import step as step_module

    step = batch_step.step
    batch_step.park("/d.pdf", ["some text"])
    step.step(flush=True)
    batch_api.advance(None, "failed", failure=("token_limit_exceeded", "Enqueued token limit reached."))
    report = step.step(flush=True)
    assert report.batches_applied == 1 and report.files == 0
    assert "token_limit_exceeded" in report.problem and batch_api.batches_created == 1
    assert step.step(flush=True).files == 0  # still paused
    monkeypatch.setattr(step_module, "FAILED_BATCH_PAUSE", 0.0)  # the pause is over: the text goes again
    assert step.step(flush=True).files == 1
    batch_api.advance(None, "completed")
    assert step.step(flush=True).documents_ready == 1


def test_an_exhausted_quota_stops_the_run_with_exit_5_and_keeps_the_parked_chunks(docutrain, tmp_path, batch_api):
    enqueue_pdfs(docutrain, tmp_path, n=1)
    batch_api.quota_exhausted = True
    result, summary = run_batch(docutrain, batch_api)
    assert result.returncode == 5 and "quota" in summary["account_problem"], result.stderr
    assert "quota" in result.stderr and batch_api.files_created == 0
    batch_api.quota_exhausted = False
    result, summary = run_batch(docutrain, batch_api)
    assert result.returncode == 0 and summary["batch"]["files"] == 1


def test_a_job_taken_and_done_within_one_pass_shows_processing_while_its_batch_is_out(
    tmp_path, batch_api, supabase_standin, supabase_settings
):
    # In process, a job is taken and done before the runner looks again, so
    # its `processing` is never written when a worker takes it (as with a
    # fast job in the pool). A job whose batch is still out must not leave
    # the app's row `pending` (CI saw it once with the pool).
    import dataclasses
    import uuid

    from docutrain_cli.queues.local import LocalQueue
    from docutrain_cli.run.runner import Runner
    from docutrain_cli.supabase.pull import pending_jobs

    project = supabase_standin.project
    storage_path = f"{uuid.uuid4()}/doc.pdf"
    project.put_object("documents", storage_path, multi_page(tmp_path / "doc.pdf", pages=2, seed=7).read_bytes())
    doc = project.add_document("pending", storage_path=storage_path)
    settings = dataclasses.replace(supabase_settings, embedder="openai", openai_api_key=KEY,
                                   openai_base_url=batch_api.base_url, embedding_mode="batch")
    jobs, _ = pending_jobs(settings)
    with LocalQueue(settings.queue) as queue:
        queue.enqueue(jobs)
        Runner(settings, queue, in_process=True).run(drain=True)
    assert project.document(doc)["status"] == "processing"
    assert project.rows("document_chunks") == []

"""End to end: the real `docutrain` CLI and runner (worker processes, PyMuPDF,
offline embedder) against the Supabase stand-in: pull pending rows, download
from Storage, upload chunks, push statuses through the outbox."""

from __future__ import annotations

import json
import uuid

from pdfs import multi_page

from docutrain_cli.config import Settings
from docutrain_cli.status.recorder import sync

FAST = dict(DOCUTRAIN_EMBEDDER="offline", DOCUTRAIN_WORKERS="2")


def env_for(standin) -> dict:
    return dict(SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=standin.key, **FAST)


def settings_for(docutrain, standin) -> Settings:
    return Settings(
        supabase_url=standin.url, supabase_service_role_key=standin.key,
        store=str(docutrain.store), queue=str(docutrain.queue), embedder="offline",
    )


def upload(standin, tmp_path, count: int) -> list[str]:
    docs = []
    for i in range(count):
        path = multi_page(tmp_path / f"doc{i}.pdf", pages=2, seed=i)
        storage_path = f"{uuid.uuid4()}/doc {i}.pdf"
        standin.project.put_object("documents", storage_path, path.read_bytes())
        docs.append(standin.project.add_document("pending", storage_path=storage_path))
    return docs


def chunk_counts(standin) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in standin.project.rows("document_chunks"):
        counts[row["user_document_id"]] = counts.get(row["user_document_id"], 0) + 1
    return counts


def test_pull_run_with_status_outage_then_sync_delivers_every_final_status(docutrain, supabase_standin, tmp_path):
    project = supabase_standin.project
    docs = upload(supabase_standin, tmp_path, 4)
    missing = project.add_document("pending", storage_path="nobody/uploaded-this.pdf")
    env = env_for(supabase_standin)

    result = docutrain("enqueue", "--from-supabase", "--json", **env)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["queued"]) == 5, result.stdout
    again = docutrain("enqueue", "--from-supabase", "--json", **env)
    assert (len(json.loads(again.stdout)["queued"]), len(json.loads(again.stdout)["duplicates"])) == (0, 5)
    # Status updates fail for the whole run; chunk uploads and downloads work.
    supabase_standin.fail("PATCH", "/rest/v1/user_documents", 503)
    result = docutrain("run", "--drain", **env)
    assert result.returncode == 3, result.stderr  # one dead job (the missing file)
    assert {project.document(d)["status"] for d in docs + [missing]} == {"pending"}
    counts = chunk_counts(supabase_standin)
    assert set(counts) == set(docs)  # chunks went up before anything said ready

    supabase_standin.heal()
    report = sync(settings_for(docutrain, supabase_standin))
    assert report["error"] is None and report["backlog"] == 0
    for doc in docs:
        row = project.document(doc)
        assert (row["status"], row["chunk_count"], row["page_count"]) == ("ready", counts[doc], 2)
    row = project.document(missing)
    assert row["status"] == "error" and "not found in storage bucket 'documents'" in row["error_message"]
    # Nothing is pending any more, so a new pull queues nothing.
    result = docutrain("enqueue", "--from-supabase", "--json", **env)
    assert result.returncode == 0 and json.loads(result.stdout)["queued"] == []
    assert docutrain("run", "--drain", **env).returncode == 0
    assert len(supabase_standin.requests("GET", "/storage/v1/object")) == 5  # no document downloaded twice


def test_500_on_chunk_upload_retries_the_job_and_never_says_ready_without_chunks(docutrain, supabase_standin, tmp_path):
    project = supabase_standin.project
    flaky, broken = upload(supabase_standin, tmp_path, 2)
    env = {**env_for(supabase_standin), "DOCUTRAIN_MAX_ATTEMPTS": "3"}
    assert docutrain("enqueue", "--from-supabase", **env).returncode == 0

    jobs = {j.document_id: j for j in _queued_jobs(docutrain)}
    # flaky: its first two chunk uploads answer 500; broken: every one does.
    original = project.insert
    flaky_tries = []

    def insert(table, params, body, prefer):
        from supabase_standin import PgError

        owners = {r.get("user_document_id") for r in body} if table == "document_chunks" else set()
        if flaky in owners:
            flaky_tries.append(1)
            if len(flaky_tries) <= 2:
                raise PgError(500, "XX000", "injected")
        if broken in owners:
            raise PgError(500, "XX000", "injected")
        return original(table, params, body, prefer)

    project.insert = insert
    result = docutrain("run", "--drain", **env)
    assert result.returncode == 3, result.stderr
    assert project.document(flaky)["status"] == "ready" and len(flaky_tries) == 3
    assert project.document(broken)["status"] == "error"
    assert "gave up after 3 attempts" in project.document(broken)["error_message"]
    counts = chunk_counts(supabase_standin)
    assert counts.get(broken, 0) == 0 and counts[flaky] == project.document(flaky)["chunk_count"]
    sent = [
        r.json()["status"] for r in supabase_standin.requests("PATCH", "/rest/v1/user_documents")
        if f"id=eq.{broken}" in r.query
    ]
    assert "ready" not in sent
    assert jobs  # the pull made jobs for both


def _queued_jobs(docutrain):
    from docutrain_cli.jobs import JobState
    from docutrain_cli.queues import open_queue

    with open_queue(Settings(queue=str(docutrain.queue))) as queue:
        return queue.jobs(JobState.QUEUED, limit=100)

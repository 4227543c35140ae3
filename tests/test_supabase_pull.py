"""Pulling pending uploads from Supabase (`enqueue --from-supabase`), through
the real `supabase` client against the local PostgREST stand-in."""

from __future__ import annotations

import time

import pytest

from docutrain_cli.errors import TransientError
from docutrain_cli.supabase.pull import pending_documents, pending_jobs
from docutrain_cli.supabase.storage import parse_source


def test_pull_returns_only_pending_rows_and_jobs_for_them(supabase_standin, supabase_settings):
    project = supabase_standin.project
    pending = {project.add_document("pending", storage_path=f"u/{i}.pdf") for i in range(5)}
    for status in ("processing", "ready", "error"):
        project.add_document(status, storage_path="u/other.pdf")
    no_file = project.add_document("pending", storage_path=None)

    rows = pending_documents(supabase_settings)
    assert {r["id"] for r in rows} == pending | {no_file}
    assert set(rows[0]) == {"id", "user_id", "storage_path"}
    assert len(pending_documents(supabase_settings, limit=2)) == 2

    jobs, refused = pending_jobs(supabase_settings)
    assert {j.document_id for j in jobs} == pending and refused == []  # nothing to download: skipped
    job = next(j for j in jobs)
    assert parse_source(job.source) == ("documents", project.document(job.document_id)["storage_path"])
    assert job.user_id == project.document(job.document_id)["user_id"]


def test_pull_pages_through_many_rows(supabase_standin, supabase_settings):
    for i in range(25):
        supabase_standin.project.add_document("pending", storage_path=f"u/{i}.pdf")
    rows = pending_documents(supabase_settings, page_size=10)
    assert len({r["id"] for r in rows}) == 25
    assert supabase_standin.count("GET", "/rest/v1/user_documents") == 3


def test_a_slow_supabase_times_the_pull_out_as_transient(supabase_standin, supabase_settings):
    supabase_standin.slow(2.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        pending_documents(supabase_settings, timeout=0.5)
    assert time.monotonic() - started < 1.9

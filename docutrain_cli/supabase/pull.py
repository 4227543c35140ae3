"""Pull pending uploads from Supabase: the rows `docutrain enqueue
--from-supabase` turns into jobs. The queue can always be rebuilt from the
database this way, because a row stays 'pending' until a worker picks it up.
"""

from __future__ import annotations

from docutrain_cli.config import Settings
from docutrain_cli.supabase.chunks import SupabaseSink, make_source


def pending_documents(settings: Settings, limit: int | None = None) -> list[dict]:
    """Rows of the documents table with status 'pending': id, user_id, storage_path.
    Raises TransientError (unreachable) or PermanentError (schema, key)."""
    if limit is not None and limit < 1:
        return []
    return SupabaseSink(settings).pending_documents(limit)


def job_fields(row: dict, settings: Settings) -> dict | None:
    """The enqueue arguments for one pending row: source, document_id, user_id.
    None when the row has no storage_path (nothing to download)."""
    path = (row.get("storage_path") or "").strip()
    if not path:
        return None
    return {
        "source": make_source(settings.storage_bucket, path),
        "document_id": str(row["id"]),
        "user_id": None if row.get("user_id") is None else str(row["user_id"]),
    }


def pending_jobs(settings: Settings, limit: int | None = None) -> list:
    """Jobs for `enqueue --from-supabase`: one per pending row with a
    storage_path (rows without one have nothing to download and are skipped;
    `docutrain doctor` / the app should fix those rows). The caller skips
    document ids already queued, running or retrying."""
    from docutrain_cli.jobs import Job

    jobs = []
    for row in pending_documents(settings, limit):
        fields = job_fields(row, settings)
        if fields is not None:
            jobs.append(Job(id=0, **fields))
    return jobs

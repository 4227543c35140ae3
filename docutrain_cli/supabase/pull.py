"""Pull pending uploads from Supabase: the rows `docutrain enqueue
--from-supabase` turns into jobs. The queue can always be rebuilt from the
database this way, because a row stays 'pending' until a worker picks it up.
"""

from __future__ import annotations

from docutrain_cli.config import Settings
from docutrain_cli.pipeline.discover import Refused
from docutrain_cli.errors import PermanentError
from docutrain_cli.supabase.client import DEFAULT_TIMEOUT, classify, close_client, make_client
from docutrain_cli.supabase.storage import make_source


def pending_documents(
    settings: Settings, limit: int | None = None, *, page_size: int = 1000, timeout: float = DEFAULT_TIMEOUT
) -> list[dict]:
    """Rows of the documents table with status 'pending': id, user_id, storage_path.
    Raises TransientError (unreachable) or PermanentError (schema, key)."""
    if limit is not None and limit < 1:
        return []
    client = make_client(settings, timeout)
    try:
        return _pending_rows(client, settings.documents_table, limit, page_size)
    finally:
        close_client(client)


def _pending_rows(client, table: str, limit: int | None, page_size: int) -> list[dict]:
    rows: list[dict] = []
    offset = 0
    while limit is None or len(rows) < limit:
        size = page_size if limit is None else min(page_size, limit - len(rows))
        try:
            response = (
                client.table(table)
                .select("id,user_id,storage_path")
                .eq("status", "pending")
                # id only: created_at is not in every project's schema,
                # and a total order keeps the pages stable.
                .order("id")
                .range(offset, offset + size - 1)
                .execute()
            )
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, f"select from {table}") from None
        rows.extend(response.data)
        if len(response.data) < size:
            break
        offset += size
    return rows


def document_row(settings: Settings, document_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict | None:
    """One row of the documents table (id, user_id, status, storage_path), or
    None. Raises TransientError (unreachable) or PermanentError (schema, key,
    an id the column cannot hold)."""
    table = settings.documents_table
    client = make_client(settings, timeout)
    try:
        response = client.table(table).select("id,user_id,status,storage_path").eq("id", document_id).limit(1).execute()
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, f"select from {table}") from None
    finally:
        close_client(client)
    return response.data[0] if response.data else None


def job_fields(row: dict, settings: Settings) -> dict | None:
    """The enqueue arguments for one pending row: source, document_id, user_id.
    None when the row has no storage_path (nothing to download); PermanentError
    when the path is not one this project may download (see check_object_path)."""
    path = row.get("storage_path")
    if path is None or (isinstance(path, str) and not path.strip()):
        return None
    user_id = None if row.get("user_id") is None else str(row["user_id"])
    source = make_source(
        settings.storage_bucket, path.strip() if isinstance(path, str) else path,
        user_id=user_id, user_prefix=settings.storage_user_prefix,
    )
    return {"source": source, "document_id": str(row["id"]), "user_id": user_id}


def pending_jobs(settings: Settings, limit: int | None = None) -> tuple[list, list[Refused]]:
    """Jobs for `enqueue --from-supabase` and reconcile: one per pending row
    with a storage_path (rows without one have nothing to download and are
    skipped; `docutrain doctor` / the app should fix those rows), and the
    rows refused with the reason (a storage_path outside the bucket or the
    user's prefix). The caller skips document ids already queued, running or
    retrying."""
    from docutrain_cli.jobs import Job

    jobs, refused = [], []
    for row in pending_documents(settings, limit):
        try:
            fields = job_fields(row, settings)
        except PermanentError as exc:
            refused.append(Refused(f"{settings.documents_table} row {row.get('id')}", str(exc)))
            continue
        if fields is not None:
            jobs.append(Job(id=0, **fields))
    return jobs, refused

"""Supabase as a destination: status rows, chunk rows, Storage downloads.

One `SupabaseSink` per process, built from Settings; the underlying client is
made on first use (see `supabase_client.get_client`), never at import time
and never inherited through fork.

Status writes are PATCHes by id, one per document (coalesced by the outbox).
We do not use a bulk upsert (`on_conflict=id`) for status: an upsert is an
INSERT ... ON CONFLICT, so it would re-create rows the app deleted and it
trips NOT NULL columns the project's own schema may have (Postgres checks
them before the conflict). A PATCH only ever touches an existing row, and
`return=representation` tells us whether it matched one.

Chunks are upserted on (user_document_id, chunk_index) in bounded batches,
then the tail beyond the new count is deleted: a re-run or a duplicate
delivery leaves exactly one set, and a shorter re-run removes old chunks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import quote

from docutrain_cli.config import Settings
from docutrain_cli.errors import PermanentError, TransientError
from docutrain_cli.supabase_client import DEFAULT_TIMEOUT, classify, get_client

CHUNK_BATCH_ROWS = 500
CHUNK_BATCH_BYTES = 4 * 1024 * 1024  # stay well under proxy body limits
STATUS_FIELDS = ("status", "error_message", "page_count", "chunk_count", "processed_at", "updated_at")
REMOTE_PREFIX = "supabase://"


def utc_iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def parse_source(source: str) -> tuple[str, str]:
    """'supabase://bucket/dir/file.pdf' -> ('bucket', 'dir/file.pdf')."""
    if not source.startswith(REMOTE_PREFIX):
        raise PermanentError(f"not a supabase:// source: {source}")
    bucket, _, path = source[len(REMOTE_PREFIX) :].partition("/")
    if not bucket or not path:
        raise PermanentError(f"expected supabase://<bucket>/<path>, got {source}")
    return bucket, path


def make_source(bucket: str, storage_path: str) -> str:
    return f"{REMOTE_PREFIX}{bucket}/{storage_path.lstrip('/')}"


@dataclasses.dataclass(frozen=True)
class StatusChange:
    """One `user_documents` update, as the outbox hands it over."""

    document_id: str
    status: str
    at: float  # epoch seconds when the change happened (not when it is sent)
    error_message: str | None = None
    page_count: int | None = None
    chunk_count: int | None = None

    def body(self) -> dict[str, Any]:
        at = utc_iso(self.at)
        body: dict[str, Any] = {"status": self.status, "updated_at": at}
        # Fields that would be wrong if left from an earlier run are reset.
        body["error_message"] = self.error_message if self.status == "error" else None
        if self.status in ("ready", "error"):
            body["processed_at"] = at
        if self.page_count is not None:
            body["page_count"] = self.page_count
        if self.chunk_count is not None:
            body["chunk_count"] = self.chunk_count
        return body


class SupabaseSink:
    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT):
        if not settings.supabase_enabled:
            raise PermanentError("Supabase is not configured: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        self.settings = settings
        self.timeout = timeout

    @property
    def client(self):
        return get_client(self.settings, self.timeout)

    def _table(self, name: str):
        return self.client.table(name)

    # -- status --------------------------------------------------------------

    def push_status(self, change: StatusChange) -> bool:
        """Apply one change. True if a row took it; False if no row matched
        (the document was deleted, or a `processing` change was superseded by
        a later finish written from elsewhere)."""
        table = self.settings.documents_table
        query = self._table(table).update(change.body()).eq("id", change.document_id)
        if change.status == "processing":
            # `processing` only moves a row that is not finished. A finished
            # document runs again under at-least-once delivery (its runner
            # died before the queue heard, or a pull saw the row `pending`
            # while its `ready` waited in an outbox during an outage); the
            # app must not see it go back from ready/error to processing.
            query = query.in_("status", ["pending", "processing"])
        try:
            response = query.execute()
        except Exception as exc:  # noqa: BLE001 - classified below
            raise classify(exc, f"update {table}") from None
        return bool(response.data)

    # -- chunks --------------------------------------------------------------

    def replace_chunks(self, document_id: str, user_id: str | None, chunks: Iterable[Any]) -> int:
        """Make the document's chunk rows exactly `chunks`; returns the count.

        `chunks` are objects with chunk_index, page_start, page_end,
        token_count, content, embedding (e.g. store.ChunkRow)."""
        table = self.settings.chunks_table
        rows = [self._chunk_row(document_id, user_id, c) for c in chunks]
        for batch in _batches(rows, CHUNK_BATCH_ROWS, CHUNK_BATCH_BYTES):
            try:
                self._table(table).upsert(
                    batch,
                    on_conflict="user_document_id,chunk_index",
                    returning="minimal",
                ).execute()
            except Exception as exc:  # noqa: BLE001
                raise classify(exc, f"upsert into {table}") from None
        try:
            # The tail of an earlier, longer run (all rows when count is 0).
            self._table(table).delete(returning="minimal").eq("user_document_id", document_id).gte(
                "chunk_index", len(rows)
            ).execute()
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, f"delete from {table}") from None
        return len(rows)

    @staticmethod
    def _chunk_row(document_id: str, user_id: str | None, chunk: Any) -> dict[str, Any]:
        return {
            "user_document_id": document_id,
            "user_id": user_id,
            "chunk_index": int(chunk.chunk_index),
            "content": chunk.content,
            "page_start": int(chunk.page_start),
            "page_end": int(chunk.page_end),
            "token_count": int(chunk.token_count),
            # float32 holds ~7 significant digits; more only inflates the JSON.
            "embedding": [float(f"{v:.7g}") for v in chunk.embedding],
        }

    def chunk_rows(self, document_id: str) -> list[dict]:
        """The document's chunk rows without embeddings, in order (checks, tests)."""
        table = self.settings.chunks_table
        try:
            response = (
                self._table(table)
                .select("chunk_index,content,page_start,page_end,token_count")
                .eq("user_document_id", document_id)
                .order("chunk_index")
                .execute()
            )
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, f"select from {table}") from None
        return list(response.data)

    # -- pending documents ---------------------------------------------------

    def pending_documents(self, limit: int | None = None, page_size: int = 1000) -> list[dict]:
        """user_documents rows with status 'pending' (id, user_id, storage_path)."""
        table = self.settings.documents_table
        rows: list[dict] = []
        offset = 0
        while limit is None or len(rows) < limit:
            size = page_size if limit is None else min(page_size, limit - len(rows))
            try:
                response = (
                    self._table(table)
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

    # -- storage -------------------------------------------------------------

    def download(
        self,
        storage_path: str,
        *,
        bucket: str | None = None,
        dest_dir: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
    ) -> Path:
        """Stream an object from Storage into a new temporary file; returns its
        path (the caller deletes it). Streaming keeps a worker's memory flat
        for large PDFs, and `max_bytes` stops an oversized file early."""
        import httpx

        bucket = bucket or self.settings.storage_bucket
        client = self.client
        # The same endpoint storage3's download() uses: GET /storage/v1/object/<bucket>/<path>.
        url = f"{str(client.storage_url).rstrip('/')}/object/{quote(bucket)}/{quote(storage_path.lstrip('/'))}"
        what = f"download {storage_path!r} from storage bucket {bucket!r}"
        suffix = Path(storage_path).suffix[:16]
        fd, name = tempfile.mkstemp(prefix="docutrain-", suffix=suffix, dir=dest_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                with client.options.httpx_client.stream("GET", url, headers=dict(client.options.headers)) as response:
                    if response.status_code in (400, 404):
                        # Storage answers 400 "not_found"/"Bucket not found" as well as 404.
                        response.read()
                        raise PermanentError(
                            f"{storage_path!r} not found in storage bucket {bucket!r}"
                            f" ({_storage_message(response)})"
                        )
                    if response.status_code >= 400:
                        response.read()
                        raise classify(httpx.HTTPStatusError("", request=response.request, response=response), what)
                    size = 0
                    for block in response.iter_bytes(1 << 20):
                        size += len(block)
                        if max_bytes is not None and size > max_bytes:
                            raise PermanentError(
                                f"too large: over {max_bytes // (1024 * 1024)} MB in storage bucket {bucket!r}"
                            )
                        out.write(block)
        except (PermanentError, TransientError):
            path.unlink(missing_ok=True)
            raise
        except Exception as exc:  # noqa: BLE001
            path.unlink(missing_ok=True)
            raise classify(exc, what) from None
        return path

    def close(self) -> None:
        """Nothing to do: the client belongs to the process (see supabase_client)."""


def _storage_message(response) -> str:
    try:
        data = response.json()
        return str(data.get("message") or data.get("error") or response.status_code)
    except Exception:  # noqa: BLE001
        return f"HTTP {response.status_code}"


def _batches(rows: Sequence[Mapping[str, Any]], max_rows: int, max_bytes: int) -> Iterable[list]:
    """Split rows so each request stays under both limits (size is estimated)."""
    batch: list = []
    size = 0
    for row in rows:
        estimate = len(row["content"]) * 2 + len(row["embedding"]) * 12 + 200
        if batch and (len(batch) >= max_rows or size + estimate > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += estimate
    if batch:
        yield batch


# -- worker-side helpers (used by pipeline/process.py and pipeline/load.py) ------

WORKER_TIMEOUT = 60.0  # a 500-row batch of 1536-d vectors is a few MB
_sinks: dict[tuple, SupabaseSink] = {}


def sink_for(settings: Settings, timeout: float = WORKER_TIMEOUT) -> SupabaseSink:
    """This process's sink for these settings (the client inside is per process too)."""
    key = (os.getpid(), settings.supabase_url, settings.documents_table, settings.chunks_table, timeout)
    sink = _sinks.get(key)
    if sink is None:
        sink = _sinks[key] = SupabaseSink(settings, timeout=timeout)
    return sink


def upload_chunks(settings: Settings, job: Any, rows: Sequence[Any]) -> int:
    """Put the job's chunk set into the chunks table (idempotent). Raises
    TransientError (retry the job) or PermanentError (schema / data refused)."""
    return sink_for(settings).replace_chunks(str(job.document_id), job.user_id, rows)


_downloads: list[Path] = []
_cleanup_registered = False


def download_source(settings: Settings, source: str, *, max_bytes: int | None = None) -> Path:
    """Download a supabase://bucket/path source to a temporary file.

    A worker keeps at most one download: the previous one is deleted when
    the next job downloads (its extraction is finished by then), and the last
    one when the process exits."""
    bucket, path = parse_source(source)
    while _downloads:
        _downloads.pop().unlink(missing_ok=True)
    local = sink_for(settings).download(path, bucket=bucket, max_bytes=max_bytes)
    global _cleanup_registered
    if not _cleanup_registered:
        import atexit

        atexit.register(_cleanup_downloads)
        _cleanup_registered = True
    _downloads.append(local)
    return local


def _cleanup_downloads() -> None:
    while _downloads:
        _downloads.pop().unlink(missing_ok=True)

"""Supabase as a destination for chunks: the chunks table.

Chunks are upserted on (user_document_id, chunk_index) in bounded batches,
then the tail beyond the new count is deleted: a re-run or a duplicate
delivery leaves exactly one set, and a shorter re-run removes old chunks.
Workers write their own document's chunks, with the client from their
WorkerContext, before the job reports success.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from docutrain_cli.config import Settings
from docutrain_cli.supabase.client import classify

CHUNK_BATCH_ROWS = 500
CHUNK_BATCH_BYTES = 4 * 1024 * 1024  # stay well under proxy body limits
WORKER_TIMEOUT = 60.0  # a 500-row batch of 1536-d vectors is a few MB


class SupabaseChunks:
    """The chunks table of the settings' project, through `client`."""

    def __init__(self, settings: Settings, client):
        self.settings = settings
        self.client = client

    def _table(self, name: str):
        return self.client.table(name)

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

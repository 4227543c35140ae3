"""Supabase as a destination for document status: the outbox's Delivery
for the `user_documents` table.

Status writes are PATCHes by id, one per document (coalesced by the outbox).
We do not use a bulk upsert (`on_conflict=id`) for status: an upsert is an
INSERT ... ON CONFLICT, so it would re-create rows the app deleted and it
trips NOT NULL columns the project's own schema may have (Postgres checks
them before the conflict). A PATCH only ever touches an existing row, and
`return=representation` tells us whether it matched one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from docutrain_cli.config import Settings
from docutrain_cli.status.outbox import StatusChange
from docutrain_cli.supabase.client import DEFAULT_TIMEOUT, classify, close_client, make_client

STATUS_FIELDS = ("status", "error_message", "page_count", "chunk_count", "processed_at", "updated_at")


def utc_iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def update_body(change: StatusChange) -> dict[str, Any]:
    """The PATCH body for one change: the columns in STATUS_FIELDS."""
    at = utc_iso(change.at)
    body: dict[str, Any] = {"status": change.status, "updated_at": at}
    # Fields that would be wrong if left from an earlier run are reset.
    body["error_message"] = change.error_message if change.status == "error" else None
    if change.status in ("ready", "error"):
        body["processed_at"] = at
    if change.page_count is not None:
        body["page_count"] = change.page_count
    if change.chunk_count is not None:
        body["chunk_count"] = change.chunk_count
    return body


class SupabaseStatusDelivery:
    """Delivers status changes to the documents table. The client is made on
    first use, in the process that delivers (the runner's parent, or `sync`)."""

    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT):
        self.settings = settings
        self.timeout = timeout
        self.destination = f"Supabase {settings.documents_table}"
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.settings, self.timeout)
        return self._client

    def deliver(self, change: StatusChange) -> bool:
        """Apply one change. True if a row took it; False if no row matched
        (the document was deleted, or a `processing` change came for a row
        that is already finished)."""
        table = self.settings.documents_table
        query = self.client.table(table).update(update_body(change)).eq("id", change.document_id)
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

    def close(self) -> None:
        if self._client is not None:
            close_client(self._client)
            self._client = None

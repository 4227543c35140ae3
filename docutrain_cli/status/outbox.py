"""The status outbox: every status change is committed to a local SQLite file
first, then pushed to its destination in batches, and retried until delivered.

The outbox knows nothing about where changes go: `flush` hands each one to
a `Delivery` (today Supabase's `user_documents`, status/supabase.py). A
second destination (e.g. signed HTTP webhooks) is a second Delivery with its
own outbox file, and gets the same ordering, backoff and guarantees without
touching this module. That is also why it lives in status/, not in supabase/.

Guarantees and how they are kept:
- Nothing is lost: a change is one committed INSERT (WAL, synchronous=FULL)
  before anyone tries to send it; a row is deleted only after the destination has
  taken it. A killed process loses nothing; the next flush resumes.
- Order per document, last state wins: every change gets a sequence number
  from AUTOINCREMENT (never reused, so always increasing). A flush sends only
  the newest change per document, and then deletes that document's rows
  with seq <= the one sent. A change recorded meanwhile has a higher seq and
  stays. So an older state is never sent after a newer one: a late
  `processing` cannot overwrite `ready`.
- One flusher at a time per outbox (a non-blocking flock): two flushers
  could otherwise read the same old state and send it after the other one
  sent a newer one. A flush that finds the lock taken does nothing.

The Supabase outbox lives next to the store (`<store>.outbox`), not inside it: workers
hold the store's write lock while they replace chunk sets, and the runner's
status writes should not queue behind them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Protocol

from docutrain_cli import sqlite
from docutrain_cli.paths import flush_lock_path, outbox_path
from docutrain_cli.errors import PermanentError, TransientError

log = logging.getLogger("docutrain.outbox")

DEFAULT_BATCH = 100
# After a transient failure automatic flushes wait, doubling up to a cap, so
# an outage costs the runner one failed request per interval, not per tick.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 120.0
# A change the destination refuses for good (e.g. a column missing) is retried too:
# fixing the schema must be enough to deliver it. But slowly.
REFUSED_FIRST = 60.0
REFUSED_MAX = 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS status_outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id   TEXT NOT NULL,            -- user_documents.id
    status        TEXT NOT NULL,
    error_message TEXT,
    page_count    INTEGER,
    chunk_count   INTEGER,
    at            REAL NOT NULL,            -- when the change happened (epoch s)
    attempts      INTEGER NOT NULL DEFAULT 0,
    not_before    REAL NOT NULL DEFAULT 0,  -- refused changes wait until then
    last_error    TEXT
);
CREATE INDEX IF NOT EXISTS status_outbox_document ON status_outbox (document_id, seq);
CREATE TABLE IF NOT EXISTS outbox_state (
    key   TEXT PRIMARY KEY,
    value TEXT
);
"""


@dataclasses.dataclass(frozen=True)
class StatusChange:
    """One document status change, as recorded and as handed to a Delivery."""

    document_id: str
    status: str  # processing | ready | error
    at: float  # epoch seconds when the change happened (not when it is sent)
    error_message: str | None = None
    page_count: int | None = None
    chunk_count: int | None = None


class Delivery(Protocol):
    """A destination for status changes.

    `deliver` returns True when the destination took the change, False when
    it had nothing to apply it to (e.g. the row is gone); both count as
    delivered. It raises TransientError to stop the flush and back off, or
    PermanentError to set this change aside and retry it slowly."""

    destination: str  # names it in log lines, e.g. "Supabase user_documents"

    def deliver(self, change: StatusChange) -> bool: ...


@dataclasses.dataclass(frozen=True)
class FlushResult:
    delivered: int = 0  # changes the destination took (rows matched)
    dropped: int = 0  # no row matched: document deleted, or a stale `processing`
    refused: int = 0  # permanent errors this time (kept, retried later)
    error: str | None = None  # the transient error that stopped the flush
    skipped: str | None = None  # why nothing was tried (backing off, locked)

    @property
    def sent(self) -> int:
        return self.delivered + self.dropped

    def outcome(self) -> dict[str, Any]:
        """What `docutrain sync` reports of a flush (its `skipped` aside)."""
        return {"delivered": self.delivered, "dropped": self.dropped, "refused": self.refused, "error": self.error}


class Outbox(sqlite.SharedFile):
    def __init__(self, path: str | os.PathLike[str]):
        # synchronous=FULL: a status change must survive a power cut.
        super().__init__(path, lambda path: sqlite.connect(path, synchronous="FULL", schema=SCHEMA))

    @classmethod
    def for_store(cls, store_path: str | os.PathLike[str]) -> "Outbox":
        return cls(outbox_path(store_path))

    # -- writing -------------------------------------------------------------

    def record(
        self,
        document_id: str,
        status: str,
        *,
        error_message: str | None = None,
        page_count: int | None = None,
        chunk_count: int | None = None,
        at: float | None = None,
    ) -> int:
        """Commit one change; returns its sequence number."""
        cur = self.conn.execute(
            """INSERT INTO status_outbox (document_id, status, error_message, page_count, chunk_count, at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (str(document_id), status, error_message, page_count, chunk_count, time.time() if at is None else at),
        )
        return int(cur.lastrowid)

    # -- reading -------------------------------------------------------------

    def due(
        self, limit: int = DEFAULT_BATCH, now: float | None = None, *, skip: set[str] = frozenset(),
        statuses: tuple[str, ...] | None = None,
    ) -> list[tuple[int, StatusChange]]:
        """(seq, StatusChange) for the newest change of each document, oldest
        first; only documents whose newest change is one of `statuses`, if given."""
        now = time.time() if now is None else now
        only = f"AND o.status IN ({', '.join('?' * len(statuses))})" if statuses else ""
        rows = self.conn.execute(
            f"""SELECT o.seq, o.document_id, o.status, o.at, o.error_message, o.page_count, o.chunk_count
               FROM status_outbox o
               JOIN (SELECT document_id, max(seq) AS seq FROM status_outbox GROUP BY document_id) newest
                 ON newest.seq = o.seq
               WHERE o.not_before <= ? {only}
               ORDER BY o.seq""",
            (now, *(statuses or ())),
        )
        out = []
        for seq, doc, status, at, message, pages, chunks in rows:
            if doc in skip:
                continue
            out.append((seq, StatusChange(doc, status, at, message, pages, chunks)))
            if len(out) >= limit:
                break
        return out

    def backlog(self) -> int:
        """Documents whose newest status has not been delivered yet."""
        return self.conn.execute("SELECT count(DISTINCT document_id) FROM status_outbox").fetchone()[0]

    def document_ids(self) -> set[str]:
        """Documents whose newest status has not reached Supabase yet."""
        return {doc for (doc,) in self.conn.execute("SELECT DISTINCT document_id FROM status_outbox")}

    def pending_changes(self) -> int:
        """Rows in the outbox (a document can have several before coalescing)."""
        return self.conn.execute("SELECT count(*) FROM status_outbox").fetchone()[0]

    def info(self) -> dict[str, Any]:
        """What `docutrain status` shows."""
        oldest = self.conn.execute("SELECT min(at) FROM status_outbox").fetchone()[0]
        state = self._state()
        return {
            "path": str(self.path),
            "backlog": self.backlog(),
            "pending_changes": self.pending_changes(),
            "oldest_change_age_seconds": None if oldest is None else max(0.0, time.time() - oldest),
            "last_error": state.get("last_error"),
            "last_error_at": _float(state.get("last_error_at")),
            "last_success_at": _float(state.get("last_success_at")),
            "retry_after": _float(state.get("retry_after")),
        }

    def last_error(self) -> tuple[str, float] | None:
        state = self._state()
        if not state.get("last_error"):
            return None
        return state["last_error"], _float(state.get("last_error_at")) or 0.0

    # -- delivering ----------------------------------------------------------

    def flush(
        self,
        delivery: Delivery,
        *,
        deadline_seconds: float = 5.0,
        batch_size: int = DEFAULT_BATCH,
        force: bool = False,
        statuses: tuple[str, ...] | None = None,
    ) -> FlushResult:
        """Hand due changes to `delivery` until done, out of time, or the
        destination fails transiently. Never raises for the destination's
        trouble; the result (and `info()`) says what happened.
        `force` ignores the backoff (e.g. `docutrain sync`); `statuses` sends
        only documents whose newest change is one of them (see `due`)."""
        now = time.time()
        retry_after = _float(self._state().get("retry_after")) or 0.0
        if not force and now < retry_after:
            return FlushResult(skipped=f"backing off until {time.strftime('%H:%M:%S', time.localtime(retry_after))}")
        if not self.conn.execute("SELECT 1 FROM status_outbox LIMIT 1").fetchone():
            return FlushResult()
        lock = sqlite.try_lock(flush_lock_path(self.path))
        if lock is None:
            return FlushResult(skipped="another process is syncing this outbox")
        try:
            return self._flush_locked(delivery, time.monotonic() + deadline_seconds, batch_size, force, statuses)
        finally:
            os.close(lock)

    def _flush_locked(self, delivery: Delivery, deadline: float, batch_size: int, force: bool,
                      statuses: tuple[str, ...] | None) -> FlushResult:
        delivered = dropped = refused = 0
        refused_docs: set[str] = set()
        error: str | None = None
        while time.monotonic() < deadline:
            batch = self.due(batch_size, float("inf") if force else None, skip=refused_docs, statuses=statuses)
            if not batch:
                break
            for seq, change in batch:
                if time.monotonic() >= deadline:
                    break
                try:
                    applied = delivery.deliver(change)
                except TransientError as exc:
                    error = str(exc)
                    break
                except PermanentError as exc:
                    refused += 1
                    refused_docs.add(change.document_id)
                    self._refuse(seq, str(exc))
                    self.note_error(str(exc))
                    log.warning("status for document %s refused by %s: %s", change.document_id, delivery.destination, exc)
                    continue
                # Delivered: only now forget it and everything older for this document.
                self.conn.execute(
                    "DELETE FROM status_outbox WHERE document_id = ? AND seq <= ?",
                    (change.document_id, seq),
                )
                if applied:
                    delivered += 1
                else:
                    dropped += 1
                    log.warning(
                        "status %r for document %s matched nothing in %s (deleted, or already finished elsewhere)",
                        change.status, change.document_id, delivery.destination,
                    )
            if error:
                break
        self._after_flush(delivered + dropped, error, refused)
        return FlushResult(delivered, dropped, refused, error)

    def _refuse(self, seq: int, message: str) -> None:
        attempts = self.conn.execute(
            "UPDATE status_outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ? RETURNING attempts",
            (message, seq),
        ).fetchone()
        if attempts:
            wait = min(REFUSED_MAX, REFUSED_FIRST * 2 ** (attempts[0] - 1))
            self.conn.execute("UPDATE status_outbox SET not_before = ? WHERE seq = ?", (time.time() + wait, seq))

    def _after_flush(self, sent: int, error: str | None, refused: int) -> None:
        state = self._state()
        now = time.time()
        updates: dict[str, Any] = {}
        if sent:
            updates["last_success_at"] = now
        if error:
            failures = int(state.get("failures") or 0) + 1
            updates.update(
                failures=failures,
                retry_after=now + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1)),
            )
            self.note_error(error)
            log.warning("status sync failed, %d document(s) waiting: %s", self.backlog(), error)
        else:
            updates.update(failures=0, retry_after=None)
            if not refused and self.backlog() == 0:
                updates.update(last_error=None, last_error_at=None)  # all caught up
        self._set_state(updates)

    def note_error(self, message: str) -> None:
        """Remember why delivery failed, for `info()` and `docutrain status`."""
        self._set_state({"last_error": message, "last_error_at": time.time()})

    # -- state ---------------------------------------------------------------

    def _state(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM outbox_state").fetchall())

    def _set_state(self, values: dict[str, Any]) -> None:
        self.conn.executemany(
            "INSERT INTO outbox_state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [(k, None if v is None else str(v)) for k, v in values.items()],
        )


def _float(value: str | None) -> float | None:
    try:
        return None if value in (None, "", "None") else float(value)
    except ValueError:
        return None

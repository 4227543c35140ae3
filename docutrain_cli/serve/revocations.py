"""Logged-out dashboard sessions, so a copied cookie stops working.

A cookie carries a random nonce (session.py); logging out writes the nonce
here, in `<store>.sessions`, a small SQLite file beside the store. A file
rather than memory: it outlives a restart of `serve`, and every `serve`
process on this machine (same store) sees it. Rows are kept until the
cookie would have expired anyway, then dropped at the next logout.

Reads happen on the event loop (a primary-key lookup in WAL mode does not
wait for writers); one connection, used under a lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from docutrain_cli.sqlite import connect, transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS revoked (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)"


class Revocations:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:  # opened on first use: no file until someone logs in
            self._conn = connect(self.path, schema=SCHEMA, check_same_thread=False)
        return self._conn

    def revoke(self, nonce: str, expires: float) -> None:
        with self._lock, transaction(self._db()) as db:
            db.execute("DELETE FROM revoked WHERE expires < ?", (time.time(),))
            db.execute("INSERT OR REPLACE INTO revoked (nonce, expires) VALUES (?, ?)", (nonce, expires))

    def revoked(self, nonce: str) -> bool:
        with self._lock:
            return self._db().execute("SELECT 1 FROM revoked WHERE nonce = ?", (nonce,)).fetchone() is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

"""Switching SQLite files that several processes share to WAL."""

from __future__ import annotations

import sqlite3
import time


def use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put `conn`'s database in WAL mode (a no-op when it already is).

    Turning a file to WAL takes an exclusive lock without going through
    SQLite's busy handler, so processes that open a fresh file together (the
    workers of a first run) can get "database is locked" at once. Wait and
    try again, for as long as busy_timeout would.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

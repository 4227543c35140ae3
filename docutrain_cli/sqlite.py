"""SQLite plumbing shared by the files several processes use at once: the
local store, the status outbox and the local queue.

One `connect()` (busy timeout, WAL, synchronous level), one
`ProcessConnection` (a connection per process, never shared across a fork),
one `transaction()` and one non-blocking `try_lock()`, so each fact about how
we use SQLite and flock has one home.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterator

# How long a writer waits for another one before "database is locked":
# workers replacing big chunk sets hold the store's lock for a while.
BUSY_TIMEOUT = 30.0  # seconds


def connect(
    path: str | os.PathLike[str],
    *,
    synchronous: str = "NORMAL",
    foreign_keys: bool = False,
    schema: str | None = None,
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    """Open `path` (making its folder) for sharing between processes:
    autocommit mode (transactions are explicit, see `transaction`), the busy
    timeout, WAL, and `synchronous` (FULL where a committed row must survive
    a power cut, NORMAL where WAL's guarantee is enough). check_same_thread=False
    for a connection that moves between threads, never used by two at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = configure(
        sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=check_same_thread),
        synchronous,
    )
    if foreign_keys:
        conn.execute("PRAGMA foreign_keys = ON")
    if schema:
        conn.executescript(schema)
    return conn


class ProcessConnection:
    """One connection for the process that uses it: opened by `open` on
    first use, and opened again in a forked child, because a SQLite
    connection must never be used on both sides of a fork."""

    def __init__(self, open: Callable[[], sqlite3.Connection]):
        self._open = open
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None

    def get(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def close(self) -> None:
        """Close it if this process opened it (a child leaves its parent's alone)."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = self._pid = None


def configure(conn: sqlite3.Connection, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """The busy timeout, WAL and `synchronous` on an open connection (also
    one persist-queue makes)."""
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
    use_wal(conn, BUSY_TIMEOUT)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception. IMMEDIATE
    takes the write lock at once, so a transaction never fails half-way
    because another writer got there first."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """Take an exclusive flock on `path` without waiting: the open file
    descriptor (close it to release), or None when another process holds it.
    The kernel drops the lock when the holder dies, even by kill -9."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


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

"""What each worker process is doing right now, readable from any process.

The dashboard (in `docutrain serve`, a different process from `docutrain
run`) must show a runner's workers and the job each one is on. The queue
knows which jobs are leased, but not which worker holds them, and a leased
job may still wait in the pool's small backlog. So each worker writes one row
about itself to a small SQLite file next to the store (`<store>.workers`):
when it starts, when it takes a job and when it finishes one.

- A separate file, not a table in the store: workers hold the store's write
  lock while they replace a chunk set, and this write must not wait for that.
- A worker killed mid-job (timeout, crash, kill -9) cannot clear its row.
  Readers therefore keep only rows whose process is alive on this host,
  checked by pid *and* the process's start time (so a reused pid is not
  mistaken for the old worker), and delete the rest.
- Best effort: a failure to write here never fails a job.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sqlite3
import time

from docutrain_cli import sqlite as sqlite_files
from docutrain_cli.paths import workers_path

log = logging.getLogger("docutrain.activity")

SCHEMA = """
CREATE TABLE IF NOT EXISTS workers (
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    proc_start   TEXT,                 -- /proc/<pid>/stat start time: tells a reused pid
    started_at   REAL NOT NULL,        -- when the worker process started (epoch s)
    jobs_done    INTEGER NOT NULL DEFAULT 0,  -- attempts finished by this worker
    job_id       INTEGER,              -- the job it is on, NULL when idle
    source       TEXT,
    document_id  TEXT,
    job_since    REAL,                 -- when it took that job, or went idle
    PRIMARY KEY (host, pid)
);
-- What a worker's job last reported ("OCR page 3/40"), as the CLI shows it.
-- A table of its own so a file made by an older version gains it too.
CREATE TABLE IF NOT EXISTS progress (
    host     TEXT NOT NULL,
    pid      INTEGER NOT NULL,
    job_id   INTEGER NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (host, pid)
);
"""


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    host: str
    pid: int
    started_at: float
    jobs_done: int
    job_id: int | None
    source: str | None
    document_id: str | None
    since: float | None  # on this job since, or idle since
    progress: str | None = None  # what its job last reported: "OCR page 3/40"

    @property
    def busy(self) -> bool:
        return self.job_id is not None


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, but is it ours?
        pass
    current = _proc_start(pid)
    return proc_start is None or current is None or current == proc_start


class WorkerBoard(sqlite_files.SharedFile):
    """The `<store>.workers` file. One connection per process, opened lazily."""

    def __init__(self, path: str | os.PathLike[str]):
        # synchronous=NORMAL: a row lost to a power cut only shows a stale worker.
        super().__init__(path, lambda path: sqlite_files.connect(path, synchronous="NORMAL", schema=SCHEMA))
        self._host = socket.gethostname()

    @classmethod
    def for_store(cls, store_path: str | os.PathLike[str]) -> "WorkerBoard":
        return cls(workers_path(store_path))

    # -- writers: the worker process itself --------------------------------
    def worker_started(self) -> None:
        pid, now = os.getpid(), time.time()
        self._write(
            "INSERT OR REPLACE INTO workers (host, pid, proc_start, started_at, job_since)"
            " VALUES (?, ?, ?, ?, ?)",
            (self._host, pid, _proc_start(pid), now, now),
        )

    def job_started(self, job, finished: int = 0) -> None:
        """On `job` now; `finished`: jobs it finished since the last write
        (the one before, in a task of several: one write per job, not two)."""
        self._write(
            "UPDATE workers SET job_id = ?, source = ?, document_id = ?, job_since = ?, jobs_done = jobs_done + ?"
            " WHERE host = ? AND pid = ?",
            (job.id, job.source, job.document_id, time.time(), finished, self._host, os.getpid()),
        )

    def job_progress(self, job_id: int, message: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO progress (host, pid, job_id, message) VALUES (?, ?, ?, ?)",
            (self._host, os.getpid(), job_id, message),
        )

    def job_finished(self) -> None:
        self._write(
            "UPDATE workers SET job_id = NULL, source = NULL, document_id = NULL, job_since = ?,"
            " jobs_done = jobs_done + 1 WHERE host = ? AND pid = ?",
            (time.time(), self._host, os.getpid()),
        )

    def _write(self, sql: str, params: tuple) -> None:
        try:
            self.conn.execute(sql, params)
        except sqlite3.Error as exc:  # never fail a job over the dashboard
            log.warning("%s: cannot record worker activity: %s", self.path, exc)

    # -- readers -----------------------------------------------------------
    def workers(self) -> list[WorkerInfo]:
        """Live workers, oldest first. Rows of dead processes on this host are
        dropped; rows from other hosts (a shared store) are shown as written."""
        if not self.path.exists():
            return []
        rows = self.conn.execute(
            "SELECT w.host, w.pid, w.proc_start, w.started_at, w.jobs_done, w.job_id, w.source, w.document_id,"
            " w.job_since, p.message FROM workers w LEFT JOIN progress p"
            " ON p.host = w.host AND p.pid = w.pid AND p.job_id = w.job_id"  # this job's, not the last one's
            " ORDER BY w.started_at, w.pid"
        ).fetchall()
        live, gone = [], []
        for host, pid, proc_start, *rest in rows:
            if host == self._host and not _alive(pid, proc_start):
                gone.append((host, pid))
            else:
                live.append(WorkerInfo(host, pid, *rest))
        if gone:
            try:
                self.conn.executemany("DELETE FROM workers WHERE host = ? AND pid = ?", gone)
                self.conn.executemany("DELETE FROM progress WHERE host = ? AND pid = ?", gone)
            except sqlite3.Error:  # a reader that cannot tidy up still answers
                pass
        return live


# The worker process's board, made in init_worker (after the fork).
_board: WorkerBoard | None = None


def start_worker(store_path: str) -> None:
    global _board
    _board = WorkerBoard.for_store(store_path)
    _board.worker_started()


def current() -> WorkerBoard | None:
    return _board

"""Processors for runner tests, loaded in real worker processes through
DOCUTRAIN_PROCESSOR=tests.processors:<name>.

Each writes what it did to a SQLite file named by DOCUTRAIN_TEST_OUTPUT:
`output` holds one row per document (replaced, never doubled, like the real
store) and `runs` one row per execution, so tests can tell at-least-once
delivery from exactly-once output.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

from docutrain_cli.errors import PermanentError, TransientError
from docutrain_cli.jobs import JobResult


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ["DOCUTRAIN_TEST_OUTPUT"], timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS output (document TEXT PRIMARY KEY, job INTEGER, pid INTEGER)")
    conn.execute("CREATE TABLE IF NOT EXISTS runs (job INTEGER, attempt INTEGER, pid INTEGER, at REAL)")
    return conn


def _record(job) -> JobResult:
    conn = _db()
    conn.execute("INSERT OR REPLACE INTO output VALUES (?, ?, ?)", (job.document_key, job.id, os.getpid()))
    conn.close()
    return JobResult(pages=1, chunks=1)


def _note_run(job) -> None:
    conn = _db()
    conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?)", (job.id, job.attempts, os.getpid(), time.time()))
    conn.close()


def record(job, context) -> JobResult:
    """Succeeds after an optional pause (DOCUTRAIN_TEST_SLEEP seconds)."""
    _note_run(job)
    time.sleep(float(os.environ.get("DOCUTRAIN_TEST_SLEEP", "0")))
    return _record(job)


def client_modules(job, context) -> JobResult:
    """Notes which client libraries the worker had imported when the job
    began: one line a job in DOCUTRAIN_TEST_OUTPUT + '.modules'."""
    loaded = [name for name in ("openai", "supabase") if name in sys.modules]
    with open(os.environ["DOCUTRAIN_TEST_OUTPUT"] + ".modules", "a") as notes:
        notes.write(" ".join(loaded) + "\n")
    return _record(job)


def by_name(job, context) -> JobResult:
    """Does what the file's name says: crash-kill, crash-segv, crash-exit,
    hang, transient-N (fails the first N attempts), permanent, sleep-S,
    wait (until the test creates <name>.go next to the file: no timing guess)."""
    _note_run(job)
    name = Path(job.source).stem
    if name.startswith("crash-kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("crash-segv"):
        ctypes.string_at(0)  # a real segmentation fault
    if name.startswith("crash-exit"):
        os._exit(3)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("transient-"):
        failures = int(name.split("-")[1])
        if job.attempts <= failures:
            raise TransientError(f"service unavailable (attempt {job.attempts})")
    if name.startswith("permanent"):
        raise PermanentError("not a PDF: cannot open")
    if name.startswith("wait"):
        go = Path(job.source).with_suffix(".go")
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    if "sleep-" in name:  # sleep-S, or a-sleep-S to choose the queue order
        time.sleep(float(name.split("sleep-")[1].split("-")[0]))
    return _record(job)


def modules(job, context) -> JobResult:
    """Records which modules of the command line the worker has imported
    (`imports` table): a worker needs none of them."""
    loaded = sorted(m for m in ("typer", "rich", "docutrain_cli.cli") if m in sys.modules)
    conn = _db()
    conn.execute("CREATE TABLE IF NOT EXISTS imports (pid INTEGER, modules TEXT)")
    conn.execute("INSERT INTO imports VALUES (?, ?)", (os.getpid(), " ".join(loaded)))
    conn.close()
    return _record(job)

"""Write queue.db.example: a small real queue file with jobs in every state.

Run: python scripts/make_queue_example.py [queue.db.example]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.paths import beside, runner_lock_path
from docutrain_cli.queues.local import LocalQueue


def main(target: str = "queue.db.example") -> None:
    path = Path(target)
    for leftover in (path, *_sidecars(path)):
        leftover.unlink(missing_ok=True)
    queue = LocalQueue(path)
    names = ["welcome.pdf", "handbook.pdf", "scan.pdf", "flaky.pdf", "new.pdf", "later.pdf"]
    jobs = [Job(0, f"uploads/{n}", sha256=f"{i:064x}", user_id="demo-user") for i, n in enumerate(names, 1)]
    queue.enqueue(jobs)
    now = time.time()
    done, dead, flaky = queue.lease(3, now)
    done.result = JobResult(pages=3, chunks=4, embedder="offline", model="offline-hash-v1")
    queue.complete(done)
    queue.bury(dead, "uploads/handbook.pdf: encrypted: needs a password")
    queue.retry_later(flaky, "uploads/scan.pdf: OpenAI answered 429 (rate limited)", now + 3600)
    queue.housekeep()
    queue.close()
    # Fold the WAL into the main file so the example is one self-contained file.
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    for leftover in _sidecars(path):
        leftover.unlink(missing_ok=True)
    print(f"wrote {path}")


def _sidecars(path: Path) -> list[Path]:
    """SQLite's WAL files and the runner lock: none belongs in the example."""
    return [beside(path, "-wal"), beside(path, "-shm"), runner_lock_path(path)]


if __name__ == "__main__":
    main(*sys.argv[1:])

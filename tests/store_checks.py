"""Checks on a local store after a test run: the output promise of
at-least-once delivery (every document ready once, one chunk set each)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def assert_one_chunk_set_each(store: str | Path, total: int) -> None:
    """`total` documents, all ready, each with exactly one chunk set: no
    duplicate (document, chunk_index) rows, and chunk_count matching the rows."""
    with sqlite3.connect(store) as conn:
        documents, ready = conn.execute("SELECT count(*), sum(status = 'ready') FROM documents").fetchone()
        chunks, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT document_id || ':' || chunk_index) FROM chunks"
        ).fetchone()
        mismatched = conn.execute(
            "SELECT count(*) FROM documents d"
            " WHERE chunk_count != (SELECT count(*) FROM chunks c WHERE c.document_id = d.id)"
        ).fetchone()[0]
    assert (documents, ready) == (total, total)
    assert chunks == distinct and chunks >= total
    assert mismatched == 0

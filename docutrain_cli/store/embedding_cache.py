"""The store's embedding cache: text hash -> vector, so unchanged text costs
no tokens on a re-run.

Layout (issue 24). One row per vector was costly: a 1.5 KB vector in a
`WITHOUT ROWID` table takes about 4.6 KB (the row spills into an overflow
page of its own), and in a rowid table about 2.2 KB (two rows fit a 4 KB
page). So vectors are stored end to end in blocks of about 32 KB, whose
overflow pages SQLite fills completely, and a small key row says where each
one is::

    embedding_blocks                      -- vectors end to end
      id        INTEGER PRIMARY KEY
      vectors   BLOB NOT NULL             -- little-endian float32 values

    embedding_keys
      model, dimensions, text_sha256      -- the key (dimensions 0 = the model's default size)
      block     INTEGER NOT NULL          -- embedding_blocks.id
      start     INTEGER NOT NULL          -- byte offset of the vector in the block
      length    INTEGER NOT NULL          -- its size in bytes
      created_at TEXT NOT NULL
      PRIMARY KEY (model, dimensions, text_sha256)

    embedding_cache                       -- a view with the old table's columns:
      model, dimensions, text_sha256, embedding, created_at

Reading and inserting go through the view (`INSERT INTO embedding_cache`
appends to the newest block, by a trigger), so SQL written for the old table
keeps working. A key that is already cached keeps its vector. A store made
with the old table is converted when it is opened, in one transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, Mapping, Sequence

from docutrain_cli import sqlite

BLOCK_BYTES = 32 * 1024  # a block holds vectors up to this size (or one larger vector)
NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_KEY = "model = NEW.model AND dimensions = NEW.dimensions AND text_sha256 = NEW.text_sha256"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS embedding_blocks (
    id INTEGER PRIMARY KEY,
    vectors BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS embedding_keys (
    model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    text_sha256 TEXT NOT NULL,
    block INTEGER NOT NULL,
    start INTEGER NOT NULL,
    length INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (model, dimensions, text_sha256)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS embedding_cache AS
    SELECT k.model, k.dimensions, k.text_sha256,
           substr(b.vectors, k.start + 1, k.length) AS embedding, k.created_at
    FROM embedding_keys k JOIN embedding_blocks b ON b.id = k.block;
CREATE TRIGGER IF NOT EXISTS embedding_cache_insert INSTEAD OF INSERT ON embedding_cache
BEGIN
    -- A new block when the newest one would pass BLOCK_BYTES (length() reads no blob).
    INSERT INTO embedding_blocks (vectors)
        SELECT x'' WHERE NOT EXISTS (SELECT 1 FROM embedding_keys WHERE {_KEY})
            AND coalesce((SELECT length(vectors) FROM embedding_blocks ORDER BY id DESC LIMIT 1)
                         + length(NEW.embedding), {BLOCK_BYTES + 1}) > {BLOCK_BYTES}
            AND coalesce((SELECT length(vectors) FROM embedding_blocks ORDER BY id DESC LIMIT 1), 1) > 0;
    INSERT INTO embedding_keys (model, dimensions, text_sha256, block, start, length, created_at)
        SELECT NEW.model, NEW.dimensions, NEW.text_sha256, b.id, length(b.vectors),
               length(NEW.embedding), coalesce(NEW.created_at, {NOW})
        FROM (SELECT id, vectors FROM embedding_blocks ORDER BY id DESC LIMIT 1) b
        WHERE NOT EXISTS (SELECT 1 FROM embedding_keys WHERE {_KEY});
    -- Append only for a key just made: its start is the block's current end.
    UPDATE embedding_blocks SET vectors = CAST(vectors || NEW.embedding AS BLOB)  -- || makes text
        WHERE (id, length(vectors)) = (SELECT block, start FROM embedding_keys WHERE {_KEY});
END;
"""


def ensure_layout(conn: sqlite3.Connection) -> None:
    """Create the cache, or convert a store's old one-row-per-vector table."""
    kind = conn.execute("SELECT type FROM sqlite_master WHERE name = 'embedding_cache'").fetchone()
    if kind == ("view",):
        return
    with sqlite.transaction(conn) as tx:
        kind = tx.execute("SELECT type FROM sqlite_master WHERE name = 'embedding_cache'").fetchone()
        if kind == ("view",):  # another process was first
            return
        if kind == ("table",):
            tx.execute("ALTER TABLE embedding_cache RENAME TO embedding_cache_old")
        for statement in _statements(SCHEMA):
            tx.execute(statement)
        if kind == ("table",):
            _copy_old_table(tx)
            tx.execute("DROP TABLE embedding_cache_old")


def _statements(script: str) -> list[str]:
    """The schema's statements one by one (executescript would COMMIT)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def _copy_old_table(conn: sqlite3.Connection) -> None:
    _append(conn, conn.execute(
        "SELECT model, dimensions, text_sha256, embedding, created_at FROM embedding_cache_old"
    ))


def _append(conn: sqlite3.Connection, rows: Iterable[tuple[str, int, str, bytes, str]]) -> None:
    """Append (model, dimensions, text hash, vector bytes, created_at) rows:
    the trigger's rule (fill the newest block up to BLOCK_BYTES, then start
    another), with one write per block instead of one per vector. A new
    block is inserted with its vectors, not empty and then appended to:
    that would write its 32 KB twice."""
    newest = conn.execute("SELECT id, length(vectors) FROM embedding_blocks ORDER BY id DESC LIMIT 1").fetchone()
    block_id, size = newest if newest else (None, BLOCK_BYTES)
    block_is_new = False  # then block_id is None until write() inserts it
    parts: list[bytes] = []
    keys: list[tuple] = []  # (model, dimensions, text hash, start, length, created_at)

    def write() -> None:
        nonlocal block_id
        if block_is_new:
            block_id = conn.execute("INSERT INTO embedding_blocks (vectors) VALUES (?)", (b"".join(parts),)).lastrowid
        elif block_id is not None and parts:
            conn.execute("UPDATE embedding_blocks SET vectors = CAST(vectors || ? AS BLOB) WHERE id = ?",
                         (b"".join(parts), block_id))
        conn.executemany("INSERT INTO embedding_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(model, dims, text_hash, block_id, start, length, created)
                          for model, dims, text_hash, start, length, created in keys])
        parts.clear()
        keys.clear()

    for model, dimensions, text_hash, blob, created_at in rows:
        if size and size + len(blob) > BLOCK_BYTES:
            write()
            block_id, block_is_new, size = None, True, 0
        keys.append((model, dimensions, text_hash, size, len(blob), created_at))
        parts.append(blob)
        size += len(blob)
    write()


def cached(conn: sqlite3.Connection, model: str, dimensions: int, text_hashes: Sequence[str]) -> dict[str, bytes]:
    """text hash -> vector bytes, for the hashes the cache has (each block read once)."""
    places = _places(conn, model, dimensions, text_hashes)
    blocks = {
        block: conn.execute("SELECT vectors FROM embedding_blocks WHERE id = ?", (block,)).fetchone()[0]
        for block in {block for _, block, _, _ in places}
    }
    return {text_hash: blocks[block][start : start + length] for text_hash, block, start, length in places}


def put(conn: sqlite3.Connection, model: str, dimensions: int, vectors: Mapping[str, bytes]) -> None:
    """Cache packed vectors (in the caller's transaction); a key already cached keeps its vector."""
    known = {text_hash for text_hash, *_ in _places(conn, model, dimensions, list(vectors))}
    now = conn.execute(f"SELECT {NOW}").fetchone()[0]
    _append(conn, ((model, dimensions, h, blob, now) for h, blob in vectors.items() if h not in known))


def _places(conn: sqlite3.Connection, model: str, dimensions: int, text_hashes: Sequence[str]) -> list[tuple]:
    """(text hash, block, start, length) of the hashes the cache has."""
    places: list[tuple] = []
    unique = list(dict.fromkeys(text_hashes))
    for first in range(0, len(unique), 500):  # stay under SQLite's variable limit
        part = unique[first : first + 500]
        places += conn.execute(
            f"""SELECT text_sha256, block, start, length FROM embedding_keys
                WHERE model = ? AND dimensions = ? AND text_sha256 IN ({",".join("?" * len(part))})""",
            (model, dimensions, *part),
        ).fetchall()
    return places


def bytes_per_vector(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(vectors, their bytes, the bytes of the pages holding them and their
    keys), from SQLite's dbstat: what the cache costs on disk."""
    count, size = conn.execute("SELECT count(*), coalesce(sum(length), 0) FROM embedding_keys").fetchone()
    pages = conn.execute(
        "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ('embedding_blocks', 'embedding_keys')"
    ).fetchone()[0]
    return count, size, pages


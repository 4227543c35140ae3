"""The local store: one SQLite file holding documents, their chunks and vectors.

Many worker processes write the same file at once, so the connection uses WAL,
a 30 s busy timeout and short transactions; a document's chunk set is replaced
in one ``BEGIN IMMEDIATE`` transaction, which makes a re-run or a duplicate
delivery leave exactly one set.

Schema (users query this file directly)::

    documents
      id                    INTEGER PRIMARY KEY
      document_key          TEXT NOT NULL UNIQUE   -- the job's document_id, or its source
      source                TEXT                   -- local path (or supabase:// URL)
      sha256                TEXT                   -- hash of the file's bytes
      user_id               TEXT
      status                TEXT NOT NULL          -- pending | processing | embedding | ready | error
                                                   -- (embedding: chunks wait for a Batch API batch)
      error                 TEXT                   -- why it ended in error, for the user
      page_count            INTEGER
      chunk_count           INTEGER
      embedding_model       TEXT                   -- e.g. text-embedding-3-small, offline-hash-v1
      embedding_dimensions  INTEGER
      created_at            TEXT NOT NULL          -- UTC, ISO 8601
      updated_at            TEXT NOT NULL          -- UTC, ISO 8601
      processing_seconds    REAL                   -- wall time of the last successful run

    chunks
      id               INTEGER PRIMARY KEY
      document_id      INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE
      chunk_index      INTEGER NOT NULL           -- 0, 1, 2, ... in reading order
      page_start       INTEGER NOT NULL           -- first page (1-based) the chunk covers
      page_end         INTEGER NOT NULL           -- last page it covers
      token_count      INTEGER NOT NULL
      content          TEXT NOT NULL
      embedding        BLOB NOT NULL              -- little-endian float32 values
      embedding_model  TEXT NOT NULL
      heading          TEXT                       -- heading path it falls under ("Lease > Rent"), if known
      UNIQUE (document_id, chunk_index)

    embedding_cache                             -- re-running unchanged text costs no tokens
      model        TEXT NOT NULL                 -- (a view over embedding_keys and
      dimensions   INTEGER NOT NULL              --  embedding_blocks: store/embedding_cache.py)
      text_sha256  TEXT NOT NULL                 -- sha256 of the UTF-8 chunk text
      embedding    BLOB NOT NULL                 -- little-endian float32 values
      created_at   TEXT NOT NULL

Read a vector in Python with ``array.array('f', blob)`` (or
``numpy.frombuffer(blob, dtype='<f4')``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
import sys
from array import array
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from docutrain_cli import sqlite
from docutrain_cli.store import embedding_cache, vector_index
from docutrain_cli.store.vector_index import VectorIndex

STATUSES = ("pending", "processing", "embedding", "ready", "error")

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    document_key TEXT NOT NULL UNIQUE,
    source TEXT,
    sha256 TEXT,
    user_id TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'embedding', 'ready', 'error')),
    error TEXT,
    page_count INTEGER,
    chunk_count INTEGER,
    embedding_model TEXT,
    embedding_dimensions INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    processing_seconds REAL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    page_start INTEGER NOT NULL,
    page_end INTEGER NOT NULL,
    token_count INTEGER NOT NULL,
    content TEXT NOT NULL,
    embedding BLOB NOT NULL,
    embedding_model TEXT NOT NULL,
    heading TEXT,
    UNIQUE (document_id, chunk_index)
);
CREATE INDEX IF NOT EXISTS chunks_embedding_model ON chunks (embedding_model);
"""

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def pack_vector(vector: Sequence[float]) -> bytes:
    """float32, little-endian, whatever the machine."""
    values = vector if isinstance(vector, array) and vector.typecode == "f" else array("f", vector)
    if sys.byteorder == "big":  # pragma: no cover
        values = array("f", values)
        values.byteswap()
    return values.tobytes()


def unpack_vector(blob: bytes) -> array:
    values = array("f", blob)
    if sys.byteorder == "big":  # pragma: no cover
        values.byteswap()
    return values


@dataclasses.dataclass(frozen=True)
class ChunkRow:
    """One chunk ready to be stored."""

    chunk_index: int
    page_start: int
    page_end: int
    token_count: int
    content: str
    embedding: Sequence[float]
    heading: str | None = None


@dataclasses.dataclass(frozen=True)
class Hit:
    source: str | None
    document_key: str
    chunk_index: int
    page_start: int
    page_end: int
    score: float
    content: str
    heading: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Columns added after the first release: a store made by an older version
# gets them when it is opened (its old chunks have NULL there).
ADDED_COLUMNS = {"chunks": {"heading": "TEXT"}}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, columns in ADDED_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name in present:
                continue
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another worker was first
                    raise


def _allow_embedding_status(conn: sqlite3.Connection) -> None:
    """Stores made before the Batch API mode refuse the status 'embedding'
    (a CHECK constraint). SQLite cannot change a constraint in place, so the
    documents table is rebuilt once, in one transaction (chunks keep their
    document ids; foreign keys are off while the table is swapped)."""
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'documents'").fetchone()[0]
    if "'embedding'" in sql:
        return
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        with sqlite.transaction(conn) as tx:
            sql = tx.execute("SELECT sql FROM sqlite_master WHERE name = 'documents'").fetchone()[0]
            if "'embedding'" not in sql:  # another process may have done it meanwhile
                tx.execute(sql.replace("CREATE TABLE documents", "CREATE TABLE documents_new", 1)
                           .replace("'processing', 'ready'", "'processing', 'embedding', 'ready'", 1))
                tx.execute("INSERT INTO documents_new SELECT * FROM documents")
                tx.execute("DROP TABLE documents")
                tx.execute("ALTER TABLE documents_new RENAME TO documents")
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


# A worker's connection leaves checkpoints to the runner (see LocalStore);
# this many WAL pages (64 MB) only bound the WAL should nothing checkpoint.
DEFERRED_CHECKPOINT_PAGES = 16_384


def _connect(path: Path, checkpoints: bool = True) -> sqlite3.Connection:
    # Autocommit: we BEGIN ourselves (sqlite.transaction), so transactions stay short and explicit.
    conn = sqlite.connect(path, synchronous="NORMAL", foreign_keys=True, schema=SCHEMA)
    _add_missing_columns(conn)
    _allow_embedding_status(conn)
    embedding_cache.ensure_layout(conn)
    vector_index.ensure_counter(conn)
    if not checkpoints:
        conn.execute(f"PRAGMA wal_autocheckpoint = {DEFERRED_CHECKPOINT_PAGES}")
    return conn


class LocalStore(sqlite.SharedFile):
    """A SQLite store. The connection opens on first use and is reopened in a
    forked child, so a store object never shares a connection across processes.

    `checkpoints=False`: this connection's commits leave copying the WAL
    into the database to another connection that calls `checkpoint()`
    (workers' stores; the runner checkpoints between their writes). SQLite
    otherwise makes whichever commit crosses 1,000 WAL pages do it: on text
    PDFs every third document's commit, 10-22 ms of copying and syncing a
    worker waited for (2 % of bench row 1)."""

    def __init__(self, path: str | os.PathLike[str], *, checkpoints: bool = True):
        super().__init__(path, lambda path: _connect(path, checkpoints))

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database, as far as readers and
        writers allow, without waiting for them (PASSIVE)."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- documents ----------------------------------------------------------

    def set_status(
        self,
        document_key: str,
        status: str,
        *,
        source: str | None = None,
        sha256: str | None = None,
        user_id: str | None = None,
        error: str | None = None,
        page_count: int | None = None,
        chunk_count: int | None = None,
    ) -> int:
        """Create or update the document row; returns its id. Fields given as
        None keep their stored value, except `error`, which is cleared unless
        the status is 'error'."""
        if status not in STATUSES:
            raise ValueError(f"unknown document status {status!r}; expected one of {STATUSES}")
        # One statement, so one short write transaction: the runner calls this
        # twice per job from its dispatch loop.
        row = self.conn.execute(
            f"""INSERT INTO documents (document_key, source, sha256, user_id, status, error,
                                       page_count, chunk_count, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, {NOW}, {NOW})
                ON CONFLICT (document_key) DO UPDATE SET
                    source = COALESCE(excluded.source, source),
                    sha256 = COALESCE(excluded.sha256, sha256),
                    user_id = COALESCE(excluded.user_id, user_id),
                    status = excluded.status,
                    error = excluded.error,
                    page_count = COALESCE(excluded.page_count, page_count),
                    chunk_count = COALESCE(excluded.chunk_count, chunk_count),
                    updated_at = excluded.updated_at
                RETURNING id""",
            (
                document_key, source, sha256, user_id, status,
                error if status == "error" else None, page_count, chunk_count,
            ),
        ).fetchone()
        return row[0]

    def _upsert_document(
        self,
        document_key: str,
        *,
        status: str | None,
        source: str | None,
        sha256: str | None,
        user_id: str | None,
    ) -> int:
        row = self.conn.execute(
            f"""INSERT INTO documents (document_key, source, sha256, user_id, status, created_at, updated_at)
                VALUES (?, ?, ?, ?, COALESCE(?, 'processing'), {NOW}, {NOW})
                ON CONFLICT (document_key) DO UPDATE SET
                    source = COALESCE(excluded.source, source),
                    sha256 = COALESCE(excluded.sha256, sha256),
                    user_id = COALESCE(excluded.user_id, user_id),
                    status = COALESCE(?, status),
                    updated_at = excluded.updated_at
                RETURNING id""",
            (document_key, source, sha256, user_id, status, status),
        ).fetchone()
        return row[0]

    def get_document(self, document_key: str) -> dict | None:
        cur = self.conn.execute("SELECT * FROM documents WHERE document_key = ?", (document_key,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row))

    # -- chunks -------------------------------------------------------------

    def replace_chunks(
        self,
        document_key: str,
        chunks: Iterable[ChunkRow],
        *,
        embedding_model: str,
        embedding_dimensions: int,
        page_count: int,
        source: str | None = None,
        sha256: str | None = None,
        user_id: str | None = None,
        processing_seconds: float | None = None,
    ) -> int:
        """Replace the document's chunk set in one transaction; returns the
        document id. The document's status is left to the caller (the runner
        marks it ready once the job is acknowledged)."""
        with sqlite.transaction(self.conn) as conn:
            doc_id = self._upsert_document(
                document_key, status=None, source=source, sha256=sha256, user_id=user_id
            )
            conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
            count = 0

            def values() -> Iterator[tuple]:
                nonlocal count
                for chunk in chunks:
                    if len(chunk.embedding) != embedding_dimensions:
                        raise ValueError(
                            f"chunk {chunk.chunk_index} has {len(chunk.embedding)} dimensions, "
                            f"expected {embedding_dimensions}"
                        )
                    count += 1
                    yield (doc_id, chunk.chunk_index, chunk.page_start, chunk.page_end, chunk.token_count,
                           chunk.content, pack_vector(chunk.embedding), embedding_model, chunk.heading)

            # One statement for all rows (a raise in values() rolls the whole set back).
            conn.executemany(
                """INSERT INTO chunks (document_id, chunk_index, page_start, page_end,
                                       token_count, content, embedding, embedding_model, heading)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                values(),
            )
            conn.execute(
                f"""UPDATE documents SET page_count = ?, chunk_count = ?, embedding_model = ?,
                           embedding_dimensions = ?, processing_seconds = ?, updated_at = {NOW}
                    WHERE id = ?""",
                (page_count, count, embedding_model, embedding_dimensions, processing_seconds, doc_id),
            )
        return doc_id

    def chunk_count(self, document_key: str | None = None) -> int:
        if document_key is None:
            return self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return self.conn.execute(
            """SELECT count(*) FROM chunks JOIN documents d ON d.id = chunks.document_id
               WHERE d.document_key = ?""",
            (document_key,),
        ).fetchone()[0]

    def embedding_models(self) -> list[tuple[str, int, int]]:
        """(model, dimensions, chunk count) for every kind of vector in the store."""
        rows = self.conn.execute(
            """SELECT c.embedding_model, d.embedding_dimensions, count(*)
               FROM chunks c JOIN documents d ON d.id = c.document_id
               GROUP BY 1, 2 ORDER BY 3 DESC"""
        ).fetchall()
        return [(m, dims, n) for m, dims, n in rows]

    # -- embedding cache ----------------------------------------------------

    def cached_embeddings(
        self, model: str, dimensions: int, text_hashes: Sequence[str]
    ) -> dict[str, array]:
        found = embedding_cache.cached(self.conn, model, dimensions, text_hashes)
        return {text_hash: unpack_vector(blob) for text_hash, blob in found.items()}

    def cached_hashes(self, model: str, dimensions: int, text_hashes: Sequence[str]) -> set[str]:
        """Which of these texts the cache holds."""
        return set(embedding_cache.cached(self.conn, model, dimensions, text_hashes))

    def put_cached_embeddings(
        self, model: str, dimensions: int, vectors: Mapping[str, Sequence[float]]
    ) -> None:
        if not vectors:
            return
        with sqlite.transaction(self.conn) as conn:
            embedding_cache.put(conn, model, dimensions, {h: pack_vector(v) for h, v in vectors.items()})

    # -- search -------------------------------------------------------------

    def search(
        self,
        query_embedding: Sequence[float],
        top: int = 5,
        *,
        embedding_model: str | None = None,
    ) -> list[Hit]:
        """Chunks ranked by cosine similarity to the query (numpy over a copy
        of the vectors beside the store: store/vector_index.py). Only vectors
        of the query's length, and of `embedding_model` when given, are compared."""
        query = [float(x) for x in query_embedding]
        if top < 1 or math.sqrt(sum(x * x for x in query)) == 0:
            return []
        best = VectorIndex.open(self.conn, self.path, embedding_model, len(query)).best(query, top)
        if not best:
            return []
        rows = {
            row[0]: row[1:]
            for row in self.conn.execute(
                f"""SELECT c.id, d.source, d.document_key, c.chunk_index, c.page_start, c.page_end,
                           c.content, c.heading
                    FROM chunks c JOIN documents d ON d.id = c.document_id
                    WHERE c.id IN ({",".join("?" * len(best))})""",
                [chunk_id for _, chunk_id in best],
            )
        }
        return [
            Hit(source=row[0], document_key=row[1], chunk_index=row[2], page_start=row[3], page_end=row[4],
                score=round(score, 6), content=row[5], heading=row[6])
            for score, chunk_id in best
            if (row := rows.get(chunk_id)) is not None  # gone since the index was read
        ]

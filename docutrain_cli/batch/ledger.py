"""The batch ledger: what waits for batch embeddings, and every batch's state.

It lives in the local store's SQLite file, beside `embedding_cache`, so the
results of a batch go into the cache and the batch is marked applied in one
transaction: a crash leaves either both or neither.

Each batch moves through a small state machine, one committed step at a time,
so a crash or kill -9 between any two steps is recoverable without paying
twice::

    planned    its requests are committed here (the file is rebuilt from them)
    uploading  about to call files.create: after a crash, look for our file
               (by its file name, which holds our tag) before uploading again
    uploaded   file_id known
    creating   about to call batches.create: after a crash, look for our
               batch (metadata carries our tag) before creating again
    submitted  batch_id known; polled until OpenAI says it is over
    applied    results in the cache, each input's outcome recorded

Tables (in the store file)::

    batch_documents   a document whose chunks wait for vectors (one version per key)
    batch_chunks      its chunks, without vectors
    batches           one row per request file / batch
    batch_inputs      which text went into which request line, and how it ended
"""

from __future__ import annotations

import dataclasses
import secrets
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

from docutrain_cli import sqlite
from docutrain_cli.store.local import NOW, LocalStore, pack_vector

# How many batches a text may fail in (its line in the error file) before the
# batch step embeds it with a normal request instead: failed once, it is
# resubmitted once; failed twice, a batch is no place for it.
MAX_LINE_FAILURES = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_documents (
    document_key TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    remote_id TEXT,
    user_id TEXT,
    source TEXT,
    sha256 TEXT,
    model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    page_count INTEGER NOT NULL,
    problem TEXT,
    created_at TEXT NOT NULL,
    job_id INTEGER
);
CREATE TABLE IF NOT EXISTS batch_chunks (
    document_key TEXT NOT NULL REFERENCES batch_documents(document_key) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    page_start INTEGER NOT NULL,
    page_end INTEGER NOT NULL,
    token_count INTEGER NOT NULL,
    content TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    heading TEXT,
    PRIMARY KEY (document_key, chunk_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_chunks_text ON batch_chunks (text_sha256);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    state TEXT NOT NULL,
    requests INTEGER NOT NULL,
    inputs INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    remote_status TEXT,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_inputs (
    batch INTEGER NOT NULL REFERENCES batches(id),
    line INTEGER NOT NULL,
    position INTEGER NOT NULL,
    text_sha256 TEXT NOT NULL,
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (batch, line, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_inputs_text ON batch_inputs (text_sha256, outcome);
"""

IN_FLIGHT = ("planned", "uploading", "uploaded", "creating", "submitted")


@dataclasses.dataclass(frozen=True)
class PendingChunk:
    chunk_index: int
    page_start: int
    page_end: int
    token_count: int
    content: str
    text_sha256: str
    heading: str | None = None


@dataclasses.dataclass(frozen=True)
class WaitingText:
    """A distinct text that needs a vector and is in no batch in flight."""

    text_sha256: str
    content: str
    tokens: int


@dataclasses.dataclass
class BatchRow:
    id: int
    tag: str
    model: str
    dimensions: int
    state: str
    requests: int
    inputs: int
    tokens: int
    bytes: int
    file_id: str | None
    batch_id: str | None
    remote_status: str | None
    completed: int
    failed: int
    error: str | None
    created_at: str
    updated_at: str

    def custom_id(self, line: int) -> str:
        return f"{self.tag}-{line}"


class Ledger:
    """The ledger's tables on a LocalStore's connection."""

    def __init__(self, store: LocalStore):
        self.store = store
        self._ready_conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        conn = self.store.conn
        if conn is not self._ready_conn:  # a new (or reopened) connection: make sure the tables exist
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(batch_documents)")}
            if "job_id" not in columns:  # a ledger from before issue 25: its documents' job ids are unknown
                conn.execute("ALTER TABLE batch_documents ADD COLUMN job_id INTEGER")
            self._ready_conn = conn
        return conn

    # -- the worker's side ----------------------------------------------------

    def park(
        self,
        document_key: str,
        chunks: Sequence[PendingChunk],
        *,
        model: str,
        dimensions: int,
        page_count: int,
        remote_id: str | None,
        user_id: str | None,
        source: str | None,
        sha256: str | None,
        job_id: int | None = None,
    ) -> None:
        """Keep a document's chunks until their vectors come back. A second
        delivery replaces the first (a fresh version), in one transaction.
        `job_id`: the queue's job, made dead should the document fail."""
        with sqlite.transaction(self.conn) as conn:
            conn.execute("DELETE FROM batch_documents WHERE document_key = ?", (document_key,))
            conn.execute(
                f"""INSERT INTO batch_documents (document_key, version, remote_id, user_id, source, sha256,
                                                 model, dimensions, page_count, created_at, job_id)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {NOW}, ?)""",
                (document_key, secrets.token_hex(8), remote_id, user_id, source, sha256,
                 model, dimensions, page_count, job_id),
            )
            conn.executemany(
                """INSERT INTO batch_chunks (document_key, chunk_index, page_start, page_end,
                                             token_count, content, text_sha256, heading)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                [(document_key, c.chunk_index, c.page_start, c.page_end, c.token_count, c.content, c.text_sha256,
                  c.heading) for c in chunks],
            )

    # -- planning -------------------------------------------------------------

    def tag_prefix(self) -> str:
        """This store's own name at OpenAI, made once: an account shared by
        several stores never mixes their files or batches up."""
        with sqlite.transaction(self.conn) as conn:
            row = conn.execute("SELECT value FROM batch_meta WHERE key = 'tag'").fetchone()
            if row:
                return row[0]
            tag = "docutrain-" + secrets.token_hex(6)
            conn.execute("INSERT INTO batch_meta (key, value) VALUES ('tag', ?)", (tag,))
            return tag

    def waiting_texts(self, model: str, dimensions: int) -> list[WaitingText]:
        """Texts of parked documents with no vector in the cache, in no batch
        in flight, and not failed too often; oldest documents first."""
        marks = ",".join("?" * len(IN_FLIGHT))
        rows = self.conn.execute(
            f"""SELECT c.text_sha256, min(c.content), max(c.token_count), min(d.created_at) AS since
                FROM batch_chunks c JOIN batch_documents d ON d.document_key = c.document_key
                WHERE d.model = ? AND d.dimensions = ?
                  AND NOT EXISTS (SELECT 1 FROM embedding_cache e
                                  WHERE e.model = d.model AND e.dimensions = d.dimensions
                                    AND e.text_sha256 = c.text_sha256)
                  AND NOT EXISTS (SELECT 1 FROM batch_inputs i JOIN batches b ON b.id = i.batch
                                  WHERE i.text_sha256 = c.text_sha256 AND b.model = d.model
                                    AND b.dimensions = d.dimensions AND b.state IN ({marks}))
                  AND (SELECT count(*) FROM batch_inputs i
                       WHERE i.text_sha256 = c.text_sha256 AND i.outcome = 'failed') < ?
                GROUP BY c.text_sha256 ORDER BY since, c.text_sha256""",
            (model, dimensions, *IN_FLIGHT, MAX_LINE_FAILURES),
        ).fetchall()
        return [WaitingText(h, content, tokens) for h, content, tokens, _ in rows]

    def waiting_models(self) -> list[tuple[str, int]]:
        """(model, dimensions) pairs with parked documents: one file per model."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT DISTINCT model, dimensions FROM batch_documents ORDER BY 1, 2")]

    def plan_batch(
        self, model: str, dimensions: int, lines: Sequence[Sequence[str]], *, tokens: int, size: int
    ) -> BatchRow:
        """Commit a new batch with its request lines (text hashes per line)."""
        prefix = self.tag_prefix()
        with sqlite.transaction(self.conn) as conn:
            batch_id = conn.execute(
                f"""INSERT INTO batches (tag, model, dimensions, state, requests, inputs, tokens, bytes,
                                         created_at, updated_at)
                    VALUES ('', ?, ?, 'planned', ?, ?, ?, ?, {NOW}, {NOW}) RETURNING id""",
                (model, dimensions, len(lines), sum(len(l) for l in lines), tokens, size),
            ).fetchone()[0]
            conn.execute("UPDATE batches SET tag = ? WHERE id = ?", (f"{prefix}-{batch_id}", batch_id))
            conn.executemany(
                "INSERT INTO batch_inputs (batch, line, position, text_sha256) VALUES (?, ?, ?, ?)",
                [(batch_id, n, p, h) for n, hashes in enumerate(lines) for p, h in enumerate(hashes)],
            )
        return self.batch(batch_id)

    def request_lines(self, batch: BatchRow) -> list[list[str]]:
        """The batch's request lines as texts, in file order (to write its file)."""
        lines: list[list[str]] = []
        for line, content in self.conn.execute(
            """SELECT i.line, (SELECT content FROM batch_chunks c WHERE c.text_sha256 = i.text_sha256 LIMIT 1)
               FROM batch_inputs i WHERE i.batch = ? ORDER BY i.line, i.position""",
            (batch.id,),
        ):
            if content is None:
                raise LookupError(f"batch {batch.tag}: a text's chunk is gone; the batch is planned again")
            while len(lines) <= line:
                lines.append([])
            lines[line].append(content)
        return lines

    # -- the state machine ----------------------------------------------------

    def batch(self, batch_id: int) -> BatchRow:
        cur = self.conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,))
        return BatchRow(**dict(zip([c[0] for c in cur.description], cur.fetchone())))

    def batches(self, states: Iterable[str] | None = None) -> list[BatchRow]:
        sql, params = "SELECT * FROM batches", ()
        if states is not None:
            states = tuple(states)
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params = states
        cur = self.conn.execute(sql + " ORDER BY id", params)
        names = [c[0] for c in cur.description]
        return [BatchRow(**dict(zip(names, row))) for row in cur.fetchall()]

    def move(self, batch: BatchRow, state: str, **fields) -> BatchRow:
        """Commit the batch's next state (and what the call returned)."""
        sets = ", ".join(f"{name} = ?" for name in fields)
        self.conn.execute(
            f"UPDATE batches SET state = ?, {sets + ', ' if sets else ''}updated_at = {NOW} WHERE id = ?",
            (state, *fields.values(), batch.id),
        )
        return self.batch(batch.id)

    def recent_failure(self, seconds: float) -> str | None:
        """Why a batch failed as a whole within the last `seconds`, if one did."""
        row = self.conn.execute(
            """SELECT coalesce(error, 'the batch failed') FROM batches
                WHERE remote_status = 'failed' AND updated_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)
                ORDER BY id DESC LIMIT 1""",
            (f"-{seconds} seconds",),
        ).fetchone()
        return row[0] if row else None

    def note(self, batch: BatchRow, *, remote_status: str, completed: int, failed: int, error: str | None) -> None:
        """What the last poll said, for `status`."""
        self.conn.execute(
            f"""UPDATE batches SET remote_status = ?, completed = ?, failed = ?, error = ?, updated_at = {NOW}
                WHERE id = ?""",
            (remote_status, completed, failed, error, batch.id),
        )

    def apply(
        self,
        batch: BatchRow,
        vectors: dict[tuple[int, int], Sequence[float]],
        failures: dict[int, str],
        *,
        remote_status: str,
        completed: int,
        failed: int,
        error: str | None,
    ) -> int:
        """One transaction: vectors into the cache, every input's outcome
        (done, failed: its line was in the error file, or returned: the batch
        ended before it, so it goes into the next one at no charge), and the
        batch applied. Returns the number of vectors stored."""
        inputs = self.conn.execute(
            "SELECT line, position, text_sha256 FROM batch_inputs WHERE batch = ?", (batch.id,)
        ).fetchall()
        cache_rows, outcomes = [], []
        for line, position, text_hash in inputs:
            vector = vectors.get((line, position))
            if vector is not None:
                cache_rows.append((batch.model, batch.dimensions, text_hash, pack_vector(vector)))
                outcomes.append(("done", None, line, position))
            elif line in failures:
                outcomes.append(("failed", failures[line], line, position))
            else:
                outcomes.append(("returned", None, line, position))
        with sqlite.transaction(self.conn) as conn:
            conn.executemany(
                f"""INSERT OR REPLACE INTO embedding_cache (model, dimensions, text_sha256, embedding, created_at)
                    VALUES (?, ?, ?, ?, {NOW})""",
                cache_rows,
            )
            conn.executemany(
                f"UPDATE batch_inputs SET outcome = ?, error = ? WHERE batch = {batch.id} AND line = ? AND position = ?",
                outcomes,
            )
            conn.execute(
                f"""UPDATE batches SET state = 'applied', remote_status = ?, completed = ?, failed = ?, error = ?,
                           updated_at = {NOW} WHERE id = ?""",
                (remote_status, completed, failed, error, batch.id),
            )
        return len(cache_rows)

    # -- finishing documents --------------------------------------------------

    def parked(self) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM batch_documents ORDER BY created_at, document_key")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def chunks(self, document_key: str) -> list[PendingChunk]:
        return [PendingChunk(*row) for row in self.conn.execute(
            """SELECT chunk_index, page_start, page_end, token_count, content, text_sha256, heading
               FROM batch_chunks WHERE document_key = ? ORDER BY chunk_index""",
            (document_key,),
        )]

    def exhausted(self, text_hashes: Sequence[str]) -> dict[str, tuple[str, int, str]]:
        """Texts among `text_hashes` that failed in MAX_LINE_FAILURES batches:
        hash -> (content, tokens, the last batch error)."""
        found: dict[str, tuple[str, int, str]] = {}
        for start in range(0, len(text_hashes), 500):
            part = list(text_hashes[start : start + 500])
            for text_hash, error, content, tokens in self.conn.execute(
                f"""SELECT i.text_sha256, max(i.error),
                           (SELECT content FROM batch_chunks c WHERE c.text_sha256 = i.text_sha256 LIMIT 1),
                           (SELECT max(token_count) FROM batch_chunks c WHERE c.text_sha256 = i.text_sha256)
                    FROM batch_inputs i
                    WHERE i.outcome = 'failed' AND i.text_sha256 IN ({','.join('?' * len(part))})
                    GROUP BY i.text_sha256 HAVING count(*) >= ?""",
                (*part, MAX_LINE_FAILURES),
            ):
                if content is not None:
                    found[text_hash] = (content, tokens, error)
        return found

    def release(self, document_key: str, version: str) -> None:
        """Forget a finished document, unless a newer version was parked meanwhile."""
        self.conn.execute(
            "DELETE FROM batch_documents WHERE document_key = ? AND version = ?", (document_key, version)
        )

    def note_problem(self, document_key: str, problem: str) -> None:
        self.conn.execute("UPDATE batch_documents SET problem = ? WHERE document_key = ?", (problem, document_key))

    # -- what `status` and `jobs` show ----------------------------------------

    def waits(self) -> dict[str, list[str]]:
        """document_key -> the batches (OpenAI ids, or our tags before
        creation) its missing texts are in; [] for texts not yet sent."""
        marks = ",".join("?" * len(IN_FLIGHT))
        waits: dict[str, list[str]] = {d["document_key"]: [] for d in self.parked()}
        for key, name in self.conn.execute(
            f"""SELECT DISTINCT c.document_key, coalesce(b.batch_id, b.tag)
                FROM batch_chunks c JOIN batch_inputs i ON i.text_sha256 = c.text_sha256
                JOIN batches b ON b.id = i.batch WHERE b.state IN ({marks}) ORDER BY b.id""",
            IN_FLIGHT,
        ):
            waits.setdefault(key, []).append(name)
        return waits


def batch_status(store_path, *, waits: bool = False) -> dict | None:
    """`status`: batches in flight and documents waiting; with `waits`
    (`jobs`), which batches each document waits on. None if never used."""
    if not Path(store_path).exists():
        return None
    store = LocalStore(store_path)
    try:
        names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "batches" not in names:
            return None
        ledger = Ledger(store)
        in_flight = [dataclasses.asdict(b) for b in ledger.batches(IN_FLIGHT)]
        waiting = ledger.conn.execute("SELECT count(*) FROM batch_documents").fetchone()[0]
        problem = ledger.conn.execute(
            "SELECT problem FROM batch_documents WHERE problem IS NOT NULL LIMIT 1").fetchone()
        return {"in_flight": in_flight, "documents_waiting": waiting, "waits": ledger.waits() if waits else None,
                "finishing_problem": problem[0] if problem else None}
    finally:
        store.close()

"""The SQLite store: statuses, idempotent chunk replacement, cache, search,
and many processes writing one file."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3

import pytest

from docutrain_cli.store import embedding_cache
from docutrain_cli.store.local import ChunkRow, LocalStore, pack_vector, unpack_vector


def rows(n: int, dims: int = 4, text: str = "chunk") -> list[ChunkRow]:
    return [
        ChunkRow(i, i + 1, i + 2, 10 + i, f"{text} {i}", [float(i), 0.5, -0.25, 1e-3][:dims])
        for i in range(n)
    ]


def replace(store: LocalStore, key: str, chunks: list[ChunkRow], dims: int = 4) -> int:
    return store.replace_chunks(
        key, chunks, embedding_model="m", embedding_dimensions=dims, page_count=7, source=f"/in/{key}"
    )


def test_schema_and_wal(tmp_path):
    with LocalStore(tmp_path / "sub" / "store.db") as store:
        store.set_status("doc", "pending")
    conn = sqlite3.connect(tmp_path / "sub" / "store.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"documents", "chunks", "embedding_blocks", "embedding_keys"} <= tables
    views = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    assert "embedding_cache" in views
    columns = {r[1] for r in conn.execute("PRAGMA table_info(documents)")}
    assert columns == {
        "id", "source", "sha256", "user_id", "document_key", "status", "error", "page_count",
        "chunk_count", "embedding_model", "embedding_dimensions", "created_at", "updated_at",
        "processing_seconds",
    }


def test_set_status_upserts_and_keeps_known_fields(tmp_path):
    with LocalStore(tmp_path / "s.db") as store:
        doc_id = store.set_status("k", "pending", source="/a.pdf", sha256="abc", user_id="u1")
        assert store.set_status("k", "processing") == doc_id
        store.set_status("k", "error", error="encrypted: needs a password")
        doc = store.get_document("k")
        assert (doc["status"], doc["error"], doc["source"], doc["sha256"], doc["user_id"]) == (
            "error", "encrypted: needs a password", "/a.pdf", "abc", "u1"
        )
        store.set_status("k", "ready", page_count=3, chunk_count=5)
        doc = store.get_document("k")
        assert (doc["status"], doc["error"], doc["page_count"], doc["chunk_count"]) == ("ready", None, 3, 5)
        with pytest.raises(ValueError):
            store.set_status("k", "done")


def test_replace_is_idempotent_and_leaves_no_stale_tail(tmp_path):
    with LocalStore(tmp_path / "s.db") as store:
        doc_id = replace(store, "k", rows(5))
        assert replace(store, "k", rows(5)) == doc_id  # duplicate delivery
        assert store.chunk_count("k") == 5
        replace(store, "k", rows(2, text="shorter"))  # the document got shorter
        got = store.conn.execute(
            "SELECT chunk_index, content FROM chunks WHERE document_id = ? ORDER BY 1", (doc_id,)
        ).fetchall()
        assert got == [(0, "shorter 0"), (1, "shorter 1")]
        doc = store.get_document("k")
        assert (doc["chunk_count"], doc["page_count"], doc["embedding_model"], doc["embedding_dimensions"]) == (
            2, 7, "m", 4
        )


def test_a_failed_replace_keeps_the_previous_set(tmp_path):
    with LocalStore(tmp_path / "s.db") as store:
        replace(store, "k", rows(3))
        bad = rows(4)[:3] + [ChunkRow(3, 1, 1, 1, "wrong size", [1.0, 2.0])]
        with pytest.raises(ValueError, match="dimensions"):
            replace(store, "k", bad)
        assert store.chunk_count("k") == 3
        assert store.conn.execute("SELECT count(*) FROM chunks WHERE content = 'wrong size'").fetchone()[0] == 0


def test_vectors_round_trip_as_float32(tmp_path):
    vector = [0.1, -2.5, 3.0e-8, 123456.78]
    with LocalStore(tmp_path / "s.db") as store:
        store.replace_chunks(
            "k", [ChunkRow(0, 1, 1, 3, "x", vector)], embedding_model="m", embedding_dimensions=4, page_count=1
        )
        blob = store.conn.execute("SELECT embedding FROM chunks").fetchone()[0]
    assert len(blob) == 16
    assert list(unpack_vector(blob)) == pytest.approx(vector, rel=1e-6)


def test_embedding_cache(tmp_path):
    with LocalStore(tmp_path / "s.db") as store:
        store.put_cached_embeddings("m", 0, {"h1": [1.0, 2.0], "h2": [3.0, 4.0]})
        found = store.cached_embeddings("m", 0, ["h1", "h3", "h1"])
        assert {k: list(v) for k, v in found.items()} == {"h1": [1.0, 2.0]}
        assert store.cached_embeddings("m", 256, ["h1"]) == {}  # other dimensions: other vectors
        assert store.cached_embeddings("other", 0, ["h1"]) == {}


OLD_CACHE_TABLE = """CREATE TABLE embedding_cache (
    model TEXT NOT NULL, dimensions INTEGER NOT NULL, text_sha256 TEXT NOT NULL,
    embedding BLOB NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (model, dimensions, text_sha256)
) WITHOUT ROWID"""


def test_a_store_with_the_old_cache_table_keeps_every_vector(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)  # the cache as stores before issue 24 hold it
    conn.execute(OLD_CACHE_TABLE)
    rng = random.Random(7)
    old = {}
    for i in range(300):
        model, dims, size = [("offline-hash-v1", 384, 384), ("text-embedding-3-small", 0, 1536), ("m", 3, 3)][i % 3]
        vector = [rng.uniform(-1, 1) for _ in range(size)]
        old[(model, dims, f"h{i}")] = vector
        conn.execute("INSERT INTO embedding_cache VALUES (?, ?, ?, ?, ?)",
                     (model, dims, f"h{i}", pack_vector(vector), f"2026-11-{1 + i % 28:02d}T00:00:00.000Z"))
    conn.commit()
    conn.close()
    with LocalStore(path) as store:
        for (model, dims, text_hash), vector in old.items():
            found = store.cached_embeddings(model, dims, [text_hash])
            assert list(found[text_hash]) == pytest.approx(vector, abs=1e-6)  # float32, as stored
        kinds = dict(store.conn.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'embedding%'").fetchall())
        assert kinds["embedding_cache"] == "view" and "embedding_cache_old" not in kinds
        created = store.conn.execute(
            "SELECT created_at FROM embedding_cache WHERE text_sha256 = 'h4'").fetchone()[0]
        assert created == "2026-11-05T00:00:00.000Z"
        # And it goes on working: new vectors next to the converted ones.
        store.put_cached_embeddings("m", 3, {"new": [1.0, 2.0, 3.0]})
        assert list(store.cached_embeddings("m", 3, ["new", "h2"])["new"]) == [1.0, 2.0, 3.0]
        assert len(store.cached_embeddings("m", 3, ["new", "h2"])) == 2
    with LocalStore(path) as store:  # opening it again changes nothing
        assert store.conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0] == 301


def test_the_cache_takes_at_most_1_2x_the_bytes_of_its_vectors(tmp_path):
    rng = random.Random(3)
    with LocalStore(tmp_path / "s.db") as store:
        for size, dims in ((384, 384), (256, 256), (1536, 0)):
            for batch in range(40):  # one-chunk documents and whole books alike
                count = 1 if batch % 2 else 37
                vectors = {f"{size}-{batch}-{i}": [rng.random() for _ in range(size)] for i in range(count)}
                store.put_cached_embeddings("model", dims, vectors)
        count, vector_bytes, page_bytes = embedding_cache.bytes_per_vector(store.conn)
    assert count == 3 * 20 * 38
    assert page_bytes <= 1.2 * vector_bytes, (page_bytes / vector_bytes, page_bytes / count)


def test_sql_inserts_into_the_cache_view_as_into_the_old_table(tmp_path):
    # The Batch API ledger (and a user) write the cache with plain SQL.
    with LocalStore(tmp_path / "s.db") as store:
        rows = [("m", 0, f"h{i}", pack_vector([float(i)] * 500), "2026-12-01T00:00:00.000Z") for i in range(100)]
        store.conn.executemany("INSERT OR REPLACE INTO embedding_cache VALUES (?, ?, ?, ?, ?)", rows)
        store.conn.execute("INSERT INTO embedding_cache VALUES ('m', 0, 'h5', ?, 'later')", (pack_vector([9.0] * 500),))
        found = store.cached_embeddings("m", 0, [f"h{i}" for i in range(100)])
        assert [v[0] for v in (found[f"h{i}"] for i in range(100))] == [float(i) for i in range(100)]
        assert store.conn.execute("SELECT count(*) FROM embedding_keys").fetchone()[0] == 100
        # Blocks of about BLOCK_BYTES, each vector whole in one of them.
        blocks = [n for (n,) in store.conn.execute("SELECT length(vectors) FROM embedding_blocks ORDER BY id")]
        assert sum(blocks) == 100 * 2000 and len(blocks) == -(-100 * 2000 // (embedding_cache.BLOCK_BYTES // 2000 * 2000))
        assert all(n <= embedding_cache.BLOCK_BYTES and n % 2000 == 0 for n in blocks)


def test_search_ranks_by_cosine(tmp_path):
    with LocalStore(tmp_path / "s.db") as store:
        chunks = [
            ChunkRow(0, 1, 1, 1, "east", [1.0, 0.0, 0.0]),
            ChunkRow(1, 2, 2, 1, "north-east", [0.7, 0.7, 0.0]),
            ChunkRow(2, 3, 4, 1, "up", [0.0, 0.0, 5.0]),
        ]
        store.replace_chunks("k", chunks, embedding_model="m", embedding_dimensions=3, page_count=4, source="/d.pdf")
        hits = store.search([2.0, 0.1, 0.0], top=2)
        assert [h.content for h in hits] == ["east", "north-east"]
        assert hits[0].score == pytest.approx(0.99875, abs=1e-4)
        assert (hits[0].source, hits[0].document_key, hits[0].page_start) == ("/d.pdf", "k", 1)
        assert store.search([1.0, 0.0, 0.0], top=5, embedding_model="other") == []
        assert store.search([1.0, 0.0], top=5) == []  # other length: not comparable


def _writer(path: str, worker: int, rounds: int) -> None:
    store = LocalStore(path)
    for r in range(rounds):
        # Everyone fights over one shared document and writes one of their own.
        replace(store, "shared", rows(20 + (worker + r) % 5, text=f"w{worker}r{r}"))
        replace(store, f"own-{worker}", rows(10))
        store.set_status(f"own-{worker}", "ready")
        store.put_cached_embeddings("m", 0, {f"{worker}-{r}": [1.0]})
    store.close()


def test_many_processes_write_one_file(tmp_path):
    path = str(tmp_path / "s.db")
    ctx = multiprocessing.get_context("forkserver")
    procs = [ctx.Process(target=_writer, args=(path, w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with LocalStore(path) as store:
        shared = store.get_document("shared")
        assert store.chunk_count("shared") == shared["chunk_count"]
        # exactly one writer's set survived, whole
        contents = {r[0].split()[0] for r in store.conn.execute(
            "SELECT content FROM chunks WHERE document_id = ?", (shared["id"],))}
        assert len(contents) == 1
        for w in range(4):
            assert store.chunk_count(f"own-{w}") == 10
        assert store.conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0] == 60


def test_a_store_used_before_fork_reconnects_in_the_child(tmp_path):
    store = LocalStore(tmp_path / "s.db")
    store.set_status("parent", "pending")
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=lambda: store.set_status("child", "ready"))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert store.get_document("child")["status"] == "ready"
    store.close()


def _open_and_write(kind: str, path: str, barrier) -> None:
    import time

    from docutrain_cli.status.outbox import Outbox
    from docutrain_cli.queues.local import LocalQueue

    barrier.wait()  # everyone opens the fresh file at the same moment
    if kind == "store":
        LocalStore(path).set_status("k", "ready")
    elif kind == "outbox":
        Outbox(path).record("doc", "ready")
    else:
        with LocalQueue(path) as queue:
            queue.stats(time.time())


@pytest.mark.parametrize("kind", ["store", "outbox", "queue"])
def test_processes_opening_a_fresh_file_together_all_succeed(tmp_path, kind):
    # A first run's workers open a new store at once. Switching a file to WAL
    # skips SQLite's busy handler; before use_wal retried it, about one open
    # in twenty failed here with "database is locked".
    ctx = multiprocessing.get_context("fork")
    failures = 0
    for round_ in range(15):
        barrier = ctx.Barrier(6)
        procs = [
            ctx.Process(target=_open_and_write, args=(kind, str(tmp_path / f"{round_}.db"), barrier))
            for _ in range(6)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failures += sum(p.exitcode != 0 for p in procs)
    assert failures == 0


def test_chunks_keep_their_heading_and_an_older_store_gains_the_column(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)  # the chunks table as the first release made it
    conn.executescript(
        """CREATE TABLE chunks (id INTEGER PRIMARY KEY, document_id INTEGER NOT NULL,
           chunk_index INTEGER NOT NULL, page_start INTEGER NOT NULL, page_end INTEGER NOT NULL,
           token_count INTEGER NOT NULL, content TEXT NOT NULL, embedding BLOB NOT NULL,
           embedding_model TEXT NOT NULL, UNIQUE (document_id, chunk_index));"""
    )
    conn.close()
    with LocalStore(path) as store:
        replace(store, "lease", [
            ChunkRow(0, 1, 1, 3, "rent is due monthly", [1.0, 0.0, 0.0, 0.0], "Lease > Rent"),
            ChunkRow(1, 2, 2, 3, "no heading here", [0.0, 1.0, 0.0, 0.0]),
        ])
        hits = store.search([1.0, 0.1, 0.0, 0.0], top=2, embedding_model="m")
    assert [(h.content, h.heading) for h in hits] == [("rent is due monthly", "Lease > Rent"), ("no heading here", None)]
    assert hits[0].to_dict()["heading"] == "Lease > Rent"



def test_a_workers_store_leaves_checkpoints_to_the_runner(tmp_path):
    # A commit past 1,000 WAL pages checkpoints by default: the worker that
    # made it would wait for the copy and the syncs. Workers' stores defer;
    # the runner's recorder calls checkpoint() every tick. Where the rows
    # are tells: in the WAL only, or copied into the database file.
    from docutrain_cli.config import Settings
    from docutrain_cli.status.recorder import StatusRecorder

    path = tmp_path / "store.db"
    big = [ChunkRow(i, 1, 1, 10, "x" * 8000, [0.0] * 4) for i in range(600)]  # ~5 MB, ~1,200 WAL pages
    worker = LocalStore(path, checkpoints=False)
    assert worker.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 1000
    replace(worker, "a", big)
    assert path.stat().st_size < 1_000_000  # still in the WAL: the commit did not checkpoint

    recorder = StatusRecorder(Settings(store=str(path), queue=str(tmp_path / "queue.db")))
    recorder.checkpoint()
    assert path.stat().st_size > 4_000_000
    recorder.close()

    default = LocalStore(tmp_path / "other.db")
    replace(default, "a", big)
    assert (tmp_path / "other.db").stat().st_size > 4_000_000  # SQLite's own rule: that commit checkpointed
    assert worker.chunk_count("a") == default.chunk_count("a") == 600
    worker.close()
    default.close()

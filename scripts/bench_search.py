"""Measurement 13 of scripts/bench.py: local search and the embedding cache (issue 24).

A store of N one-chunk documents (offline-hash-v1, 384 dimensions, random
unit vectors, short texts) is written with bulk SQL, then:

- 13a/13b: `LocalStore.search` (what `docutrain search` calls after embedding
  the question), top 5, at 100,000 and 1,000,000 chunks (quick mode: 100,000
  only), median of `reps` queries after the first one (which builds the matrix
  beside the store: its time is in the JSON), against a numpy brute force
  over the same vectors already in memory (`matrix @ q`, argpartition), side
  by side, alternating which goes first.
- sqlite-vec (a vec0 table, cosine distance, k=5) on the same vectors, in the
  JSON only, when `sqlite_vec` and `apsw` are importable (Python's own
  sqlite3 here is built without extension loading).
- 13c: the embedding cache's bytes per vector (SQLite's dbstat) after
  caching the same vectors through `put_cached_embeddings` in batches of 128.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

import numpy as np

DIMS = 384
MODEL = "offline-hash-v1"


def build_store(path: Path, count: int, seed: int = 24) -> np.ndarray:
    """A store of `count` one-chunk documents; returns the vectors."""
    from docutrain_cli.store.local import LocalStore

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIMS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with LocalStore(path) as store:
        conn = store.conn
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        now = "2026-12-03T00:00:00.000Z"
        conn.executemany(
            "INSERT INTO documents (id, document_key, source, status, page_count, chunk_count, embedding_model,"
            " embedding_dimensions, created_at, updated_at) VALUES (?, ?, ?, 'ready', 1, 1, ?, ?, ?, ?)",
            ((i + 1, f"doc-{i}", f"/corpus/doc-{i}.txt", MODEL, DIMS, now, now) for i in range(count)),
        )
        conn.executemany(
            "INSERT INTO chunks (document_id, chunk_index, page_start, page_end, token_count, content, embedding,"
            " embedding_model) VALUES (?, 0, 1, 1, 12, ?, ?, ?)",
            ((i + 1, f"chunk text {i}", vectors[i].astype("<f4").tobytes(), MODEL) for i in range(count)),
        )
        conn.execute("COMMIT")
    return vectors


def numpy_baseline(matrix: np.ndarray, query: np.ndarray, top: int) -> np.ndarray:
    scores = matrix @ query  # the stored vectors are unit length: this ranks by cosine
    best = np.argpartition(scores, len(scores) - top)[-top:]
    return best[np.argsort(-scores[best])]


def sqlite_vec_timings(vectors: np.ndarray, queries: list[np.ndarray], work: Path) -> dict:
    try:
        import apsw
        import sqlite_vec
    except ImportError as exc:
        return {"skipped": f"{exc.name} is not installed"}
    conn = apsw.Connection(str(work / "vec.db"))
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIMS}] distance_metric=cosine)")
    t = time.perf_counter()
    with conn:
        conn.executemany("INSERT INTO v (rowid, embedding) VALUES (?, ?)",
                         ((i + 1, vectors[i].tobytes()) for i in range(len(vectors))))
    insert = time.perf_counter() - t
    times = []
    for query in queries:
        t = time.perf_counter()
        list(conn.execute("SELECT rowid, distance FROM v WHERE embedding MATCH ? AND k = 5", (query.tobytes(),)))
        times.append(time.perf_counter() - t)
    conn.close()
    return {"insert_s": round(insert, 2), "query_s": [round(x, 4) for x in times],
            "median_s": round(statistics.median(times[1:] or times), 4)}


def measure(count: int, work: Path, reps: int) -> dict:
    from docutrain_cli.store.local import LocalStore

    work.mkdir(parents=True, exist_ok=True)
    path = work / f"search-{count}.db"
    t = time.perf_counter()
    vectors = build_store(path, count)
    built = time.perf_counter() - t
    rng = np.random.default_rng(7)
    queries = [rng.standard_normal(DIMS).astype(np.float32) for _ in range(reps + 1)]
    ours, baseline = [], []
    with LocalStore(path) as store:
        t = time.perf_counter()
        store.search(queries[0].tolist(), 5, embedding_model=MODEL)  # builds the matrix beside the store
        first = time.perf_counter() - t
        for i, query in enumerate(queries[1:]):
            for which in ((0, 1) if i % 2 else (1, 0)):
                t = time.perf_counter()
                if which == 0:
                    hits = store.search(query.tolist(), 5, embedding_model=MODEL)
                    ours.append(time.perf_counter() - t)
                else:
                    best = numpy_baseline(vectors, query, 5)
                    baseline.append(time.perf_counter() - t)
            assert [h.document_key for h in hits] == [f"doc-{i}" for i in best.tolist()]  # same answer
    vec = sqlite_vec_timings(vectors, queries, work) if count <= 1_000_000 else {"skipped": "size"}
    for leftover in work.glob(f"search-{count}.db*"):
        leftover.unlink()
    (work / "vec.db").unlink(missing_ok=True)
    return {"count": count, "store_built_s": round(built, 1), "first_search_s": round(first, 2),
            "search_s": [round(x, 4) for x in ours], "numpy_s": [round(x, 4) for x in baseline],
            "median_s": statistics.median(ours), "numpy_median_s": statistics.median(baseline),
            "ratios": [round(a / b, 2) for a, b in zip(ours, baseline)], "sqlite_vec": vec}


def cache_bytes(work: Path, count: int = 20_000) -> dict:
    from docutrain_cli.store import embedding_cache
    from docutrain_cli.store.local import LocalStore

    rng = np.random.default_rng(3)
    path = work / "cache.db"
    with LocalStore(path) as store:
        for start in range(0, count, 128):
            n = min(128, count - start)
            vectors = rng.standard_normal((n, DIMS), dtype=np.float32)
            store.put_cached_embeddings(MODEL, DIMS, {
                hashlib.sha256(str(start + i).encode()).hexdigest(): vectors[i] for i in range(n)
            })
        cached, vector_bytes, page_bytes = embedding_cache.bytes_per_vector(store.conn)
    for leftover in work.glob("cache.db*"):
        leftover.unlink()
    return {"vectors": cached, "vector_bytes": vector_bytes, "page_bytes": page_bytes}


def bench_search(mode, root: Path, ncpu: int, reps: int, *, h) -> tuple[list, dict]:
    """`h` is scripts/bench.py (its Row), passed in to avoid a circular import."""
    sizes = [100_000] if mode.name == "quick" else [100_000, 1_000_000]
    work = root / "search"
    samples = {str(n): measure(n, work, max(reps, 5)) for n in sizes}
    rows = []
    for n, row_id, limit in ((100_000, "13a", 0.1), (1_000_000, "13b", 1.0)):
        if str(n) not in samples:
            continue
        s = samples[str(n)]
        rows.append(h.Row(row_id, f"search over {n:,} chunks, top 5", s["median_s"], "s", s["numpy_median_s"],
                          "numpy brute force, vectors in memory", statistics.median(s["ratios"]),
                          f"< {limit:g} s", s["median_s"] < limit, s))
    c = cache_bytes(work)
    per_vector = c["page_bytes"] / c["vectors"]
    rows.append(h.Row("13c", "embedding cache bytes per 1,536-byte vector", per_vector, "B",
                      c["vector_bytes"] / c["vectors"], "the vector itself", per_vector / (c["vector_bytes"] / c["vectors"]),
                      "<= 1.2 ratio", c["page_bytes"] <= 1.2 * c["vector_bytes"], c))
    return rows, {"search": samples, "cache": c}

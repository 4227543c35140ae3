"""Search over a contiguous float32 matrix kept beside the store.

`docutrain search` used to read every chunk's vector from SQLite and score
it in Python: 5 s at 100,000 chunks. Here the vectors of one kind (model and
size) are copied once into `<store>.vectors-<kind>` (a header, the chunk ids,
the vectors' norms, then the float32 matrix), which numpy maps and scores in
one matrix-vector product. The copy is rebuilt when the store's chunks
changed since it was made: triggers on `chunks` count every change in
`chunk_changes`, and the copy records the count it was made at.

Results are those of the old Python scan exactly: float32 scores only pick
the candidates (every chunk within float32's worst-case error of the
top-k-th score), which are then scored again with the old float64 formula,
ties in chunk id order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from docutrain_cli import sqlite

if TYPE_CHECKING:  # numpy is imported where it is used: the runner opens the store but never searches
    import numpy as np

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chunk_changes (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    "INSERT INTO chunk_changes SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM chunk_changes)",
    """CREATE TRIGGER IF NOT EXISTS chunks_inserted AFTER INSERT ON chunks
       BEGIN UPDATE chunk_changes SET version = version + 1; END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_deleted AFTER DELETE ON chunks
       BEGIN UPDATE chunk_changes SET version = version + 1; END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_updated AFTER UPDATE OF id, embedding, embedding_model ON chunks
       BEGIN UPDATE chunk_changes SET version = version + 1; END""",
)
_MAGIC = b"docutrain-vectors 1\n"
_ALIGN = 64


def ensure_counter(conn: sqlite3.Connection) -> None:
    """The change counter and its triggers (a write only the first time)."""
    present = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks_updated'").fetchone()
    if present:
        return
    with sqlite.transaction(conn) as tx:
        for statement in SCHEMA:
            tx.execute(statement)


def index_path(store_path: Path, model: str | None, dimensions: int) -> Path:
    kind = hashlib.sha1(f"{model}\n{dimensions}".encode()).hexdigest()[:12]
    return store_path.with_name(f"{store_path.name}.vectors-{kind}")


class VectorIndex:
    """The vectors of one kind, mapped from the file beside the store."""

    def __init__(self, ids: np.ndarray, norms: np.ndarray, matrix: np.ndarray) -> None:
        self.ids, self.norms, self.matrix = ids, norms, matrix

    @classmethod
    def open(cls, conn: sqlite3.Connection, store_path: Path, model: str | None, dimensions: int) -> "VectorIndex":
        """The index for the store as it is now, rebuilt first when stale."""
        version = conn.execute("SELECT version FROM chunk_changes").fetchone()[0]
        path = index_path(store_path, model, dimensions)
        index = _read(path, version)
        if index is None:
            index = _build(conn, path, model, dimensions)
        return index

    def best(self, query: Sequence[float], top: int) -> list[tuple[float, int]]:
        """(score, chunk id) of the `top` best chunks, best first, scored as
        the old scan did: float64 dot product over the stored float32 values."""
        import numpy as np

        usable = self.norms > 0  # the old scan skipped zero vectors
        if not usable.any():
            return []
        query_norm = math.sqrt(sum(x * x for x in query))
        with np.errstate(divide="ignore", invalid="ignore"):
            approx = (self.matrix @ np.asarray(query, np.float32)) / (self.norms * np.float32(query_norm))
        approx[~usable] = -np.inf
        k = min(top, int(usable.sum()))
        kth = np.partition(approx, len(approx) - k)[len(approx) - k]
        # float32's worst-case error of a cosine over n dimensions is about
        # n * 2^-24 (plus the query's own rounding): twice that, to be sure.
        margin = (self.matrix.shape[1] + 2) * 2.0**-23
        scored = []
        for row in np.flatnonzero(usable & (approx >= kth - margin)).tolist():
            vector = self.matrix[row].tolist()
            norm = math.sqrt(sum(x * x for x in vector))
            score = sum(map(float.__mul__, query, vector)) / (query_norm * norm)
            scored.append((score, -row))  # -row: ties in chunk id order, as the scan had them
        scored.sort(reverse=True)
        return [(score, int(self.ids[-negative_row])) for score, negative_row in scored[:top]]


def _read(path: Path, version: int | None) -> VectorIndex | None:
    """The file's index if it was made at `version` (None: at any)."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                return None
            header = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    if version is not None and header.get("version") != version:
        return None
    count, dims, offset = header["count"], header["dimensions"], header["offset"]
    if not count:
        return VectorIndex(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, dims), np.float32))
    data = np.memmap(path, mode="r", dtype=np.uint8)
    end = offset + 4 * count * dims
    matrix = data[offset:end].view("<f4").reshape(count, dims)
    ids = data[end : end + 8 * count].view("<i8")
    norms = data[end + 8 * count : end + 12 * count].view("<f4")
    return VectorIndex(ids, norms, matrix)


def _build(conn: sqlite3.Connection, path: Path, model: str | None, dimensions: int) -> VectorIndex:
    """Copy the vectors out of the store in chunk id order, streaming:
    header, the float32 matrix, the ids, the norms (zero for a zero vector)."""
    where = "WHERE length(embedding) = ?" + (" AND embedding_model = ?" if model is not None else "")
    params = [4 * dimensions] + ([model] if model is not None else [])
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        version = _write(conn, tmp, where, params, dimensions, model)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left behind
        raise
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    # A search that rebuilt it at the same moment may have put a newer one there.
    return _read(path, version) or _read(path, None)


def _write(conn: sqlite3.Connection, tmp: Path, where: str, params: list, dimensions: int, model: str | None) -> int:
    """Write the file from one read snapshot of the store; returns the change count it is at."""
    import numpy as np

    with sqlite.transaction(conn, "DEFERRED") as tx, open(tmp, "wb") as f:  # one snapshot throughout
        version = tx.execute("SELECT version FROM chunk_changes").fetchone()[0]
        count = tx.execute(f"SELECT count(*) FROM chunks {where}", params).fetchone()[0]
        header = json.dumps({"version": version, "count": count, "dimensions": dimensions, "model": model})
        offset = -(-(len(_MAGIC) + len(header) + 40) // _ALIGN) * _ALIGN
        header = json.dumps({"version": version, "count": count, "dimensions": dimensions,
                             "model": model, "offset": offset})
        f.write(_MAGIC + header.encode() + b"\n")
        f.write(b"\0" * (offset - f.tell()))
        ids, norms = [], []
        rows = tx.execute(f"SELECT id, embedding FROM chunks {where} ORDER BY id", params)
        while batch := rows.fetchmany(4096):
            block = b"".join(blob for _, blob in batch)
            f.write(block)
            values = np.frombuffer(block, "<f4").reshape(len(batch), dimensions).astype(np.float64)
            norms.append(np.sqrt(np.einsum("ij,ij->i", values, values)))
            ids += [chunk_id for chunk_id, _ in batch]
        f.write(np.asarray(ids, "<i8").tobytes())
        f.write(np.concatenate(norms or [np.zeros(0)]).astype("<f4").tobytes())
    return version

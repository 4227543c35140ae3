"""The ranking of `LocalStore.search`, pinned on a small store.

Search got a faster engine in issue 24; its answers must stay what they were:
the same chunks, in the same order (ties in store order), with the same
rounded scores. The expected digests were computed by the Python scan that
came before.
"""

from __future__ import annotations

import hashlib
import json

from docutrain_cli.pipeline.offline import OfflineEmbedder
from docutrain_cli.pipeline.models import OFFLINE_MODEL
from docutrain_cli.store.local import ChunkRow, LocalStore
from test_pinned_output import chunks_digest

QUERIES = ["tenant deposit", "Part 7 key", "東京 首都", "price rent", "the", "worker crash recovery queue"]
EXPECTED = {
    (OFFLINE_MODEL, 10): "b7fd512ff2e5550f479532c889166497ccd421e4ca9484560c51b4cb0f94e6b5",
    (OFFLINE_MODEL, 1): "3aa207e8fb3a7887e977991f2e5c9b3d004fe8a8354a3e2f98a85d684a795ee8",
    (None, 10): "8785d03a60257597a4f0a6f286dd005987fbaf902e938a9768a2a34880d66063",
    (None, 500): "1e7dd2693260b6d5b2784346cd53fb68f40786e24e80d6026d7b39ee741cdc37",
}
# Readable spot check: the best three for the first query.
EXPECTED_TOP3 = [['c', 52, 0.354652], ['b', 15, 0.328652], ['b', 21, 0.327253]]


def fill(store: LocalStore) -> None:
    """Three documents of offline vectors, duplicated texts (ties), a zero
    vector, vectors of another model and of another size, and a document
    replaced after the others (its chunk ids come last)."""
    chunks, _ = chunks_digest(120, 20)
    embedder = OfflineEmbedder()
    vectors = embedder.embed([c.content for c in chunks])

    def rows(picked):
        return [ChunkRow(i, c.page_start, c.page_end, c.token_count, c.content, v, c.heading)
                for i, (c, v) in enumerate(picked)]

    pairs = list(zip(chunks, vectors))
    store.replace_chunks("a", rows(pairs[:60]), embedding_model=OFFLINE_MODEL, embedding_dimensions=384,
                         page_count=5, source="/a.pdf")
    store.replace_chunks("b", rows(pairs[60:120] + pairs[:5]), embedding_model=OFFLINE_MODEL,
                         embedding_dimensions=384, page_count=5, source="/b.pdf")
    store.replace_chunks("c", rows(pairs[100:]), embedding_model=OFFLINE_MODEL, embedding_dimensions=384,
                         page_count=5, source="/c.pdf")
    zero = ChunkRow(0, 1, 1, 1, "nothing", [0.0] * 384)
    store.replace_chunks("z", [zero], embedding_model=OFFLINE_MODEL, embedding_dimensions=384, page_count=1)
    other = [ChunkRow(i, 1, 1, 1, c.content, list(reversed(v))) for i, (c, v) in enumerate(pairs[:30])]
    store.replace_chunks("o", other, embedding_model="other-model", embedding_dimensions=384, page_count=1)
    small = [ChunkRow(0, 1, 1, 1, "three", [1.0, 2.0, 3.0])]
    store.replace_chunks("s", small, embedding_model=OFFLINE_MODEL, embedding_dimensions=3, page_count=1)
    # "a" again with fewer chunks: its old ids go, new ones come after all others.
    store.replace_chunks("a", rows(pairs[:40]), embedding_model=OFFLINE_MODEL, embedding_dimensions=384,
                         page_count=5, source="/a.pdf")


def ranking(store: LocalStore, model: str | None, top: int) -> list:
    embedder = OfflineEmbedder()
    found = []
    for query in QUERIES:
        [vector] = embedder.embed([query])
        hits = store.search(vector, top, embedding_model=model)
        found.append([[h.document_key, h.chunk_index, h.score, h.page_start, h.page_end, h.source,
                       h.heading, hashlib.sha256(h.content.encode()).hexdigest()[:12]] for h in hits])
    return found


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode()).hexdigest()


def test_search_ranks_as_it_did(tmp_path):
    with LocalStore(tmp_path / "s.db") as store:
        fill(store)
        got = {key: digest(ranking(store, *key)) for key in EXPECTED}
        first = ranking(store, OFFLINE_MODEL, 3)[0]
    assert [hit[:3] for hit in first] == EXPECTED_TOP3
    assert got == EXPECTED


def test_search_of_a_reopened_store_ranks_the_same(tmp_path):
    path = tmp_path / "s.db"
    with LocalStore(path) as store:
        fill(store)
        before = ranking(store, OFFLINE_MODEL, 10)
    with LocalStore(path) as store:
        assert ranking(store, OFFLINE_MODEL, 10) == before
        # A changed chunk set is seen by the next search.
        store.replace_chunks("b", [], embedding_model=OFFLINE_MODEL, embedding_dimensions=384, page_count=0)
        after = ranking(store, OFFLINE_MODEL, 10)
    assert after != before
    assert all(hit[0] != "b" for hits in after for hit in hits)


def test_a_damaged_or_missing_copy_beside_the_store_is_made_again(tmp_path):
    path = tmp_path / "s.db"
    with LocalStore(path) as store:
        fill(store)
        before = ranking(store, OFFLINE_MODEL, 10)
    copies = list(tmp_path.glob("s.db.vectors-*"))
    assert len(copies) == 1
    copies[0].write_bytes(b"docutrain-vectors 1\nnot json")
    with LocalStore(path) as store:
        assert ranking(store, OFFLINE_MODEL, 10) == before
    copies[0].unlink()
    with LocalStore(path) as store:
        assert ranking(store, OFFLINE_MODEL, 10) == before
    assert not list(tmp_path.glob("*.tmp"))

"""The chunks and offline vectors of a fixed document, pinned.

Chunking and the offline embedder are tuned for speed (issue 24); what they
produce must not move, because stored chunks and cached vectors from earlier
runs are compared with new ones (search, the embedding cache). The hashes
below were computed by the code before that tuning. A change here is a change
of the offline model and of every chunk boundary: it needs a new model name,
not a new hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct

import pdfs
from docutrain_cli.pipeline.chunk import chunk_pages
from docutrain_cli.pipeline.offline import OfflineEmbedder
from docutrain_cli.pipeline.tokens import EstimatingCounter

CHUNKS_SHA256 = "1464f084162fc41a8c996ca732db4a9cf86043cfdad6aa668832d1d68d39a614"
VECTORS_SHA256 = "7e494516b7777b9db88a6ccc2208ad3eb5f67206e0e125e850ae88fe2488428f"  # old code, more texts (see offline_texts)


def fixed_document() -> list[tuple[int, str]]:
    """Pages with what the chunker and embedder treat specially: headings,
    table rows, CSV-like lines, long sentences, a huge 'word', CJK, accents,
    digits, stopword runs, CRLF, NULs, blank runs and an empty page."""
    rng = random.Random(24)
    blob = base64.b64encode(bytes(rng.randrange(256) for _ in range(9000))).decode()
    pages = []
    for p in range(1, 13):
        prose = " ".join(pdfs.sentence(p * 100 + s) for s in range(rng.randrange(8, 30)))
        parts = [f"# Part {p}", prose]
        if p % 3 == 0:
            parts.append("## Terms\n\n| item | price |\n|---|---|\n| rent | 1,200.50 |\n| deposit | 2400 |")
        if p % 4 == 0:
            parts.append("id,name,amount\n1,Zoë Müller,12.5\n2,José Ñúñez,7\r\n3,\x00odd,0")
        if p == 5:
            parts.append(" ".join(pdfs.sentence(s).rstrip(".") + "," for s in range(120)) + " end.")
        if p == 7:
            parts.append("The key is " + blob + " and that is all.")
        if p == 9:
            parts.append("東京は日本の首都です。大阪は二番目に大きい都市です！ 本当に？\n\n\n\n\nÉté à Paris.")
        if p == 10:
            parts.append("it is the and of to in that it was and is to be or not to be")
        pages.append((p, "\n\n".join(parts)))
    pages.append((13, "   \n\n  "))
    pages.append((14, "Last page. 12345 67890 3.14159!"))
    return pages


def chunks_digest(chunk_tokens: int, overlap: int) -> tuple[list, str]:
    chunks = list(chunk_pages(fixed_document(), EstimatingCounter(), chunk_tokens=chunk_tokens, overlap=overlap))
    canonical = [[c.index, c.page_start, c.page_end, c.token_count, c.content, c.heading] for c in chunks]
    return chunks, hashlib.sha256(json.dumps(canonical, ensure_ascii=False).encode()).hexdigest()


def test_the_chunks_of_a_fixed_document_do_not_change():
    digests = [chunks_digest(tokens, overlap)[1] for tokens, overlap in ((800, 100), (120, 20), (40, 0))]
    assert hashlib.sha256(" ".join(digests).encode()).hexdigest() == CHUNKS_SHA256


def offline_texts() -> list[str]:
    chunks, _ = chunks_digest(120, 20)
    return [c.content for c in chunks] + [
        "", "the and of", "Word word WORD word", "naïve café, 東京 and 42", "a b", "x", "snake_case x_1 __",
        "rent " * 300 + "deposit due " * 260,  # counts past any small table
        " ".join(pdfs.sentence(n) for n in range(9000)),  # ~117,000 words: more than one pass
    ]


def vectors_digest(vectors) -> str:
    digest = hashlib.sha256()
    for vector in vectors:
        assert len(vector) == 384
        digest.update(struct.pack("<384d", *vector))  # every bit of every float64
    return digest.hexdigest()


def test_the_offline_vectors_of_a_fixed_document_do_not_change():
    texts = offline_texts()
    assert vectors_digest(OfflineEmbedder().embed(texts)) == VECTORS_SHA256
    # One at a time, and again with what the first call learnt: the same.
    embedder = OfflineEmbedder()
    assert vectors_digest([embedder.vector(t) for t in texts[::-1]][::-1]) == VECTORS_SHA256
    assert vectors_digest(embedder.embed(texts)) == VECTORS_SHA256


def test_batches_hand_over_the_same_vectors_in_float32():
    from array import array

    texts = offline_texts()
    expected = [array("f", vector) for vector in OfflineEmbedder().embed(texts)]
    embedder = OfflineEmbedder()
    got = [vector for _, vectors in embedder.embed_batches(texts, [1] * len(texts)) for vector in vectors]
    assert all(isinstance(vector, array) and vector.typecode == "f" for vector in got)
    assert [vector.tobytes() for vector in got] == [vector.tobytes() for vector in expected]
    assert embedder.tokens_used == len(texts)

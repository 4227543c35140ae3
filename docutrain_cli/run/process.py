"""What a worker does with one job: load, extract, chunk, embed, store.

Runs inside a worker process, one job at a time. The store connection, the
embedder (with its HTTP client) and the Supabase client come from the
worker's WorkerContext, which makes them on first use in that process and
keeps them for its later jobs. The job is idempotent: the document's chunk set is
replaced in one transaction, so a second delivery leaves one set.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from typing import TYPE_CHECKING

from docutrain_cli.errors import PermanentError
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.pipeline.chunk import chunk_pages
from docutrain_cli.pipeline.load import load_source
from docutrain_cli.pipeline.models import cost_usd
from docutrain_cli.store.local import ChunkRow

if TYPE_CHECKING:  # the worker runs us; we only read its context
    from docutrain_cli.run.worker import WorkerContext

# Imported lazily (PyMuPDF; numpy for the offline embedder; the embedders and
# their rate budget, which a worker makes at its first job); the runner's
# forkserver imports them once for all workers.
WORKER_PRELOAD = ("docutrain_cli.pipeline.extract", "docutrain_cli.pipeline.offline", "docutrain_cli.pipeline.embed")

def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _float32(vector) -> array:
    return vector if isinstance(vector, array) and vector.typecode == "f" else array("f", vector)


def _waiting_deadline(job: Job, settings) -> float | None:
    """Monotonic time by which waiting for the rate budget must give up, so
    the job goes back to the queue unharmed instead of being killed by its
    timeout (which costs an attempt). Keeps 15 % of the timeout for storing."""
    if not job.started_at:
        return None
    left = settings.job_timeout * 0.85 - (time.time() - job.started_at)
    return time.monotonic() + max(left, 0.0)


def chunk_document(path, settings, counter, max_input_tokens: int, ocr) -> tuple[list, int, list[int]]:
    """The document's chunks, page count and unreadable pages, exactly as a
    run makes them (`docutrain estimate` counts with this too)."""
    # PyMuPDF only here: the runner imports this module to check the
    # processor, and its start-up should not pay for PyMuPDF.
    from docutrain_cli.pipeline.extract import Extraction

    with Extraction(path, password=settings.pdf_password, max_pages=settings.max_pages, ocr=ocr) as doc:
        chunks = list(
            chunk_pages(
                doc.pages(),  # taken a batch of pages at a time: see chunk._batches
                counter,
                chunk_tokens=settings.chunk_tokens,
                overlap=settings.chunk_overlap,
                max_input_tokens=max_input_tokens,
                page_headings=doc.page_headings(),
            )
        )
        # damaged pages and scanned pages whose OCR Tesseract rates unreadable
        return chunks, doc.page_count, sorted(doc.unreadable_pages + ocr.unreadable)


def process_job(job: Job, context: "WorkerContext") -> JobResult:
    settings = context.settings
    started = time.monotonic()
    loaded = load_source(job.source, max_file_mb=settings.max_file_mb, context=context, user_id=job.user_id)
    embedder = context.embedder
    store = context.store

    from docutrain_cli.pipeline.ocr import OcrOptions, PageOcr

    # The pool kills the job at job_timeout; OCR stops before that with a reason.
    ocr = PageOcr(
        OcrOptions.from_settings(settings),
        deadline=started + settings.job_timeout if settings.job_timeout else None,
        progress=context.report_progress,
    )
    chunks, page_count, unreadable_pages = chunk_document(
        loaded.path, settings, embedder.counter, embedder.max_input_tokens, ocr
    )
    if not chunks:  # extraction raises first; this guards the contract
        raise PermanentError("no extractable text")

    # Embed each distinct text once; what the cache has costs nothing. Offline
    # vectors are cached too: measured, a cache hit is ~4 us a chunk against
    # ~530 us to compute one (writing it costs ~46 us once).
    hashes = [text_sha256(c.content) for c in chunks]
    cache_dims = embedder.requested_dimensions or 0
    vectors = store.cached_embeddings(embedder.model, cache_dims, hashes)
    to_send: dict[str, tuple[str, int]] = {}
    for chunk, text_hash in zip(chunks, hashes):
        if text_hash not in vectors and text_hash not in to_send:
            to_send[text_hash] = (chunk.content, chunk.token_count)
    pending = list(to_send)
    if to_send and settings.embedding_mode == "batch":
        return _park(job, context, chunks, hashes, to_send, page_count, loaded.sha256, started, unreadable_pages)
    tokens_before = embedder.tokens_used
    limited_before, waited_before = embedder.rate_limited, embedder.waited
    embedder.deadline = _waiting_deadline(job, settings)
    texts = [text for text, _ in to_send.values()]
    counts = [count for _, count in to_send.values()]
    for batch, embedded in embedder.embed_batches(texts, counts):
        # array('f'): 4 bytes a value instead of a Python float object each
        # (the offline embedder's vectors already are: no copy).
        fresh = {text_hash: _float32(vector) for text_hash, vector in zip(pending[batch.start : batch.stop], embedded)}
        # Stored per request, so a retry after a later failure resumes here.
        store.put_cached_embeddings(embedder.model, cache_dims, fresh)
        vectors.update(fresh)
    tokens_embedded = embedder.tokens_used - tokens_before
    embedder.deadline = None
    tokens_cached = sum(c.token_count for c, h in zip(chunks, hashes) if h not in to_send)

    dimensions = len(vectors[hashes[0]])
    rows = [
        ChunkRow(c.index, c.page_start, c.page_end, c.token_count, c.content, vectors[h], c.heading)
        for c, h in zip(chunks, hashes)
    ]
    seconds = round(time.monotonic() - started, 3)
    document_id = store.replace_chunks(
        job.document_key,
        rows,
        embedding_model=embedder.model,
        embedding_dimensions=dimensions,
        page_count=page_count,
        source=job.source,
        sha256=loaded.sha256,
        user_id=job.user_id,
        processing_seconds=seconds,
    )
    if settings.supabase_enabled and job.document_id:
        # Supabase (issue 4): the chunks go up before the job reports success,
        # so the runner's `ready` status can never run ahead of them. A
        # failure raises TransientError (the job retries) or PermanentError.
        from docutrain_cli.supabase.chunks import SupabaseChunks

        SupabaseChunks(settings, context.supabase).replace_chunks(str(job.document_id), job.user_id, rows)
    return JobResult(
        pages=page_count,
        chunks=len(rows),
        tokens_embedded=tokens_embedded,
        tokens_cached=tokens_cached,
        embedder=embedder.kind,
        model=embedder.model,
        dimensions=dimensions,
        cost_usd=cost_usd(embedder.model, tokens_embedded),
        rate_limited=embedder.rate_limited - limited_before,
        rate_wait_seconds=round(embedder.waited - waited_before, 3),
        document_id=document_id,
        document_key=job.document_key,
        sha256=loaded.sha256,
        unreadable_pages=unreadable_pages,
        seconds=seconds,
        ocr_pages=ocr.pages_done,
        ocr_seconds=round(ocr.seconds, 3),
        ocr_skipped_pages=len(ocr.skipped),
    )


def _park(job, context, chunks, hashes, to_send, page_count, sha256, started, unreadable_pages) -> JobResult:
    """Batch API mode: keep the chunks without vectors for the runner's batch
    step (docutrain_cli/batch), which embeds them at half the price within
    24 h and then finishes the document (local store, Supabase, ready)."""
    from docutrain_cli.batch.ledger import Ledger, PendingChunk

    embedder = context.embedder
    Ledger(context.store).park(
        job.document_key,
        [PendingChunk(c.index, c.page_start, c.page_end, c.token_count, c.content, h, c.heading)
         for c, h in zip(chunks, hashes)],
        model=embedder.model,
        dimensions=embedder.requested_dimensions or 0,
        page_count=page_count,
        remote_id=str(job.document_id) if job.document_id else None,
        user_id=job.user_id,
        source=job.source,
        sha256=sha256,
        job_id=job.id,
    )
    return JobResult(
        pages=page_count,
        chunks=len(chunks),
        tokens_cached=sum(c.token_count for c, h in zip(chunks, hashes) if h not in to_send),
        embedder=embedder.kind,
        model=embedder.model,
        cost_usd=0.0,  # paid when the batch is applied, at the batch price (see the run summary)
        document_key=job.document_key,
        sha256=sha256,
        unreadable_pages=unreadable_pages,
        seconds=round(time.monotonic() - started, 3),
        batch_texts=len(to_send),
        batch_tokens=sum(count for _, count in to_send.values()),
    )

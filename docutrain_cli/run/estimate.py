"""What a run would cost, before spending anything: the library behind
`docutrain estimate`.

Files are found as `enqueue` finds them (same content twice counts once),
then loaded, extracted and chunked by the code a worker runs
(`chunk_document`), with the run's token counter. Each distinct chunk text
is weighed the way the embedder weighs it for the rate budget
(`budget_weights`); texts the local store's embedding cache already holds
cost nothing. The tokens to pay are those weights times what the server
counted per weighed token on earlier answers (the rate budget keeps that
density): exact with tiktoken, calibrated by the server once the account
has answered once, else an estimate of about 4 bytes a token.

OCR is never run: it costs seconds a page. Pages a run would OCR are
counted (`ocr_pages`), their text is not (unknown until read).

No request is sent: the rate limit and the density come from the settings
and the budget's stored row, the cache from the store file, the queue ahead
from the queue the caller opened (none: nothing ahead).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from docutrain_cli.pipeline.discover import Refused, discover
from docutrain_cli.errors import PermanentError, one_line
from docutrain_cli.jobs import JobState
from docutrain_cli.pipeline.embed import MAX_INPUT_TOKENS, budget_weights
from docutrain_cli.pipeline.load import REMOTE_PREFIX, load_local
from docutrain_cli.pipeline.models import cache_dimensions, cost_usd, embedding_model
from docutrain_cli.pipeline.ocr import OcrOptions, PageOcr
from docutrain_cli.run.process import chunk_document, text_sha256
from docutrain_cli.pipeline.tokens import counter_for

if TYPE_CHECKING:
    from docutrain_cli.queues import JobQueue

# Queued jobs counted file by file; the tokens of the rest are extrapolated
# from these (a 10,000-job backlog would otherwise take minutes to count).
QUEUE_COUNTED_AT_MOST = 200
# Worker processes count when there are at least this many files for each.
FILES_PER_WORKER = 4


class PagesToOcr(PageOcr):
    """Decides which pages a run would OCR (same rules, same cap), and only counts them."""

    def read(self, page) -> str:
        self.pages_done += 1
        return ""


@dataclasses.dataclass
class CountedFile:
    pages: int
    chunks: int
    ocr_pages: int
    texts: dict[str, int]  # distinct chunk text's sha256 -> its weight


class FileCounter:
    """Counts files the way a run with these settings would embed them."""

    def __init__(self, settings):
        self.settings = settings
        self.model = embedding_model(settings)
        self.counter = counter_for(self.model)  # the embedder's counter (offline: the estimator)
        self.offline = settings.embedder_kind == "offline"

    def count(self, path: str) -> CountedFile:
        """Raises PermanentError with the reason a run would give."""
        settings = self.settings
        loaded = load_local(Path(path), max_file_mb=settings.max_file_mb)
        ocr = PagesToOcr(OcrOptions.from_settings(settings))
        try:
            chunks, pages, _ = chunk_document(loaded.path, settings, self.counter, MAX_INPUT_TOKENS, ocr)
        except PermanentError:
            if not ocr.pages_done:
                raise
            # Every page is scanned: a run reads them by OCR; here they are only counted.
            return CountedFile(ocr.pages_done, 0, ocr.pages_done, {})
        texts: dict[str, int] = {}
        for chunk in chunks:
            # Offline, the tokens reported are the chunker's counts; online, the budget's weights.
            weight = chunk.token_count if self.offline else budget_weights(self.counter, [chunk.content])[0]
            texts[text_sha256(chunk.content)] = weight
        return CountedFile(pages, len(chunks), ocr.pages_done, texts)


def count_files(settings, paths: list[str]) -> Iterator[tuple[str, CountedFile | str]]:
    """(path, its count or why a run would refuse it) for each path, in
    order; in worker processes when there are many, as a run would use
    (pebble: a reader that kills its process fails only that file)."""
    workers = min(settings.workers, len(paths) // FILES_PER_WORKER)
    if workers < 2:
        counter = FileCounter(settings)
        for path in paths:
            yield path, _count_or_why(counter, path)
        return
    from pebble import ProcessPool

    with ProcessPool(max_workers=workers) as pool:
        futures = [pool.schedule(_count_in_worker, (settings, path)) for path in paths]
        for path, future in zip(paths, futures):
            try:
                yield path, future.result()
            except Exception as exc:  # ProcessExpired: the reader crashed its process
                yield path, f"cannot be read: {one_line(exc)}"


def _count_or_why(counter: FileCounter, path: str) -> CountedFile | str:
    try:
        return counter.count(path)
    except PermanentError as exc:
        return str(exc)
    except Exception as exc:  # a file no reader expected: one line, the others still count
        return f"cannot be read: {one_line(exc)}"


_worker_counter: FileCounter | None = None  # one per worker process, for all its files


def _count_in_worker(settings, path: str) -> CountedFile | str:
    global _worker_counter
    if _worker_counter is None:
        _worker_counter = FileCounter(settings)
    return _count_or_why(_worker_counter, path)


@dataclasses.dataclass
class Pricing:
    """What a token costs and how fast tokens go, from settings and stored state only."""

    model: str
    density: float | None  # server tokens per weighed token, when the server has answered
    tokens_per_minute_limit: int | None
    limit_source: str | None  # "settings" | "headers" | None

    @classmethod
    def for_settings(cls, settings) -> "Pricing":
        model = embedding_model(settings)
        if settings.embedder_kind == "offline":
            return cls(model, None, None, None)
        from docutrain_cli.ratelimit.budget import current_budget

        view = current_budget(settings) or {}
        if settings.embedding_tpm:  # the settings win over what was learned, as in the budget
            limit, source = settings.embedding_tpm, "settings"
        else:
            limit, source = view.get("tokens_per_minute_limit"), view.get("limit_source")
        return cls(model, view.get("server_tokens_per_estimated_token"), limit, source)

    def billed(self, weight: int) -> int:
        return math.ceil(weight * (self.density or 1.0))

    def minutes(self, tokens: int | None) -> float | None:
        if tokens is None or not self.tokens_per_minute_limit:
            return None
        return round(tokens / self.tokens_per_minute_limit, 2)


@dataclasses.dataclass
class QueueAhead:
    jobs: int | None  # queued, running and retrying; None when the backend cannot tell
    counted_jobs: int = 0  # of those, counted file by file
    tokens: int | None = None  # None when none could be counted
    minutes_at_limit: float | None = None


@dataclasses.dataclass
class Estimate:
    files: int
    pages: int
    chunks: int
    tokens: int  # to pay: not in the embedding cache, at the server's count when known
    cached_tokens: int
    cost_usd: float | None
    batch_cost_usd: float | None
    minutes_at_limit: float | None
    model: str
    counted_with: str  # the token counter's name
    server_tokens_per_estimated_token: float | None
    tokens_per_minute_limit: int | None
    limit_source: str | None
    ocr_pages: int = 0  # scanned pages a run would OCR; their text is not counted
    duplicates: int = 0  # files with the same content as another one given: counted once
    refused: list[Refused] = dataclasses.field(default_factory=list)
    queue_ahead: QueueAhead | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cost_usd"] = _usd(self.cost_usd)
        data["batch_cost_usd"] = _usd(self.batch_cost_usd)
        return data


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def estimate(settings, paths: Iterable[str], queue: "JobQueue | None" = None) -> Estimate:
    """Count `paths` as a run would embed them, and the work `queue` holds
    ahead of them; no API call."""
    found, refused = discover(paths)
    pricing = Pricing.for_settings(settings)
    first: dict[str, str] = {}  # enqueue queues the same content once
    for item in found:
        first.setdefault(item.sha256, item.path)
    duplicates = len(found) - len(first)
    files = pages = chunks = ocr_pages = 0
    texts: dict[str, int] = {}
    for path, counted in count_files(settings, list(first.values())):
        if isinstance(counted, str):
            refused.append(Refused(path, counted))
            continue
        files += 1
        pages += counted.pages
        chunks += counted.chunks
        ocr_pages += counted.ocr_pages
        texts.update(counted.texts)
    to_pay, cached_tokens = _to_pay(settings, pricing, texts)
    result = Estimate(
        files=files,
        pages=pages,
        chunks=chunks,
        tokens=to_pay,
        cached_tokens=cached_tokens,
        cost_usd=cost_usd(pricing.model, to_pay),
        batch_cost_usd=cost_usd(pricing.model, to_pay, batch=True),
        minutes_at_limit=pricing.minutes(to_pay),
        model=pricing.model,
        counted_with=counter_for(pricing.model).name,
        server_tokens_per_estimated_token=pricing.density,
        tokens_per_minute_limit=pricing.tokens_per_minute_limit,
        limit_source=pricing.limit_source,
        ocr_pages=ocr_pages,
        duplicates=duplicates,
        refused=refused,
    )
    if queue is None:
        result.queue_ahead = QueueAhead(jobs=0, tokens=0, minutes_at_limit=pricing.minutes(0))
    else:
        result.queue_ahead = count_queue_ahead(settings, queue, pricing)
    return result


def _to_pay(settings, pricing: Pricing, texts: dict[str, int]) -> tuple[int, int]:
    """(tokens to pay, tokens the local store's embedding cache already
    holds) for these texts; a missing store is not created."""
    cached: set[str] = set()
    if texts and Path(settings.store).exists():
        from docutrain_cli.store.local import LocalStore

        with LocalStore(settings.store) as store:
            cached = store.cached_hashes(embedding_model(settings), cache_dimensions(settings), list(texts))
    new = sum(weight for text_hash, weight in texts.items() if text_hash not in cached)
    return pricing.billed(new), pricing.billed(sum(texts.values()) - new)


def count_queue_ahead(settings, queue: "JobQueue", pricing: Pricing) -> QueueAhead:
    """The work already in the queue: jobs, and their tokens still to pay,
    counted from their files (local ones; at most QUEUE_COUNTED_AT_MOST,
    the rest extrapolated from them)."""
    stats = queue.stats(time.time())
    total = stats.pending if stats.known or stats.unfinished is not None else None
    waiting = [s for s in (JobState.QUEUED, JobState.RETRYING, JobState.RUNNING) if s in queue.listable_states]
    jobs = [job for state in waiting for job in queue.jobs(state, limit=QUEUE_COUNTED_AT_MOST)]
    # Files in Supabase Storage are not counted: that would mean downloading them.
    local = [job.source for job in jobs[:QUEUE_COUNTED_AT_MOST] if not job.source.startswith(REMOTE_PREFIX)]
    texts: dict[str, int] = {}
    counted = 0
    for _, found in count_files(settings, local):
        if not isinstance(found, str):  # a refused file costs no tokens (the run will say why)
            texts.update(found.texts)
        counted += 1
    if not counted:
        return QueueAhead(jobs=total)
    tokens, _ = _to_pay(settings, pricing, texts)
    if total and total > counted:
        tokens = round(tokens * total / counted)
    return QueueAhead(jobs=total, counted_jobs=counted, tokens=tokens, minutes_at_limit=pricing.minutes(tokens))

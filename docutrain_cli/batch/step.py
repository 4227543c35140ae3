"""The batch step: what `docutrain run --batch` does besides running workers.

Runs in the runner's process, at the start of a run, on a timer while it
runs, and at its end. Each step:

1. moves every batch in flight one state further (upload, create, poll;
   when OpenAI says it is over: download the output and error files and
   apply them), resuming whatever a crash interrupted;
2. finishes every parked document whose vectors are all in the cache:
   chunks into the local store and Supabase, then `ready` through the status
   recorder (so Supabase hears it through the outbox);
3. plans new request files from the texts still waiting, and sends them.
   Mid-run only full files go (a partly filled file waits for more chunks);
   at the end of a run, or when the queue is idle, everything goes.

A line that fails (it is in the batch's error file, e.g. a 500) goes into
the next batch once more: a batch line costs half and nobody waits on it.
Failed in MAX_LINE_FAILURES batches, its texts are embedded with a normal
request (a few texts at full price; the summary says how many). Should that
fail too, the document cannot be embedded: its job is made dead in the
queue with the reason (`docutrain retry` brings it back, and the retried
job's texts go straight to a normal request), and it ends `error` in the
store and in Supabase, so all of them agree. A batch that expired or failed
as a whole keeps what completed; its other inputs go into the next batch
without counting as failures.
"""

from __future__ import annotations

import dataclasses
import logging
from array import array

from docutrain_cli.batch import plan
from docutrain_cli.batch.ledger import IN_FLIGHT, MAX_LINE_FAILURES, BatchRow, Ledger, PendingChunk
from docutrain_cli.batch.remote import BatchAPI, crash_point
from docutrain_cli.config import Settings
from docutrain_cli.errors import AccountError, JobError, RateLimitedError
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.pipeline.models import cost_usd
from docutrain_cli.store.local import ChunkRow, LocalStore

log = logging.getLogger("docutrain.batch")

FAILED_BATCH_PAUSE = 600.0  # seconds without new batches after one failed as a whole


@dataclasses.dataclass
class StepReport:
    """What one or more batch steps did; the run summary shows it."""

    files: int = 0  # request files uploaded (each became one batch)
    requests: int = 0
    inputs: int = 0
    tokens_submitted: int = 0
    batches_applied: int = 0
    vectors: int = 0
    tokens_embedded: int = 0  # as the output files' usage reports them
    cost_usd: float | None = 0.0  # what was paid: the batch price, plus the full price of the texts below
    # Texts that failed in MAX_LINE_FAILURES batches, embedded with a normal request at full price.
    full_price_texts: int = 0
    full_price_tokens: int = 0
    full_price_cost_usd: float | None = 0.0
    documents_ready: int = 0
    documents_dead: int = 0  # could not be embedded at all: dead in the queue, error in the store
    problem: str | None = None  # the last trouble (network, server): the next step tries again

    def add(self, other: "StepReport") -> None:
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if field.name == "problem":
                self.problem = theirs or mine
            elif field.name in ("cost_usd", "full_price_cost_usd"):
                setattr(self, field.name, None if mine is None or theirs is None else mine + theirs)
            else:
                setattr(self, field.name, mine + theirs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class BatchStep:
    def __init__(self, settings: Settings, status, *, embedder=None, queue=None):
        """`status` is the runner's StatusListener (document status and the
        Supabase outbox); `embedder` an OpenAIEmbedder (its client and error
        mapping), made here when not given; `queue` the runner's JobQueue,
        where a document that cannot be embedded ends as a dead job."""
        self.settings = settings
        self.status = status
        self.queue = queue
        self.store = LocalStore(settings.store)
        self.ledger = Ledger(self.store)
        self._embedder = embedder
        self._api: BatchAPI | None = None
        self._supabase = None
        self.limits = plan.Limits(tokens=settings.batch_queue_tokens)

    @property
    def embedder(self):
        if self._embedder is None:
            from docutrain_cli.pipeline.embed import make_embedder

            self._embedder = make_embedder(self.settings)
        return self._embedder

    @property
    def api(self) -> BatchAPI:
        if self._api is None:
            self._api = BatchAPI(self.embedder)
        return self._api

    def close(self) -> None:
        if self._supabase is not None:
            from docutrain_cli.supabase.client import close_client

            close_client(self._supabase)
        self.store.close()

    def step(self, *, flush: bool) -> StepReport:
        """One pass (see the module docstring). Network or server trouble
        ends the pass early and is reported; an AccountError is raised."""
        report = StepReport()
        # Three parts, each allowed to fail alone: a Supabase outage while
        # finishing documents must not keep new batches from being sent.
        for part in (self._advance_all, self._finish_documents, lambda r: self._submit(r, flush=flush)):
            try:
                part(report)
            except AccountError:
                raise
            except JobError as exc:
                report.problem = str(exc)
                log.warning("batch step: %s", exc)
        return report

    def _advance_all(self, report: StepReport) -> None:
        for batch in self.ledger.batches(IN_FLIGHT):
            self._advance(batch, report)

    # -- one batch through its states -----------------------------------------

    def _advance(self, batch: BatchRow, report: StepReport) -> None:
        api, ledger = self.api, self.ledger
        filename = f"{batch.tag}.jsonl"
        if batch.state in ("planned", "uploading"):
            file_id = api.find_file(filename) if batch.state == "uploading" else None
            if file_id is None:
                try:
                    content = plan.jsonl(batch.tag, batch.model, batch.dimensions, ledger.request_lines(batch))
                except LookupError as exc:  # its documents were re-parked with other text
                    ledger.apply(batch, {}, {}, remote_status="abandoned", completed=0, failed=0, error=str(exc))
                    return
                batch = ledger.move(batch, "uploading")
                file_id = api.upload(filename, content)
                crash_point("uploaded")
            batch = ledger.move(batch, "uploaded", file_id=file_id)
            report.files += 1
            report.requests += batch.requests
            report.inputs += batch.inputs
            report.tokens_submitted += batch.tokens
        if batch.state in ("uploaded", "creating"):
            batch_id = api.find_batch(batch.tag) if batch.state == "creating" else None
            if batch_id is None:
                batch = ledger.move(batch, "creating")
                batch_id = api.create(batch.file_id, batch.tag)
                crash_point("created")
            batch = ledger.move(batch, "submitted", batch_id=batch_id)
            log.info("batch %s: %d requests, %d inputs sent as %s", batch.tag, batch.requests, batch.inputs, batch_id)
        if batch.state == "submitted":
            remote = api.retrieve(batch.batch_id)
            if not remote.over:
                ledger.note(batch, remote_status=remote.status, completed=remote.completed,
                            failed=remote.failed, error=remote.error)
                return
            self._apply(batch, remote, report)

    def _apply(self, batch: BatchRow, remote, report: StepReport) -> None:
        expected: dict[int, int] = {}
        for line, count in self.ledger.conn.execute(
            "SELECT line, count(*) FROM batch_inputs WHERE batch = ? GROUP BY line", (batch.id,)
        ):
            expected[line] = count
        results = plan.Results()
        for file_id in (remote.output_file_id, remote.error_file_id):
            if file_id:
                results.read(batch.tag, self.api.download(file_id), expected)
        crash_point("downloaded")
        stored = self.ledger.apply(
            batch, results.vectors, results.failures, remote_status=remote.status,
            completed=remote.completed, failed=remote.failed, error=remote.error,
        )
        crash_point("applied")
        report.batches_applied += 1
        report.vectors += stored
        report.tokens_embedded += results.tokens
        cost = cost_usd(batch.model, results.tokens, batch=True)
        report.cost_usd = None if cost is None or report.cost_usd is None else report.cost_usd + cost
        log.info(
            "batch %s %s: %d vectors, %d lines failed", batch.batch_id, remote.status, stored, len(results.failures)
        )

    # -- documents -------------------------------------------------------------

    def _finish_documents(self, report: StepReport) -> None:
        for doc in self.ledger.parked():
            chunks = self.ledger.chunks(doc["document_key"])
            hashes = [c.text_sha256 for c in chunks]
            vectors = self.store.cached_embeddings(doc["model"], doc["dimensions"], hashes)
            missing = sorted(set(hashes) - set(vectors))
            if missing:
                exhausted = self.ledger.exhausted(missing)
                if not exhausted:
                    continue  # in a batch, or waiting for the next one
                problem = self._embed_now(doc, exhausted, report)
                if problem:
                    self._give_up(doc, problem, report)
                    continue
                vectors = self.store.cached_embeddings(doc["model"], doc["dimensions"], hashes)
                if set(hashes) - set(vectors):
                    continue
            if self._superseded(doc):
                self.ledger.release(doc["document_key"], doc["version"])
                continue
            try:
                self._finish(doc, chunks, vectors)
            except JobError as exc:
                self.ledger.note_problem(doc["document_key"], str(exc))
                raise  # the same trouble would meet the next document: the next step tries again
            report.documents_ready += 1

    def _embed_now(self, doc: dict, texts: dict[str, tuple[str, int, str]], report: StepReport) -> str | None:
        """Embed texts that failed in MAX_LINE_FAILURES batches with a normal
        request, at full price, into the cache. Returns why the document
        cannot be embedded, or None. Account trouble stops the run; a rate
        limit that outlasts the wait leaves them for the next step."""
        hashes = list(texts)
        embedder = self.embedder
        before = embedder.tokens_used
        try:
            vectors = embedder.embed([texts[h][0] for h in hashes], [texts[h][1] for h in hashes])
        except (AccountError, RateLimitedError):
            raise
        except JobError as exc:
            last_batch_error = texts[hashes[0]][2]
            return (f"{doc['source']}: a chunk failed in {MAX_LINE_FAILURES} batches ({last_batch_error}) "
                    f"and in a normal request ({exc})")
        self.store.put_cached_embeddings(doc["model"], doc["dimensions"],
                                         {h: array("f", v) for h, v in zip(hashes, vectors)})
        tokens = embedder.tokens_used - before
        cost = cost_usd(doc["model"], tokens)
        report.full_price_texts += len(hashes)
        report.full_price_tokens += tokens
        for field in ("full_price_cost_usd", "cost_usd"):
            paid = getattr(report, field)
            setattr(report, field, None if cost is None or paid is None else paid + cost)
        log.info("%s: %d texts failed in %d batches; embedded with a normal request (%d tokens at full price)",
                 doc["source"], len(hashes), MAX_LINE_FAILURES, tokens)
        return None

    def _give_up(self, doc: dict, reason: str, report: StepReport) -> None:
        """The document cannot be embedded: its job dead in the queue (first:
        a crash after it only repeats this), `error` in the store and, through
        the outbox, in Supabase; then out of the ledger."""
        job = _job(doc)
        if self.queue is not None and job.id:
            self.queue.bury_done(job, reason)
        else:  # parked before ledgers kept job ids, or no queue at hand
            log.warning("%s: cannot be embedded, but its job is unknown: only the store says so", doc["source"])
        self.status.error(job, reason)
        self.ledger.release(doc["document_key"], doc["version"])
        report.documents_dead += 1

    def _superseded(self, doc: dict) -> bool:
        """A normal (sync) run made this document ready from other content
        since it was parked: its chunks must not be overwritten with old ones."""
        current = self.store.get_document(doc["document_key"])
        return bool(current and current["status"] == "ready" and current["sha256"] != doc["sha256"])

    def _finish(self, doc: dict, chunks: list[PendingChunk], vectors: dict) -> None:
        rows = [
            ChunkRow(c.chunk_index, c.page_start, c.page_end, c.token_count, c.content, vectors[c.text_sha256],
                     c.heading)
            for c in chunks
        ]
        self.store.replace_chunks(
            doc["document_key"], rows, embedding_model=doc["model"],
            embedding_dimensions=len(rows[0].embedding), page_count=doc["page_count"],
            source=doc["source"], sha256=doc["sha256"], user_id=doc["user_id"],
        )
        if self.settings.supabase_enabled and doc["remote_id"]:
            # Chunks before `ready`, as in a worker; trouble here raises
            # TransientError and the next step tries again.
            from docutrain_cli.supabase.chunks import SupabaseChunks

            SupabaseChunks(self.settings, self._client()).replace_chunks(doc["remote_id"], doc["user_id"], rows)
        self.status.ready(_job(doc), JobResult(pages=doc["page_count"], chunks=len(rows), sha256=doc["sha256"]))
        self.ledger.release(doc["document_key"], doc["version"])

    def _client(self):
        if self._supabase is None:
            from docutrain_cli.supabase.chunks import WORKER_TIMEOUT
            from docutrain_cli.supabase.client import make_client

            self._supabase = make_client(self.settings, WORKER_TIMEOUT)
        return self._supabase

    # -- new batches -----------------------------------------------------------

    def _submit(self, report: StepReport, *, flush: bool) -> None:
        failure = self.ledger.recent_failure(FAILED_BATCH_PAUSE)
        if failure:
            # A batch failed as a whole (its file refused, or the queued-token
            # quota full): its texts wait, rather than a new file every poll.
            report.problem = f"a batch failed ({failure}); new batches wait {FAILED_BATCH_PAUSE / 60:.0f} min"
            return
        in_flight = sum(b.tokens for b in self.ledger.batches(IN_FLIGHT))
        for model, dimensions in self.ledger.waiting_models():
            texts = self.ledger.waiting_texts(model, dimensions)
            if not texts:
                continue
            files = list(plan.plan_files(
                [t.content for t in texts], [t.tokens for t in texts], model, dimensions, self.limits
            ))
            if not flush:
                files = files[:-1]  # the last file is not full yet: it waits for more chunks
            for planned in files:
                if in_flight + planned.tokens > self.limits.tokens:
                    return  # the account's queued-token quota: the rest waits for a later step
                lines = [[texts[i].text_sha256 for i in line] for line in planned.lines]
                batch = self.ledger.plan_batch(model, dimensions, lines, tokens=planned.tokens, size=planned.bytes)
                crash_point("planned")
                in_flight += planned.tokens
                self._advance(batch, report)


def _job(doc: dict) -> Job:
    """The job-shaped record the status listener takes, rebuilt from a parked
    document (its document_key is the same: the remote id, else the source)."""
    return Job(id=doc.get("job_id") or 0, source=doc["source"], sha256=doc["sha256"], user_id=doc["user_id"],
               document_id=doc["remote_id"])

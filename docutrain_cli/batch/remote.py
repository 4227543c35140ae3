"""The Batch API calls, each safe to repeat after a crash.

Creating is the only call that can pay twice, so both creating calls look
first for what an earlier, interrupted attempt may have made: our file by its
name (`<tag>.jsonl`), our batch by its metadata (`docutrain_tag`). The
lookups run only when the ledger says a call was started and not recorded.

Errors are mapped by the embedder's own `classify` (one mapping for sync and
batch): quota exhausted and a rejected key are AccountErrors, which stop the run.
"""

from __future__ import annotations

import dataclasses
import os
import signal

from docutrain_cli.batch.plan import COMPLETION_WINDOW, ENDPOINT
from docutrain_cli.config import environ_flag
from docutrain_cli.errors import JobError, TransientError

TAG_KEY = "docutrain_tag"
OVER = ("completed", "failed", "expired", "cancelled")  # OpenAI's final statuses
CRASH_ENV = "DOCUTRAIN_CRASH_AT"


def crash_point(name: str) -> None:
    """Tests name a step in DOCUTRAIN_CRASH_AT; the process kills itself
    there with SIGKILL, like a power cut between two steps."""
    if environ_flag(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclasses.dataclass(frozen=True)
class RemoteBatch:
    id: str
    status: str
    total: int
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    error: str | None  # why a failed batch failed

    @property
    def over(self) -> bool:
        return self.status in OVER


class BatchAPI:
    """Files and batches through an OpenAIEmbedder's client and its error mapping."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.client = embedder.client
        self.openai = embedder.openai

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self.openai.OpenAIError as exc:
            raise self.classify(exc, what) from None

    def classify(self, exc: Exception, what: str) -> JobError:
        """The embedder's own mapping (a rejected key, a denied model or an
        empty quota is an AccountError, which stops the run), saying which
        call failed. A 404 here is a file or batch, not the model."""
        if isinstance(exc, self.openai.NotFoundError):
            return TransientError(f"{what}: not found (404): {self.embedder.clean_message(exc)}")
        mapped = self.embedder.classify(exc)
        return type(mapped)(f"{what}: {mapped}")

    # -- files ----------------------------------------------------------------

    def find_file(self, filename: str) -> str | None:
        for item in self._call("listing batch files", self.client.files.list, purpose="batch"):
            if item.filename == filename:
                return item.id
        return None

    def upload(self, filename: str, content: bytes) -> str:
        item = self._call(
            "uploading a batch file", self.client.files.create,
            file=(filename, content, "application/jsonl"), purpose="batch",
        )
        return item.id

    def download(self, file_id: str) -> bytes:
        return self._call("downloading batch results", self.client.files.content, file_id).content

    # -- batches --------------------------------------------------------------

    def find_batch(self, tag: str) -> str | None:
        for item in self._call("listing batches", self.client.batches.list, limit=100):
            if (item.metadata or {}).get(TAG_KEY) == tag:
                return item.id
        return None

    def create(self, file_id: str, tag: str) -> str:
        item = self._call(
            "creating a batch", self.client.batches.create,
            input_file_id=file_id, endpoint=ENDPOINT, completion_window=COMPLETION_WINDOW,
            metadata={TAG_KEY: tag},
        )
        return item.id

    def retrieve(self, batch_id: str) -> RemoteBatch:
        item = self._call("polling a batch", self.client.batches.retrieve, batch_id)
        counts = item.request_counts
        errors = getattr(getattr(item, "errors", None), "data", None) or []
        error = "; ".join(
            f"{e.code or 'error'}: {' '.join(str(e.message or '').split())[:200]}" for e in errors[:3]
        ) or None
        return RemoteBatch(
            id=item.id,
            status=item.status,
            total=getattr(counts, "total", 0) or 0,
            completed=getattr(counts, "completed", 0) or 0,
            failed=getattr(counts, "failed", 0) or 0,
            output_file_id=item.output_file_id,
            error_file_id=item.error_file_id,
            error=error,
        )

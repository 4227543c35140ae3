"""What a run did: the counts and totals `docutrain run` prints and
`--json` returns, and the one-line description of a failed attempt.

The processor computes each job's cost; the summary only adds results up,
so the runner never needs the pipeline's price table.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any

from docutrain_cli.config import Settings
from docutrain_cli.errors import ExitCode, PermanentError, TransientError
from docutrain_cli.jobs import Job, JobResult

SUMMED_RESULT_FIELDS = ("pages", "chunks", "tokens_embedded", "tokens_cached", "ocr_pages", "rate_limited")


@dataclasses.dataclass
class RunSummary:
    done: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    recovered: int = 0
    pools_replaced: int = 0
    elapsed: float = 0.0
    stop_reason: str = "drained"  # drained | max-time | interrupted | terminated | account
    given_back: int = 0  # jobs returned unharmed because the rate limit left no room
    rate_wait_seconds: float = 0.0  # worker time spent waiting for the embedding rate budget
    account_problem: str | None = None  # quota or key trouble that stopped (or paused) the run
    budget: dict | None = None  # the rate budget's figures at the end
    totals: dict[str, int] = dataclasses.field(
        default_factory=lambda: {k: 0 for k in SUMMED_RESULT_FIELDS}
    )
    ocr_seconds: float = 0.0  # time workers spent in OCR (ocr_pages is in totals)
    embedders: set[str] = dataclasses.field(default_factory=set)
    tokens_by_model: dict[str, int] = dataclasses.field(default_factory=dict)
    # Summed from the processors' results; None once a job's cost is unknown.
    cost_usd: float | None = 0.0
    remaining: dict[str, int] = dataclasses.field(default_factory=dict)
    # Batch API mode: what the batch steps did (files sent, vectors applied,
    # documents finished, cost at the batch price); None in sync mode.
    batch: dict | None = None

    def add(self, result: JobResult) -> None:
        """Count one finished job's result."""
        self.done += 1
        for name in SUMMED_RESULT_FIELDS:
            self.totals[name] += int(getattr(result, name) or 0)
        self.ocr_seconds += float(result.ocr_seconds or 0)
        self.rate_wait_seconds += float(result.rate_wait_seconds or 0.0)
        if result.model:
            self.embedders.add(f"{result.embedder} ({result.model})")
            tokens = int(result.tokens_embedded or 0)
            self.tokens_by_model[result.model] = self.tokens_by_model.get(result.model, 0) + tokens
            if result.cost_usd is None:
                self.cost_usd = None
            elif self.cost_usd is not None:
                self.cost_usd += result.cost_usd

    @property
    def exit_code(self) -> ExitCode:
        if self.stop_reason == "interrupted":
            return ExitCode.INTERRUPTED
        if self.stop_reason == "account":
            return ExitCode.UNAVAILABLE
        dead_after_batch = (self.batch or {}).get("documents_dead", 0)  # Batch API mode: dead after the job
        return ExitCode.PARTIAL if self.dead or dead_after_batch else ExitCode.OK

    @property
    def tokens_per_minute(self) -> float:
        """Embedding tokens sent per minute over the run."""
        return self.totals["tokens_embedded"] * 60.0 / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["embedders"] = sorted(self.embedders)
        data["tokens_per_minute"] = round(self.tokens_per_minute)
        data["exit_code"] = int(self.exit_code)
        return data


def describe_failure(job: Job, exc: BaseException, settings: Settings) -> tuple[str, bool]:
    """(one-line reason naming the file, permanent?) for a failed attempt."""
    from pebble import ProcessExpired

    if isinstance(exc, PermanentError):
        reason, permanent = str(exc), True
    elif isinstance(exc, TransientError):
        reason, permanent = str(exc), False
    elif isinstance(exc, concurrent.futures.TimeoutError):
        reason, permanent = f"timed out after {settings.job_timeout:g} s; worker replaced", False
    elif isinstance(exc, ProcessExpired):
        code = exc.exitcode
        how = f"killed by signal {-code}" if code and code < 0 else f"exited with code {code}"
        reason, permanent = f"worker crashed ({how}); worker replaced", False
    else:  # a bug in a processor: retry, but say what it was
        reason, permanent = f"internal error: {type(exc).__name__}: {exc}", False
    reason = " ".join(reason.split())  # always one line
    return f"{job.source}: {reason}", permanent

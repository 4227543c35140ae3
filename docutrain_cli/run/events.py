"""What a runner tells the world while it runs: `RunObserver` (progress
events, for the live display and log lines) and `StatusListener` (document
status changes, for the local store and the outboxes), and `RunView`, what an
observer may read of the runner that feeds it. They live apart from the
runner so renderers and recorders need not import the dispatcher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.queues.base import QueueStats

if TYPE_CHECKING:
    from docutrain_cli.config import Settings
    from docutrain_cli.run.summary import RunSummary


class RunView(Protocol):
    """What an observer may read of the runner it watches (the Runner itself)."""

    settings: "Settings"
    summary: "RunSummary"
    progress: dict[int, str]  # job id -> what its worker last reported

    @property
    def running(self) -> list[Job]: ...


class RunObserver:
    """Receives progress events; renderers (rich bars, log lines) subclass it."""

    # True: the runner reads the queue's counts every few seconds for
    # `queue_counts` (jobs arrive while it runs); a query each time.
    wants_queue_counts = False

    def started(self, runner: RunView, stats: QueueStats) -> None: ...
    def queue_counts(self, stats: QueueStats) -> None: ...
    def job_started(self, job: Job) -> None: ...
    def job_progress(self, job: Job, message: str) -> None: ...
    def job_finished(self, job: Job, outcome: str, detail: str | None) -> None: ...
    def stopping(self, reason: str) -> None: ...
    def pool_replaced(self, reason: str) -> None: ...
    def idle(self, stats: QueueStats) -> None: ...
    def budget(self, view: dict) -> None: ...
    def paused(self, reason: str, seconds: float) -> None: ...
    def finished(self, summary: "RunSummary") -> None: ...


class StatusListener(Protocol):
    """Receives document status changes; by default a
    status.recorder.StatusRecorder (local store, plus the Supabase outbox)."""

    def processing(self, job: Job) -> None: ...
    def ready(self, job: Job, result: JobResult) -> None: ...
    def error(self, job: Job, message: str) -> None: ...
    def flush(self, *, force: bool = False, at_exit: bool = False) -> int: ...  # force: ignore the outage backoff; at_exit: more time
    def flush_finished(self) -> int: ...  # documents that just ended, now (called every tick)
    def checkpoint(self) -> None: ...  # the local store's WAL into the database, for the workers (every tick)
    def close(self) -> None: ...

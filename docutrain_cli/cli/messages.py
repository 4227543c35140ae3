"""What the CLI says when something is not where the user looks: no queue
file yet (read-only commands must not create one), the demo's files in
`demo/`, states a backend cannot list, why a job was not retried. One home
for these sentences, so every command words them the same way."""

from __future__ import annotations

from pathlib import Path

from docutrain_cli.jobs import JobState


def missing_queue(settings) -> str | None:
    """'no queue at PATH ...' when the local queue file does not exist, else
    None. Read-only commands then show an empty queue instead of creating it."""
    if settings.queue_is_postgres or settings.queue_is_cloudflare or Path(settings.queue).exists():
        return None
    return f"no queue at {settings.queue}: nothing was enqueued there yet{demo_hint()}"


def new_queue_folder(settings) -> str | None:
    """The line `enqueue` says when the local queue's folder does not exist
    yet (opening the queue makes it): a typo in --queue would otherwise go
    unnoticed until nothing processes the jobs."""
    if settings.queue_is_postgres or settings.queue_is_cloudflare:
        return None
    folder = Path(settings.queue).parent
    if folder.exists():
        return None
    return f"created the folder {folder}/ for the queue {settings.queue} (check --queue if that was a typo)"


def demo_hint() -> str:
    """Newcomers run scripts/demo, then look for its results in the wrong place."""
    if Path("demo/queue.db").exists() and Path("demo/docutrain.db").exists():
        return "; scripts/demo's files are in demo/: add --queue demo/queue.db --store demo/docutrain.db, or cd demo"
    return ""


def not_listable(queue, what: str) -> str:
    """Why a backend that lists only some states cannot show `what`."""
    states = ", ".join(sorted(s.value for s in queue.listable_states))
    return f"{what}: this {queue.kind} queue can only show {states} jobs (it cannot read back the others)"


def not_retried(queue, job_id: int, job) -> str:
    """Why `retry` left this job alone (`job` is what the queue knows of it, or None)."""
    if job is None:
        partial = len(queue.listable_states) < len(JobState)
        return f"job {job_id}: " + ("not in the dead-letter queue" if partial else "no such job")
    if job.state == JobState.DEAD:  # e.g. an unreadable Cloudflare message
        return f"job {job_id}: cannot be retried: {job.last_error}"
    return f"job {job_id}: is {job.state.value}, not dead"

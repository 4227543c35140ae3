"""Queue documents: the library behind `docutrain enqueue`."""

from __future__ import annotations

import dataclasses
from typing import Iterable

from docutrain_cli.pipeline.discover import Refused, discover
from docutrain_cli.errors import UsageError
from docutrain_cli.jobs import Job
from docutrain_cli.queues.base import JobQueue


@dataclasses.dataclass
class EnqueueReport:
    queued: list[Job] = dataclasses.field(default_factory=list)
    duplicates: list[Job] = dataclasses.field(default_factory=list)  # not queued again
    refused: list[Refused] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "queued": [{"id": j.id, "source": j.source} for j in self.queued],
            "duplicates": [{"source": j.source, "sha256": j.sha256} for j in self.duplicates],
            "refused": [dataclasses.asdict(r) for r in self.refused],
        }


def enqueue_paths(
    queue: JobQueue,
    paths: Iterable[str],
    *,
    user_id: str | None = None,
    document_id: str | None = None,
    force: bool = False,
    priority: str = "normal",
) -> EnqueueReport:
    """Queue every file the paths name. A file whose content is already
    queued, running or retrying is skipped unless `force`."""
    found, refused = discover(paths)
    if document_id and len(found) > 1:
        raise UsageError(f"--document-id links one file to one document, but {len(found)} files were given")
    report = EnqueueReport(refused=refused)
    active = set() if force else queue.active_hashes()
    batch: list[Job] = []
    for item in found:
        job = Job(id=0, source=item.path, sha256=item.sha256, user_id=user_id, document_id=document_id,
                  priority=priority)
        if item.sha256 in active:
            report.duplicates.append(job)
            continue
        active.add(item.sha256)  # the same content twice in one call: once
        batch.append(job)
    for job, job_id in zip(batch, queue.enqueue(batch)):
        job.id = job_id
        report.queued.append(job)
    return report


def enqueue_document(queue: JobQueue, job: Job) -> bool:
    """Queue one document's job unless a job for the same document id is
    queued, running or retrying; atomic against concurrent callers in any
    process. Sets `job.id` (the new or the existing job's) and returns True
    if a new job was queued."""
    job.id, created = queue.enqueue_unique(job)
    return created


def enqueue_jobs(queue: JobQueue, jobs: list[Job], force: bool = False, priority: str = "low") -> EnqueueReport:
    """Queue ready-made jobs (e.g. pulled from Supabase: backfills, low by
    default), skipping documents that already have a job queued, running or
    retrying (unless `force`)."""
    report = EnqueueReport()
    plain = []
    for job in jobs:
        job.priority = priority
        if force or not job.document_id:
            plain.append(job)
        elif enqueue_document(queue, job):
            report.queued.append(job)
        else:
            report.duplicates.append(job)
    for job, job_id in zip(plain, queue.enqueue(plain)):
        job.id = job_id
        report.queued.append(job)
    return report

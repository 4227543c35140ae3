"""Documents in: `POST /v1/documents` (the app's upload handler) and the
Supabase Database Webhook; `GET /v1/documents/{id}` for where one stands.

A 202 is sent only after the job is committed to the queue, so it survives
a `kill -9` of the server right after. Both intake routes go through
`enqueue_document`: one job per document while one is queued, running or
retrying, also when requests race (see JobQueue.enqueue_unique). Both
count against intake_rate per user and per client address (check_intake)
before anything is looked up or queued.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from docutrain_cli.queues.enqueue import enqueue_document
from docutrain_cli.jobs import PRIORITIES, Job, JobState
from docutrain_cli.queues.line import place_in_line
from docutrain_cli.serve.body import document_id_field, read_json, text_field
from docutrain_cli.serve.errors import ApiError
from docutrain_cli.serve.jobs import public_job

# What a job's state means for the document, in the app's words
# (user_documents.status): a retry is still being processed.
DOCUMENT_STATUS = {
    JobState.QUEUED: "pending",
    JobState.RUNNING: "processing",
    JobState.RETRYING: "processing",
    JobState.DONE: "ready",
    JobState.DEAD: "error",
}


def accepted(job: Job, created: bool, state: JobState | None) -> JSONResponse:
    return JSONResponse(
        {
            "success": True,
            "job_id": job.id,
            "user_document_id": job.document_id,
            "status": DOCUMENT_STATUS[state or JobState.QUEUED],
            "created": created,  # False: the document already had this job
        },
        status_code=202,
    )


async def queue_job(request: Request, job: Job) -> JSONResponse:
    def work(queue) -> tuple[bool, JobState | None]:
        created = enqueue_document(queue, job)
        if created:
            return True, JobState.QUEUED
        existing = queue.job(job.id)
        return False, existing.state if existing else None

    created, state = await request.app.state.handles.call(work)
    return accepted(job, created, state)


def check_intake(request: Request, user_id: str | None) -> None:
    """429 with Retry-After past intake_rate for this user or address."""
    limit = request.app.state.intake_limit
    if limit is not None:
        limit.check(request.scope, user_id)


async def create_document(request: Request) -> JSONResponse:
    data = await read_json(request)
    document_id = document_id_field(data, "user_document_id")
    user_id = text_field(data, "user_id", required=True, max_length=200)
    storage_path = text_field(data, "storage_path", required=False)
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError(422, "metadata must be a JSON object")
    check_intake(request, user_id)
    priority = data.get("priority", "high")  # a single upload: someone is waiting for it
    if priority not in PRIORITIES:
        raise ApiError(422, f"priority must be one of {', '.join(PRIORITIES)}")
    source, sha256 = await request.app.state.resolve_source(document_id, user_id, storage_path)
    job = Job(id=0, source=source, sha256=sha256, user_id=user_id, document_id=document_id, metadata=metadata,
              priority=priority)
    return await queue_job(request, job)


async def show_document(request: Request) -> JSONResponse:
    document_id = request.path_params["document_id"]
    settings = request.app.state.settings

    def work(queue):
        jobs = queue.document_jobs(document_id)
        return jobs, place_in_line(queue, jobs[0], settings, time.time()) if jobs else None

    jobs, place = await request.app.state.handles.call(work)
    if not jobs:
        raise ApiError(404, f"no job for document {document_id}")
    latest = jobs[0]
    return JSONResponse(
        {
            "user_document_id": document_id,
            "status": DOCUMENT_STATUS[latest.state],
            "job_id": latest.id,
            **place,  # position, tokens_ahead, eta_seconds of the latest job
            "job": public_job(latest),
            "job_ids": [job.id for job in jobs],
        }
    )


routes = [
    Route("/v1/documents", create_document, methods=["POST"]),
    Route("/v1/documents/{document_id}", show_document, methods=["GET"]),
]

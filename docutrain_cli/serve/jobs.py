"""Jobs and the queue: `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/retry`,
`GET /v1/status` (the object `docutrain status --json` prints)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.routing import Route

from docutrain_cli.jobs import Job
from docutrain_cli.queues.line import place_in_line
from docutrain_cli.serve.errors import ApiError

MAX_JOB_ID = 2**63 - 1  # SQLite INTEGER and Postgres bigint: a larger id names no job


class JobIdConvertor(IntegerConvertor):
    """`{job_id:job_id}`: digits, as `int`; but an id of more digits than
    any job id has is read as MAX_JOB_ID + 1 (so: no such job), never
    handed to int(), which refuses over 4,300 digits with a ValueError
    (a 500 and a traceback in the log)."""

    def convert(self, value: str) -> int:
        return MAX_JOB_ID + 1 if len(value.lstrip("0")) > len(str(MAX_JOB_ID)) else int(value)


register_url_convertor("job_id", JobIdConvertor())


def job_id_of(request: Request) -> int:
    """The `{job_id:job_id}` path parameter; 404 for one no queue could hold
    (the database would raise OverflowError, not answer)."""
    job_id = request.path_params["job_id"]
    if job_id > MAX_JOB_ID:
        raise ApiError(404, "no such job: job ids are below 2^63")
    return job_id


def without_local_hash(job: Job) -> Job:
    """The job as shown over HTTP: a local file's hash is never sent (with
    `--allow-local-paths` it would tell whether a file holds given bytes)."""
    from docutrain_cli.supabase.storage import REMOTE_PREFIX

    return job if job.source.startswith(REMOTE_PREFIX) else dataclasses.replace(job, sha256=None)


def public_job(job: Job) -> dict[str, Any]:
    return without_local_hash(job).to_dict()


async def show_job(request: Request) -> JSONResponse:
    job_id = job_id_of(request)
    settings = request.app.state.settings

    def work(queue):
        job = queue.job(job_id)
        return job, place_in_line(queue, job, settings, time.time()) if job else None

    job, place = await request.app.state.handles.call(work)
    if job is None:
        raise ApiError(404, f"job {job_id}: no such job")
    return JSONResponse({**public_job(job), **place})


async def retry_job(request: Request) -> JSONResponse:
    job_id = job_id_of(request)

    def work(queue):
        revived = queue.revive([job_id])
        return revived, None if revived else queue.job(job_id)

    revived, job = await request.app.state.handles.call(work)
    if revived:
        return JSONResponse({"success": True, "job_id": job_id, "state": "queued"})
    if job is None:
        raise ApiError(404, f"job {job_id}: no such job")
    raise ApiError(409, f"job {job_id} is {job.state.value}, not dead: only dead jobs can be retried")


async def queue_status(request: Request) -> JSONResponse:
    from docutrain_cli.queues.line import users_in_line
    from docutrain_cli.status.reports import status_report

    settings = request.app.state.settings

    def work(queue):
        now = time.time()
        return status_report(settings, queue.stats(now), users_in_line(queue, now))

    return JSONResponse(await request.app.state.handles.call(work))


routes = [
    Route("/v1/jobs/{job_id:job_id}", show_job, methods=["GET"]),
    Route("/v1/jobs/{job_id:job_id}/retry", retry_job, methods=["POST"]),
    Route("/v1/status", queue_status, methods=["GET"]),
]

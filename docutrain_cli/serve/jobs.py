"""Jobs and the queue: `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/retry`,
`GET /v1/status` (the object `docutrain status --json` prints)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from docutrain_cli.serve.errors import ApiError


async def show_job(request: Request) -> JSONResponse:
    job_id = request.path_params["job_id"]
    job = await request.app.state.handles.call(lambda queue: queue.job(job_id))
    if job is None:
        raise ApiError(404, f"job {job_id}: no such job")
    return JSONResponse(job.to_dict())


async def retry_job(request: Request) -> JSONResponse:
    job_id = request.path_params["job_id"]

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
    from docutrain_cli.status.recorder import status_report

    settings = request.app.state.settings
    report = await request.app.state.handles.call(lambda queue: status_report(settings, queue.stats(time.time())))
    return JSONResponse(report)


routes = [
    Route("/v1/jobs/{job_id:int}", show_job, methods=["GET"]),
    Route("/v1/jobs/{job_id:int}/retry", retry_job, methods=["POST"]),
    Route("/v1/status", queue_status, methods=["GET"]),
]

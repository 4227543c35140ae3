"""`GET /healthz`: the process answers (no token needed, for load balancers).
`GET /readyz`: the queue answers too; 503 with the reason otherwise."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from docutrain_cli.serve.errors import error_response


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> JSONResponse:
    try:
        await request.app.state.handles.call(lambda queue: queue.stats(time.time()))
    except Exception as exc:  # noqa: BLE001 - whatever it is, we are not ready
        return error_response(503, f"queue not reachable: {' '.join(str(exc).split()) or type(exc).__name__}")
    return JSONResponse({"ok": True, "queue": request.app.state.queue.kind})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]

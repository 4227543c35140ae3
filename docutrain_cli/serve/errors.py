"""Every error leaves the API as JSON `{"error": "..."}` with its status.

Routes raise ApiError (or a DocutrainError from the library, mapped here);
Starlette's own 404/405 go through the same handler. An unexpected exception
is logged with its type and answered 500 without details: a traceback or a
setting could carry a secret.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from docutrain_cli.errors import ConfigError, DocutrainError, PermanentError, ServiceUnavailableError, TransientError

log = logging.getLogger("docutrain.serve")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    messages = {404: "no such route", 405: f"method {request.method} not allowed here"}
    return error_response(exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers)


def status_for(exc: DocutrainError) -> int:
    """The queue or a service is unreachable or misconfigured: 503 (retry
    later); bad input found by the library: 422."""
    if isinstance(exc, (ServiceUnavailableError, TransientError, ConfigError)):
        return 503
    if isinstance(exc, PermanentError):
        return 422
    return 500


async def _library_error(request: Request, exc: DocutrainError) -> JSONResponse:
    return error_response(status_for(exc), str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: unexpected %s", request.method, request.url.path, type(exc).__name__)
    return error_response(500, "internal error")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    DocutrainError: _library_error,
    Exception: _unexpected,
}

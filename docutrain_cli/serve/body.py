"""Reading a JSON request body: 64 KB at most, JSON only, an object.

The limit is checked on the Content-Length header first and again while
the body streams in (a chunked request has no length), so a large body is
refused without being held in memory. What Python's json would take but
nothing downstream should see is a 400 too: NaN and Infinity (not JSON, and
they break the JSON we write), numbers of more than MAX_DIGITS digits or
that overflow a float, nesting deeper than MAX_DEPTH, and lone surrogates
(`\\udc80`, which no UTF-8 holds).
"""

from __future__ import annotations

import json
import math
from typing import Any

import anyio

from starlette.requests import Request

from docutrain_cli.serve.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
MAX_DIGITS = 100  # in one JSON number
MAX_DEPTH = 32  # objects and arrays within each other


def _int(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise ValueError(f"a number has more than {MAX_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text) if len(text) <= MAX_DIGITS else math.inf
    if not math.isfinite(value):
        raise ValueError(f"a number is too long or too large: {text[:20]}…")
    return value


def _constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    """json.loads with the refusals above; ApiError(400) with the reason."""
    try:
        data = json.loads(body, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise ApiError(400, "the body is not valid JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    _check_values(data)
    return data


def _check_values(data: Any) -> None:
    """What json.loads takes but nothing after it can hold: nesting deeper
    than MAX_DEPTH (a job's metadata is copied recursively, and deep enough
    it would fail every later read of the job), and a lone surrogate such
    as "\\udc80" (no UTF-8 for SQLite, a file name or our own reply)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise ApiError(400, "the body is not valid JSON: a string holds a lone surrogate (\\ud800-\\udfff)") from None
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise ApiError(400, f"the body is not valid JSON: nested deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            stack.append((key, depth))  # an object's keys are strings too
            stack.append((item, depth + 1))


async def read_json(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "send the body as JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise ApiError(413, f"the body is over {MAX_BODY_BYTES // 1024} KB")
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise ApiError(413, f"the body is over {MAX_BODY_BYTES // 1024} KB") from None
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    return data


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body; BodyTooLarge past `limit` bytes (read no further), and
    ApiError(408) if it takes over serve_request_timeout to arrive (a slow
    sender would hold a task and a connection)."""
    body = bytearray()
    try:
        with anyio.fail_after(request.app.state.settings.serve_request_timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyTooLarge
    except TimeoutError:
        raise ApiError(408, "the body was not sent in time") from None
    return bytes(body)


def text_field(data: dict[str, Any], name: str, *, required: bool, max_length: int = 1024,
               label: str | None = None) -> str | None:
    """A string field (ids may also come as numbers); 422 when wrong, the
    message naming `label` (default: the field's name)."""
    label = label or name
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(422, f"{label} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError(422, f"{label} must be a string")
    value = str(value).strip()
    if not value:
        if required:
            raise ApiError(422, f"{label} must not be empty")
        return None
    if len(value) > max_length:
        raise ApiError(422, f"{label} is longer than {max_length} characters")
    return value


def document_id_field(data: dict[str, Any], name: str, label: str | None = None) -> str:
    """A document id that can be looked up again: GET /v1/documents/{id}
    cannot name one with a `/` (routing splits on it, even %2F), and control
    characters (NUL, CR, LF) break logs, files and headers downstream."""
    label = label or name
    value = text_field(data, name, required=True, max_length=200, label=label)
    if "/" in value or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ApiError(422, f"{label} must not contain '/' or control characters (NUL, CR, LF, ...)")
    return value

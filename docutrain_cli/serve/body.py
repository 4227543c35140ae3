"""Reading a JSON request body: 64 KB at most, JSON only, an object.

The limit is checked on the Content-Length header first and again while
the body streams in (a chunked request has no length), so a large body is
refused without being held in memory.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from docutrain_cli.serve.errors import ApiError

MAX_BODY_BYTES = 64 * 1024


async def read_json(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "send the body as JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise ApiError(413, f"the body is over {MAX_BODY_BYTES // 1024} KB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is over {MAX_BODY_BYTES // 1024} KB")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    return data


def text_field(data: dict[str, Any], name: str, *, required: bool, max_length: int = 1024) -> str | None:
    """A string field (ids may also come as numbers); 422 when wrong."""
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(422, f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError(422, f"{name} must be a string")
    value = str(value).strip()
    if not value:
        if required:
            raise ApiError(422, f"{name} must not be empty")
        return None
    if len(value) > max_length:
        raise ApiError(422, f"{name} is longer than {max_length} characters")
    return value

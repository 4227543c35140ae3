"""The official supabase client, made once per process, and error mapping.

Why a module of its own: the client does not pickle and one inherited through
fork hung in a measured test, so every process (the runner's parent, each
worker) builds its own on first use, keyed by pid. Nothing here runs at
import time.

We hand the client our own httpx.Client so that (1) timeouts are short and
explicit (a slow Supabase must not stall the dispatcher), and (2) a response
hook remembers the last HTTP status in this thread: postgrest-py's APIError
carries the PostgREST error code but not the HTTP status, and the status is
what tells a retryable 503 from a permanent 400.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx

from docutrain_cli.config import Settings
from docutrain_cli.errors import PermanentError, TransientError

DEFAULT_TIMEOUT = 15.0

_clients: dict[tuple, Any] = {}
_lock = threading.Lock()
_last = threading.local()


def _remember_status(response: httpx.Response) -> None:
    _last.status = response.status_code


def last_http_status() -> int | None:
    return getattr(_last, "status", None)


def get_client(settings: Settings, timeout: float = DEFAULT_TIMEOUT):
    """This process's client for (url, key, timeout), created on first use."""
    if not settings.supabase_enabled:
        raise PermanentError("Supabase is not configured: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
    key = (os.getpid(), settings.supabase_url, settings.supabase_service_role_key, timeout)
    with _lock:
        client = _clients.get(key)
        if client is None:
            # Drop clients a forked parent left behind: never reuse them here.
            for stale in [k for k in _clients if k[0] != os.getpid()]:
                del _clients[stale]
            client = _clients[key] = _create(settings, timeout)
        return client


def _create(settings: Settings, timeout: float):
    from supabase import create_client
    from supabase.lib.client_options import SyncClientOptions

    http = httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
        follow_redirects=True,
        event_hooks={"response": [_remember_status]},
    )
    options = SyncClientOptions(
        httpx_client=http,
        # Our retry is the outbox / the job retry; the client's GET retry
        # sleeps up to 30 s inside a call, which would stall the runner.
        postgrest_client_retry=False,
        auto_refresh_token=False,
        persist_session=False,
    )
    try:
        return create_client(settings.supabase_url, settings.supabase_service_role_key, options)
    except Exception as exc:  # SupabaseException: bad URL or key format
        raise PermanentError(f"Supabase client: {exc}") from None


def reset_clients() -> None:
    """Forget this process's clients (tests, or after a settings change)."""
    with _lock:
        for key in [k for k in _clients if k[0] == os.getpid()]:
            client = _clients.pop(key)
            try:
                client.options.httpx_client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


# -- error mapping ------------------------------------------------------------

# PostgREST / SQLSTATE codes that mean "try again later".
_TRANSIENT_CODES = {"PGRST000", "PGRST001", "PGRST002", "PGRST003", "57014", "40001", "40P01"}
_TRANSIENT_CLASSES = ("08", "53", "57", "58", "XX")  # connection, resources, shutdown, system
# Codes that mean the project's schema differs from what docutrain expects.
_SCHEMA_HINTS = {
    "42P01": "table does not exist",
    "PGRST205": "table does not exist",
    "42703": "column does not exist",
    "PGRST204": "column does not exist",
    "42883": "function does not exist",
    "PGRST202": "function does not exist",
    "42P10": "no unique constraint matches on_conflict",
}
SCHEMA_FIX = "apply the SQL from `docutrain schema` to the Supabase project (SQL editor or psql)"


def is_transient_status(status: int | None) -> bool:
    return status is not None and (status == 429 or status == 408 or status >= 500)


def classify(exc: BaseException, what: str, status: int | None = None) -> Exception:
    """Map a client exception to TransientError / PermanentError.

    `what` names the operation and table, e.g. "update user_documents", so the
    message says where it went wrong. Never includes the key or headers.
    """
    from postgrest.exceptions import APIError

    if isinstance(exc, (TransientError, PermanentError)):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"Supabase {what}: timed out")
    if isinstance(exc, httpx.TransportError):
        return TransientError(f"Supabase {what}: cannot connect ({type(exc).__name__})")
    status = status if status is not None else last_http_status()
    if isinstance(exc, APIError):
        code = str(exc.code or "")
        text = exc.message or "error"
        detail = f"{text} (code {code}" + (f", HTTP {status})" if status else ")")
        if code in _SCHEMA_HINTS:
            return PermanentError(f"Supabase {what}: {_SCHEMA_HINTS[code]}: {text}; fix: {SCHEMA_FIX}")
        if is_transient_status(status) or code in _TRANSIENT_CODES or code[:2] in _TRANSIENT_CLASSES:
            return TransientError(f"Supabase {what}: {detail}")
        if code.isdigit() and is_transient_status(int(code)):
            return TransientError(f"Supabase {what}: {detail}")
        return PermanentError(f"Supabase {what}: {detail}")
    status_attr = getattr(exc, "status", None)  # storage3's StorageApiError
    if status_attr is not None:
        try:
            code = int(status_attr)
        except (TypeError, ValueError):
            code = status
        message = getattr(exc, "message", None) or str(exc)
        if is_transient_status(code):
            return TransientError(f"Supabase {what}: HTTP {code}: {message}")
        return PermanentError(f"Supabase {what}: HTTP {code}: {message}")
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        cls = TransientError if is_transient_status(code) else PermanentError
        return cls(f"Supabase {what}: HTTP {code}")
    # Anything else (a malformed response, a client bug): retrying may help,
    # and a job retry is bounded by max_attempts.
    return TransientError(f"Supabase {what}: {type(exc).__name__}: {exc}")

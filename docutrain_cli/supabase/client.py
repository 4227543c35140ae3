"""The official supabase client, and the mapping of its errors.

Every process that talks to Supabase makes its own client with
`make_client` and keeps it (a worker in its WorkerContext, the runner's
status recorder in its delivery): the client does not pickle, and one
inherited through fork hung in a measured test. Nothing here runs at import
time, and nothing is cached here.

We hand the client our own httpx.Client so that (1) timeouts are short and
explicit (a slow Supabase must not stall the dispatcher), and (2) a response
hook remembers the last HTTP status in this thread: postgrest-py's APIError
carries the PostgREST error code but not the HTTP status, and the status is
what tells a retryable 503 from a permanent 400.
"""

from __future__ import annotations

import threading

import httpx

from docutrain_cli.config import Settings
from docutrain_cli.errors import PermanentError, TransientError

DEFAULT_TIMEOUT = 15.0

# The last HTTP status per thread (see the docstring): process-global on
# purpose, since the response hook has no other place to put it.
_last = threading.local()


def _remember_status(response: httpx.Response) -> None:
    _last.status = response.status_code


def last_http_status() -> int | None:
    return getattr(_last, "status", None)


def make_client(settings: Settings, timeout: float = DEFAULT_TIMEOUT):
    """A new client for the settings' project; the caller keeps and reuses it."""
    if not settings.supabase_enabled:
        raise PermanentError("Supabase is not configured: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
    return _create(settings, timeout)


def close_client(client) -> None:
    """Close the client's HTTP connections (best effort)."""
    try:
        client.options.httpx_client.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


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

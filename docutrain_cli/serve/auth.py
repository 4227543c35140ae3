"""Who may call the API: a bearer token, and loopback unless there is one.

Every route but `/healthz` needs `Authorization: Bearer <serve_token>`. The
Supabase webhook route also takes the token in `X-Docutrain-Secret`, because a
Database Webhook sends fixed headers you type into the dashboard. With
`webhook_secret` set, that route takes that secret only (bearer or header)
and the serve token no longer opens it: the database, which stores what the
trigger sends, then holds nothing that opens the dashboard or retries. Tokens are
compared with hmac.compare_digest (constant time). Without a token the server
only binds to a loopback address, where only this machine can reach it;
beyond loopback the token must have 32 characters or more.

Guessing is throttled: a client address that offered a wrong token (here, or
at the dashboard's log-in, or a forged cookie) more than FAILED_AUTH_LIMIT
times in FAILED_AUTH_PERIOD seconds gets 429 with Retry-After on every route
but /healthz until the oldest failure leaves the window, even with the right
token, so the guessing stops rather than slows.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from docutrain_cli.errors import ConfigError
from docutrain_cli.serve.errors import error_response
from docutrain_cli.serve.throttle import SlidingWindow, client_key, too_many

PUBLIC_PATHS = frozenset({"/healthz"})
MIN_PUBLIC_TOKEN = 32  # characters a token needs beyond loopback
FAILED_AUTH_LIMIT = 10
FAILED_AUTH_PERIOD = 60.0  # seconds
MAKE_A_TOKEN = "make one with `openssl rand -hex 32` or `python -c \"import secrets; print(secrets.token_hex(32))\"`"
SECRET_HEADER_PATHS = frozenset({"/v1/webhooks/supabase"})
SECRET_HEADER = b"x-docutrain-secret"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name (or 0.0.0.0 spelled otherwise): assume reachable


def check_bind(host: str, token: str | None, webhook_secret: str | None = None) -> None:
    if is_loopback(host):
        return
    if not token:
        raise ConfigError(
            f"serve: refusing to listen on {host} without a token: set serve_token "
            "(env DOCUTRAIN_SERVE_TOKEN), or listen on 127.0.0.1"
        )
    for name, secret in (("serve_token", token), ("webhook_secret", webhook_secret)):
        if secret and len(secret) < MIN_PUBLIC_TOKEN:
            raise ConfigError(
                f"serve: refusing to listen on {host} with a {name} of {len(secret)} characters "
                f"(at least {MIN_PUBLIC_TOKEN} beyond loopback): {MAKE_A_TOKEN}"
            )


def failed_auth_window() -> SlidingWindow:
    """The failures one app counts (shared by this middleware and the dashboard)."""
    return SlidingWindow(FAILED_AUTH_LIMIT, FAILED_AUTH_PERIOD)


class TokenAuth:
    """ASGI middleware (not BaseHTTPMiddleware: that costs a task per request)."""

    def __init__(self, app: ASGIApp, token: str | None, failures: SlidingWindow,
                 own_auth: Callable[[str], bool] = lambda path: False, webhook_secret: str | None = None):
        self.app = app
        self.token = token.encode() if token else None
        self.webhook_secret = webhook_secret.encode() if webhook_secret else None
        self.failures = failures
        # Paths that check the token themselves (the dashboard's pages, which
        # also take a login cookie and send browsers to a log-in form); they
        # record their failures in the same window.
        self.own_auth = own_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        client = client_key(scope)
        wait = self.failures.retry_after(client)
        if wait:
            return await too_many(wait, "too many wrong tokens or log-ins from your address")(scope, receive, send)
        expected = self._expected(scope["path"])
        if expected is None or self.own_auth(scope["path"]):
            return await self.app(scope, receive, send)
        offered = self._offered(scope)
        if _repeated_credential(scope):  # many guesses in one request: each one counts
            for _ in offered:
                self.failures.add(client)
            return await error_response(
                400, "send one token: one Authorization header (and on the webhook route one X-Docutrain-Secret)"
            )(scope, receive, send)
        if self._matches(offered, expected):
            return await self.app(scope, receive, send)
        for _ in offered:  # each wrong offer is a guess; a request with no token at all is not
            self.failures.add(client)
        name = "webhook_secret" if expected is self.webhook_secret else "serve_token"
        response = error_response(
            401, f"missing or wrong token: send Authorization: Bearer <{name}>",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _expected(self, path: str) -> bytes | None:
        if path in SECRET_HEADER_PATHS and self.webhook_secret is not None:
            return self.webhook_secret
        return self.token

    def _offered(self, scope: Scope) -> list[bytes]:
        """The tokens the request offers. Any Authorization header counts (a
        bearer token or not), so stacking many in one request to try many
        guesses at once is refused, not taken as one failure."""
        offered: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                offered.append(value[7:].strip() if value[:7].lower() == b"bearer " else b"")
            elif name == SECRET_HEADER and scope["path"] in SECRET_HEADER_PATHS:
                offered.append(value.strip())
        return offered

    @staticmethod
    def _matches(offered: list[bytes], expected: bytes) -> bool:
        # Compare every offer, so timing says nothing about which one matched.
        results = [hmac.compare_digest(candidate, expected) for candidate in offered]
        return any(results)


def _repeated_credential(scope: Scope) -> bool:
    """Does the request carry Authorization, or X-Docutrain-Secret, twice?"""
    names = [name for name, _ in scope["headers"] if name in (b"authorization", SECRET_HEADER)]
    return len(names) != len(set(names))

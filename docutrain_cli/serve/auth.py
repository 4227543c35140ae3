"""Who may call the API: a bearer token, and loopback unless there is one.

Every route but `/healthz` needs `Authorization: Bearer <serve_token>`. The
Supabase webhook route also takes the token in `X-Docutrain-Secret`, because a
Database Webhook sends fixed headers you type into the dashboard. Tokens are
compared with hmac.compare_digest (constant time). Without a token the server
only binds to a loopback address, where only this machine can reach it.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from docutrain_cli.errors import ConfigError
from docutrain_cli.serve.errors import error_response

PUBLIC_PATHS = frozenset({"/healthz"})
SECRET_HEADER_PATHS = frozenset({"/v1/webhooks/supabase"})
SECRET_HEADER = b"x-docutrain-secret"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name (or 0.0.0.0 spelled otherwise): assume reachable


def check_bind(host: str, token: str | None) -> None:
    if not token and not is_loopback(host):
        raise ConfigError(
            f"serve: refusing to listen on {host} without a token: set serve_token "
            "(env DOCUTRAIN_SERVE_TOKEN), or listen on 127.0.0.1"
        )


class TokenAuth:
    """ASGI middleware (not BaseHTTPMiddleware: that costs a task per request)."""

    def __init__(self, app: ASGIApp, token: str | None, own_auth: Callable[[str], bool] = lambda path: False):
        self.app = app
        self.token = token.encode() if token else None
        # Paths that check the token themselves (the dashboard's pages, which
        # also take a login cookie and send browsers to a log-in form).
        self.own_auth = own_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.token is None
            or scope["path"] in PUBLIC_PATHS
            or self.own_auth(scope["path"])
        ):
            return await self.app(scope, receive, send)
        if self._allowed(scope):
            return await self.app(scope, receive, send)
        response = error_response(
            401, "missing or wrong token: send Authorization: Bearer <serve_token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        offered: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                offered.append(value[7:].strip())
            elif name == SECRET_HEADER and scope["path"] in SECRET_HEADER_PATHS:
                offered.append(value.strip())
        # Compare every offer, so timing says nothing about which one matched.
        results = [hmac.compare_digest(candidate, self.token) for candidate in offered]
        return any(results)

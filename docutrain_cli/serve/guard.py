"""What a browser on another site can make us do: nothing.

Three checks before auth, on every request (ASGI middleware):

- Without a token (loopback only) the `Host` header must name this server
  on loopback: 127.0.0.1, localhost or [::1] with the port we listen on. A
  page whose DNS name is rebound to 127.0.0.1 sends its own name: refused, so
  it can neither read the API nor post to it.
- A POST (any method that changes something) that a browser marks as coming
  from another site (`Sec-Fetch-Site: cross-site`/`same-site`, or an `Origin`
  other than our own host) is refused, token or not. API clients (curl, the
  app's backend, Supabase's pg_net, the Cloudflare Worker) send neither
  header; the dashboard's own forms are same-origin.
- Without a token, an API POST (`/v1/...`) must say `Content-Type:
  application/json`: a browser cannot send that to another origin without a
  CORS preflight, which we never answer, so an HTML form cannot reach the API.

The origin check compares hosts and ignores the scheme, so it holds behind
a TLS proxy that talks plain HTTP to us.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from docutrain_cli.serve.errors import error_response

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(host_header: str | None, scheme: str = "http") -> tuple[str, int | None]:
    """'[::1]:8080' -> ('::1', 8080); 'localhost' -> ('localhost', 80).
    A port that is not a number gives None (matches nothing)."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else ("" if not rest else "x")
    elif host.count(":") == 1:
        name, port = host.split(":")
    else:
        name, port = host, ""
    if not port:
        return name, DEFAULT_PORTS.get(scheme)
    return name, int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else None


def host_is_loopback(host_header: str | None, port: int | None = None, scheme: str = "http") -> bool:
    """A loopback name with a well-formed port, and (when `port` is given) that port."""
    name, named_port = split_host(host_header, scheme)
    return name in LOOPBACK_NAMES and named_port is not None and (port is None or named_port == port)


def cross_site(headers: Headers) -> bool:
    """Did a browser send this from another site's page?"""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False  # not a browser, or an old one on a same-origin form
    if origin == "null":
        return True  # sandboxed frames, file:// pages, some redirects: not us
    try:
        origin_host = urlsplit(origin).netloc.lower()
    except ValueError:
        return True
    return not origin_host or origin_host != (headers.get("host") or "").strip().lower()


class EdgeGuard:
    """ASGI middleware: the three checks above, answered as JSON errors."""

    def __init__(self, app: ASGIApp, *, token_required: bool):
        self.app = app
        self.loopback_only = not token_required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            return await self.app(scope, receive, send)
        await error_response(*refusal)(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        if self.loopback_only:
            server = scope.get("server")
            port = server[1] if server else None
            if not host_is_loopback(headers.get("host"), port, scope.get("scheme", "http")):
                return 400, (
                    f"Host {headers.get('host', '')[:100]!r} refused: without serve_token this server "
                    f"answers only 127.0.0.1, localhost or [::1]{f' on port {port}' if port else ''}"
                )
        if scope["method"] in SAFE_METHODS:
            return None
        if cross_site(headers):
            return 403, "refused: a request from another site's page (Origin / Sec-Fetch-Site) may not change anything"
        if self.loopback_only and scope["path"].startswith("/v1/"):
            content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type != "application/json":
                return 415, "send Content-Type: application/json (without a serve_token every API POST must)"
        return None

"""Browser sessions and CSRF tokens for the dashboard, keyed by `serve_token`.

A browser logs in once with the same token the API takes; the server answers
with a cookie that is HttpOnly (scripts cannot read it), SameSite=Strict
(other sites cannot make the browser send it) and holds no secret: it is
`<issued-at>.<HMAC(token, issued-at)>`. The server keeps no session table, so
sessions survive a restart, and changing the token ends all of them.

Every POST the dashboard makes (retry, retry all dead, log out) also carries
a CSRF token, HMAC(token, session), in a hidden field, and must come from the
page's own origin (Origin / Sec-Fetch-Site). An API client that sends the
bearer header needs neither: no browser attaches that header by itself.

With no token configured (allowed on loopback only) there is nothing to log
in with, but POSTs still need a CSRF token: it is made with a random key held
by this process, and requests must name a loopback Host, so a web page that
rebinds its DNS name to 127.0.0.1 cannot use the dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "docutrain_session"
CSRF_FIELD = "csrf_token"
MAX_AGE = 12 * 3600  # seconds a login lasts
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Sessions:
    def __init__(self, token: str | None):
        self.token = token or None
        # Without a token, CSRF tokens are signed with a key only this process knows.
        self._key = (token or secrets.token_hex(32)).encode()

    @property
    def login_required(self) -> bool:
        return self.token is not None

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}|{value}".encode(), hashlib.sha256).hexdigest()

    # -- the token itself --------------------------------------------------
    def token_ok(self, offered: str | None) -> bool:
        if self.token is None or not offered:
            return False
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def bearer_ok(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    # -- cookies -----------------------------------------------------------
    def new_session(self, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        return f"{issued}.{self._sign('session', issued)}"

    def session_ok(self, value: str | None, now: float | None = None) -> bool:
        if self.token is None or not value:
            return False
        issued, _, signature = value.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(signature, self._sign("session", issued)):
            return False
        age = (time.time() if now is None else now) - int(issued)
        return 0 <= age <= MAX_AGE

    # -- CSRF --------------------------------------------------------------
    def csrf_for(self, session: str | None) -> str:
        return self._sign("csrf", session or "no-login")

    def csrf_ok(self, session: str | None, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(offered, self.csrf_for(session))


def host_is_loopback(host_header: str | None) -> bool:
    host = (host_header or "").strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return host in LOOPBACK_HOSTS


def same_origin(headers, base_url: str) -> bool:
    """A browser POST from our own page: Sec-Fetch-Site says so, or Origin
    matches. Old browsers send neither on some same-origin forms: allow
    that, the CSRF token is still checked."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    return origin is None or origin.rstrip("/") == base_url.rstrip("/")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target

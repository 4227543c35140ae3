"""Browser sessions and CSRF tokens for the dashboard, keyed by `serve_token`.

A browser logs in once with the same token the API takes; the server answers
with a cookie that is HttpOnly (scripts cannot read it), SameSite=Strict
(other sites cannot make the browser send it) and holds no secret: it is
`<issued-at>.<HMAC(token, issued-at)>`. The server keeps no session table, so
sessions survive a restart, and changing the token ends all of them.

Every POST the dashboard makes (retry, retry all dead, log out) also carries
a CSRF token, HMAC(token, session), in a hidden field; a POST from another
site's page is refused before it gets here (guard.py). An API client that
sends the bearer header needs no CSRF token: no browser attaches that header
by itself.

With no token configured (allowed on loopback only) there is nothing to log
in with, but POSTs still need a CSRF token: it is made with a random key held
by this process, and guard.py answers only loopback Host names, so a web page
that rebinds its DNS name to 127.0.0.1 cannot use the dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "docutrain_session"
CSRF_FIELD = "csrf_token"
MAX_AGE = 12 * 3600  # seconds a login lasts


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
        return same(offered, self.token)

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
        if not (issued.isascii() and issued.isdigit()) or not same(signature, self._sign("session", issued)):
            return False
        age = (time.time() if now is None else now) - int(issued)
        return 0 <= age <= MAX_AGE

    # -- CSRF --------------------------------------------------------------
    def csrf_for(self, session: str | None) -> str:
        return self._sign("csrf", session or "no-login")

    def csrf_ok(self, session: str | None, offered: str | None) -> bool:
        return bool(offered) and same(offered, self.csrf_for(session))


def same(offered: str, expected: str) -> bool:
    """Constant-time comparison of text that may hold any character (a
    cookie or a form field is whatever the client sent; compare_digest
    refuses non-ASCII str, so bytes)."""
    return hmac.compare_digest(offered.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target

"""Browser sessions and CSRF tokens for the dashboard, keyed by `serve_token`.

A browser logs in once with the same token the API takes; the server answers
with a cookie that is HttpOnly (scripts cannot read it), SameSite=Strict
(other sites cannot make the browser send it) and holds no secret: it is
`<issued-at>.<nonce>.<HMAC(token, issued-at.nonce)>`, the nonce random, so
two log-ins never share a cookie. Logging out revokes the nonce in
`<store>.sessions` (revocations.py): a copied cookie stops working, for every
`serve` on this machine and after a restart. Changing the token ends every
session.

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

from docutrain_cli.serve.revocations import Revocations

COOKIE = "docutrain_session"
CSRF_FIELD = "csrf_token"
MAX_AGE = 12 * 3600  # seconds a login lasts


class Sessions:
    def __init__(self, token: str | None, revocations: Revocations | None = None):
        self.token = token or None
        self.revocations = revocations
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
        signed = f"{issued}.{secrets.token_urlsafe(16)}"
        return f"{signed}.{self._sign('session', signed)}"

    def _issued_and_nonce(self, value: str | None, now: float | None = None) -> tuple[int, str] | None:
        """(issued-at, nonce) of a cookie we issued that has not expired."""
        if self.token is None or not value:
            return None
        signed, _, signature = value.rpartition(".")
        issued, _, nonce = signed.partition(".")
        if not (issued.isascii() and issued.isdigit() and nonce) or not same(signature, self._sign("session", signed)):
            return None
        age = (time.time() if now is None else now) - int(issued)
        return (int(issued), nonce) if 0 <= age <= MAX_AGE else None

    def session_ok(self, value: str | None, now: float | None = None) -> bool:
        found = self._issued_and_nonce(value, now)
        return found is not None and not (self.revocations and self.revocations.revoked(found[1]))

    def end_session(self, value: str | None) -> None:
        """Log out: this cookie (and every copy of it) stops working."""
        found = self._issued_and_nonce(value)
        if found is not None and self.revocations is not None:
            issued, nonce = found
            self.revocations.revoke(nonce, expires=issued + MAX_AGE)

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

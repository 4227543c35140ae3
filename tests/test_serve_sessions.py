"""Logging out logs out (issue 22, point 7).

Real `docutrain serve` processes on one store: a cookie copied before
logout stops working on every one of them and after a restart; two log-ins
in the same second get different cookies; other sessions are untouched."""

from __future__ import annotations

import re
import sqlite3

import httpx
from serving import TOKEN, start_serve_process

from docutrain_cli.paths import sessions_path
from docutrain_cli.serve.session import COOKIE, Sessions


def log_in(url: str) -> str:
    with httpx.Client(base_url=url) as client:
        answer = client.post("/login", data={"token": TOKEN})
        assert answer.status_code == 303, answer.text
        return answer.cookies[COOKIE]


def page(url: str, cookie: str) -> httpx.Response:
    with httpx.Client(base_url=url) as client:
        return client.get("/", headers={"cookie": f"{COOKIE}={cookie}"})


def log_out(url: str, cookie: str) -> None:
    with httpx.Client(base_url=url) as client:
        html = client.get("/", headers={"cookie": f"{COOKIE}={cookie}"}).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        answer = client.post("/logout", data={"csrf_token": csrf}, headers={"cookie": f"{COOKIE}={cookie}"})
        assert answer.status_code == 303 and answer.headers["location"] == "/login"


def test_two_logins_in_one_second_get_different_cookies():
    sessions = Sessions("a-token")
    cookies = {sessions.new_session(1_700_000_000) for _ in range(100)}
    assert len(cookies) == 100 and all(sessions.session_ok(c, 1_700_000_001) for c in cookies)
    issued, nonce, signature = next(iter(cookies)).split(".")
    assert not sessions.session_ok(f"{issued}.{nonce}x.{signature}", 1_700_000_001)  # the nonce is signed


def test_a_copied_cookie_stops_working_after_logout_on_every_serve_and_after_a_restart(docutrain):
    env = {"DOCUTRAIN_SERVE_TOKEN": TOKEN}
    first, first_url = start_serve_process(docutrain, **env)
    second, second_url = start_serve_process(docutrain, **env)  # a second process on the same store
    try:
        stolen, other = log_in(first_url), log_in(first_url)
        assert stolen != other
        for url in (first_url, second_url):
            assert page(url, stolen).status_code == 200 and page(url, other).status_code == 200
        log_out(first_url, stolen)
        for url in (first_url, second_url):
            gone = page(url, stolen)
            assert gone.status_code == 303 and gone.headers["location"].startswith("/login"), url
            assert page(url, other).status_code == 200, url  # only that session ended
        second.kill()
        second.wait()
        second, second_url = start_serve_process(docutrain, **env)
        assert page(second_url, stolen).status_code == 303  # a restart does not bring it back
        assert page(second_url, other).status_code == 200
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
    with sqlite3.connect(sessions_path(docutrain.store)) as db:
        rows = db.execute("SELECT nonce, expires FROM revoked").fetchall()
    assert len(rows) == 1 and rows[0][0] in stolen and TOKEN not in rows[0][0]  # the nonce only

"""Guessing the token is not free (issue 22, point 4).

Over real HTTP: 300 wrong dashboard log-ins and wrong bearer tokens from one
address are answered 401 ten times, then 429 with Retry-After, even with the
right token; another address is not affected; requests with no token at all
are not counted. At start, a token under 32 characters cannot face a network.
The window itself is checked with a clock the test moves."""

from __future__ import annotations

import pytest
from serving import TOKEN, ServeThread

from docutrain_cli.config import Settings
from docutrain_cli.serve.auth import FAILED_AUTH_LIMIT, FAILED_AUTH_PERIOD
from docutrain_cli.serve.throttle import SlidingWindow, client_key

OTHER_CLIENT = {"x-forwarded-for": "203.0.113.9"}  # uvicorn trusts it from 127.0.0.1, as from a local proxy


@pytest.fixture
def server(tmp_path):
    serving = ServeThread(Settings(queue=str(tmp_path / "q.db"), store=str(tmp_path / "s.db"), serve_token=TOKEN))
    yield serving
    serving.close()


def throttled(answer) -> None:
    assert answer.status_code == 429, answer.text
    assert 1 <= int(answer.headers["retry-after"]) <= FAILED_AUTH_PERIOD
    assert "too many wrong tokens or log-ins" in answer.json()["error"]


def test_300_wrong_logins_get_ten_answers_then_429(server):
    with server.client(token=None) as client:
        answers = [client.post("/login", data={"token": f"guess-{i}"}).status_code for i in range(300)]
        assert answers == [401] * FAILED_AUTH_LIMIT + [429] * (300 - FAILED_AUTH_LIMIT)
        throttled(client.post("/login", data={"token": TOKEN}))  # the right one is not even checked
        throttled(client.get("/v1/status", headers={"authorization": f"Bearer {TOKEN}"}))
        throttled(client.get("/login"))
        assert client.get("/healthz").status_code == 200
        assert not client.cookies
        # another address logs in as usual
        answer = client.post("/login", data={"token": TOKEN}, headers=OTHER_CLIENT)
        assert answer.status_code == 303 and "docutrain_session" in answer.headers["set-cookie"]


def test_wrong_bearer_tokens_and_webhook_secrets_count_a_missing_token_does_not(server):
    with server.client(token=None) as client:
        for _ in range(30):  # a client without any token is told so, not throttled
            assert client.get("/v1/status").status_code == 401
        for i in range(FAILED_AUTH_LIMIT // 2):
            assert client.get("/v1/status", headers={"authorization": f"Bearer wrong-{i}"}).status_code == 401
        for i in range(FAILED_AUTH_LIMIT - FAILED_AUTH_LIMIT // 2):
            hook = {"type": "DELETE", "table": "user_documents", "record": None}
            answer = client.post("/v1/webhooks/supabase", json=hook, headers={"x-docutrain-secret": f"wrong-{i}"})
            assert answer.status_code == 401
        throttled(client.get("/v1/status", headers={"authorization": f"Bearer {TOKEN}"}))
        throttled(client.post("/v1/documents", json={}, headers={"authorization": f"Bearer {TOKEN}"}))
        assert client.get("/v1/status", headers={"authorization": f"Bearer {TOKEN}", **OTHER_CLIENT}).status_code == 200


def test_forged_cookies_count_and_are_cleared(server):
    with server.client(token=None) as client:
        for i in range(FAILED_AUTH_LIMIT):
            answer = client.get("/", headers={"cookie": f"docutrain_session=1700000000.nonce{i}.forged"})
            assert answer.status_code == 303 and 'docutrain_session=""' in answer.headers["set-cookie"]
        throttled(client.get("/"))


def test_the_window_slides_and_tells_how_long_to_wait():
    now = [1000.0]
    window = SlidingWindow(3, 10.0, clock=lambda: now[0])
    assert [window.hit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert window.hit("a") == pytest.approx(10.0) and window.hit("b") == 0.0
    now[0] += 4
    window.add("a")  # counted while over: keeps it shut longer (failures keep coming)
    assert window.retry_after("a") == pytest.approx(6.0)
    now[0] += 6  # the first three left the window, the late one still counts
    assert [window.hit("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(4.0)]
    now[0] += 4.01
    assert window.hit("a") == 0.0
    small = SlidingWindow(1, 60, max_keys=2, clock=lambda: now[0])
    for key in ("x", "y", "z"):
        small.hit(key)
    assert small.retry_after("x") == 0.0 and small.retry_after("z") > 0  # the oldest key was forgotten


def test_clients_are_keyed_by_address_and_ipv6_by_its_64_block():
    assert client_key({"client": ("203.0.113.9", 5000)}) == "203.0.113.9"
    assert client_key({"client": ("2001:db8:1:2:aaaa::1", 1)}) == client_key({"client": ("2001:db8:1:2:ffff::9", 1)})
    assert client_key({"client": ("2001:db8:1:2::1", 1)}) != client_key({"client": ("2001:db8:1:3::1", 1)})
    assert client_key({"client": ("::ffff:203.0.113.9", 1)}) == "203.0.113.9"
    assert client_key({"client": None}) == "unknown"


def test_a_short_token_cannot_face_a_network(docutrain):
    result = docutrain("serve", "--host", "0.0.0.0", "--port", "0", timeout=30, DOCUTRAIN_SERVE_TOKEN="x" * 31)
    assert result.returncode == 2
    [line] = [text for text in result.stderr.splitlines() if text.strip()]
    assert "refusing to listen on 0.0.0.0 with a serve_token of 31 characters (at least 32" in line
    assert "openssl rand -hex 32" in line and "secrets.token_hex(32)" in line
    assert "x" * 31 not in result.stderr
    proc = docutrain.start("serve", "--host", "0.0.0.0", "--port", "0", DOCUTRAIN_SERVE_TOKEN="x" * 32)
    try:
        assert "listening on http://0.0.0.0:" in proc.stderr.readline()
    finally:
        proc.kill()
        proc.wait()

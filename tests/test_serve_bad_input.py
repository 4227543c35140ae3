"""Bad input never gets a 500 (issue 22, point 6).

Each attack over real HTTP gets a 4xx with the usual one-line JSON error
(the dashboard's pages answer in HTML or text, still 4xx), no traceback,
and queues nothing: JSON nested 20,000 deep, a 5,000-digit number, NaN and
Infinity, non-ASCII cookies, CSRF values and tokens, a webhook storage_path
that is a number, 20 KB ids, job ids of 2^63 and more, and document ids that
could never be looked up again (`/`, NUL, CR/LF)."""

from __future__ import annotations

import json

from serving import TOKEN
from test_serve import api, server, settings  # noqa: F401 - the same server fixtures

from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.status.webhooks import sign, verify_signature

JSON = {"content-type": "application/json"}
BIG = 2**63


def json_error(answer, status: int, text: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and text in body["error"], body
    assert "Traceback" not in answer.text


def nothing_queued(settings) -> None:
    with LocalQueue(settings.queue) as queue:
        assert queue.jobs(limit=10) == []


def doc(**fields) -> dict:
    return {"user_document_id": "d1", "user_id": "u", "storage_path": "u/a.pdf", **fields}


def hook(**record) -> dict:
    row = {"id": "r1", "user_id": "u", "status": "pending", "storage_path": "u/a.pdf", **record}
    return {"type": "INSERT", "table": "user_documents", "schema": "public", "record": row, "old_record": None}


def test_hostile_json_is_400(api, settings):
    deep = b"[" * 20_000 + b"]" * 20_000
    bodies = {
        deep: "nested too deeply",
        b'{"user_document_id": "d1", "user_id": "u", "metadata": ' + deep + b"}": "nested too deeply",
        b'{"user_document_id": ' + b"7" * 5000 + b', "user_id": "u"}': "more than 100 digits",
        b'{"user_document_id": "d1", "user_id": "u", "metadata": {"x": 1' + b"0" * 5000 + b'.5}}': "too long or too large",
        b'{"user_document_id": "d1", "user_id": "u", "metadata": {"x": 1e999}}': "too long or too large",
        json.dumps(doc(metadata={"x": float("nan")})).encode(): "NaN is not JSON",
        b'{"user_document_id": Infinity, "user_id": "u"}': "Infinity is not JSON",
        b'{"user_document_id": "d1", "user_id": "u", "metadata": {"x": -Infinity}}': "-Infinity is not JSON",
        # lone surrogates: no UTF-8 holds them (SQLite, a file name, our own reply)
        b'{"user_document_id": "d1", "user_id": "u", "metadata": {"t": "\\udc80"}}': "lone surrogate",
        b'{"user_document_id": "\\ud800", "user_id": "u"}': "lone surrogate",
        b'{"table": "\\ud800", "record": {}}': "lone surrogate",
        b'{"\\udfff": 1}': "lone surrogate",
        # deep enough to break every later read of the job, small enough to pass json
        json.dumps(doc(metadata=nested(40))).encode(): "nested deeper than 32 levels",
    }
    for body, reason in bodies.items():
        for route in ("/v1/documents", "/v1/webhooks/supabase"):
            json_error(api.post(route, content=body, headers=JSON), 400, reason)
    nothing_queued(settings)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_what_is_accepted_can_be_read_back(api):
    """A pair of surrogates is one character, and metadata nested as deep
    as allowed can be shown again: nothing taken with 202 fails later."""
    body = doc(user_document_id="deep", metadata={"emoji": "\ud83d\ude00", "n": nested(30)})
    raw = json.dumps(body).encode()  # ASCII, the emoji as an escaped pair
    answer = api.post("/v1/documents", content=raw, headers=JSON)
    assert answer.status_code == 202, answer.text
    job = api.get(f"/v1/jobs/{answer.json()['job_id']}")
    assert job.status_code == 200 and job.json()["metadata"]["emoji"] == "😀"
    assert api.get("/v1/documents/deep").status_code == 200


def test_hostile_fields_are_422(api, settings):
    cases = [
        (doc(user_document_id="x" * 20_000), "user_document_id is longer than 200"),
        (doc(user_id="x" * 20_000), "user_id is longer than 200"),
        (doc(storage_path="u/" + "x" * 20_000), "storage_path is longer than"),
        (doc(user_document_id=["d1"]), "user_document_id must be a string"),
    ]
    for bad_id in ("a/b", "../etc", "/", "a\x00b", "a\r\nX-Evil: 1", "line\nbreak", "tab\there", "del\x7f"):
        cases.append((doc(user_document_id=bad_id), "must not contain '/' or control characters"))
    for body, reason in cases:
        json_error(api.post("/v1/documents", json=body), 422, reason)
    hooks = [
        (hook(storage_path=5), "storage_path must be a string, got int"),
        (hook(storage_path=["u/a.pdf"]), "storage_path must be a string"),
        (hook(id="x" * 20_000), "record id is longer than 200"),
        (hook(id={"a": 1}), "record id must be a string"),
        (hook(id="a/b"), "record id must not contain '/'"),
        (hook(id="a\x00b"), "record id must not contain"),
        (hook(id="a\r\nb"), "record id must not contain"),
        (hook(user_id={"a": 1}), "record user_id must be a string"),
        (hook(user_id="u" * 20_000), "record user_id is longer than 200"),
    ]
    for body, reason in hooks:
        json_error(api.post("/v1/webhooks/supabase", json=body), 422, reason)
    nothing_queued(settings)


def test_an_addressable_id_can_be_looked_up_again(api):
    from urllib.parse import quote

    for document_id in ("ü-doc", "a b", "a?b#c", "100%", "a.b..c", "😀"):
        assert api.post("/v1/documents", json=doc(user_document_id=document_id)).status_code == 202
        shown = api.get("/v1/documents/" + quote(document_id, safe=""))
        assert shown.status_code == 200 and shown.json()["user_document_id"] == document_id, document_id


def test_job_ids_beyond_what_a_queue_holds_are_404(api, server, settings):
    # "9" * 5000: Python's int() refuses over 4,300 digits (a ValueError, once a 500)
    for job_id in (BIG, BIG * 2, 10**40, "9" * 5000):
        json_error(api.get(f"/v1/jobs/{job_id}"), 404, "no such job")
        json_error(api.post(f"/v1/jobs/{job_id}/retry"), 404, "no such job")
        assert api.get(f"/jobs/{job_id}").status_code == 404  # the dashboard's page
        assert api.post(f"/jobs/{job_id}/retry").status_code == 404
    json_error(api.get(f"/v1/jobs/{BIG - 1}"), 404, "no such job")  # the largest one is a normal miss
    json_error(api.get("/v1/documents/" + "x" * 8000), 404, "no job for document")
    nothing_queued(settings)


def test_non_ascii_cookies_csrf_values_and_tokens_are_refused_not_crashed(server):
    latin = "ü".encode("latin-1")
    addresses = (f"198.51.100.{n}" for n in range(1, 250))  # each guess from its own address: not throttled

    def send(client, method: str, url: str, **kwargs):
        headers = {"x-forwarded-for": next(addresses), **kwargs.pop("headers", {})}
        return client.request(method, url, headers=headers, **kwargs)

    with server.client(token=None) as client:
        for cookie in (b"docutrain_session=" + latin, b"docutrain_session=1700000000." + latin,
                       b"docutrain_session=\xb2\xb3." + latin, b"docutrain_session=1." + latin + b"." + latin):
            assert send(client, "GET", "/", headers={"cookie": cookie}).status_code == 303
            assert send(client, "GET", "/?partial=1", headers={"cookie": cookie}).status_code == 401
            logout = send(client, "POST", "/logout", headers={"cookie": cookie}, data={"csrf_token": "ü"})
            assert logout.status_code == 401
        assert send(client, "POST", "/login", data={"token": "ü" * 40}).status_code == 401
        assert send(client, "POST", "/login", content="token=%FF%FE&next=%C3".encode(),
                    headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 401
        json_error(send(client, "GET", "/v1/status", headers={"authorization": b"Bearer " + latin * 30}), 401, "wrong token")
        json_error(send(client, "POST", "/v1/webhooks/supabase", json=hook(), headers={"x-docutrain-secret": latin}),
                   401, "wrong token")
        assert send(client, "POST", "/login", data={"token": TOKEN}).status_code == 303  # a real session now
        assert send(client, "POST", "/logout", data={"csrf_token": "ü" * 64}).status_code == 403
        assert send(client, "POST", "/jobs/retry-dead", data={"csrf_token": "\x00"}).status_code == 403


def test_verify_signature_says_false_to_anything_odd():
    body, secret = b'{"event": "document.status"}', "s3cret"
    header = sign(secret, body, 1_700_000_000)
    assert verify_signature(secret, body, header, now=1_700_000_000)
    for odd in ("t=1700000000,v1=ü", "t=1700000000,v1=" + "é" * 64, "t=1700000000,v1=\x00",
                "t=" + "9" * 5000 + ",v1=ab", "t=١٧,v1=ab", "v1", "", ",,,", "t=1700000000"):
        assert verify_signature(secret, body, odd, now=1_700_000_000) is False, odd


def test_stacked_tokens_are_refused_and_each_counts_as_a_guess(server):
    """Many Authorization headers in one request were many guesses for the
    price of one failure; now they are a 400, and every one of them counts."""
    with server.client(token=None) as client:
        client.headers["x-forwarded-for"] = "198.51.100.77"
        stacked = [("authorization", f"Bearer wrong-{n}") for n in range(11)] + [("authorization", f"Bearer {TOKEN}")]
        json_error(client.get("/v1/status", headers=stacked), 400, "send one token")
        # 11 wrong guesses: over the limit of 10, so even the right token waits
        answer = client.get("/v1/status", headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 429 and "Retry-After" in answer.headers
    with server.client(token=None) as client:  # another address: one token, one header, as before
        client.headers["x-forwarded-for"] = "198.51.100.78"
        assert client.get("/v1/status", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/v1/status", headers=[("authorization", "Basic eDp5"),
                                                  ("authorization", f"Bearer {TOKEN}")]).status_code == 400

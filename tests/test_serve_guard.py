"""Other sites' pages cannot use `docutrain serve` (issue 22, point 2).

Attacks over real HTTP (uvicorn on 127.0.0.1, port 0): DNS rebinding (our
address under another Host name), a cross-site form POST to the retry route,
and cross-site POSTs with and without a token. Each is refused with a 4xx
JSON error and changes nothing in the real queue file underneath."""

from __future__ import annotations

import time

import pytest
from serving import TOKEN, ServeThread

from docutrain_cli.config import Settings
from docutrain_cli.jobs import Job, JobState
from docutrain_cli.queues.local import LocalQueue

EVIL = "http://evil.example"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(queue=str(tmp_path / "queue.db"), store=str(tmp_path / "docutrain.db"))


@pytest.fixture
def open_server(settings):
    serving = ServeThread(settings)  # no token: loopback only
    yield serving
    serving.close()


@pytest.fixture
def dead_job(settings) -> int:
    with LocalQueue(settings.queue) as queue:
        queue.enqueue([Job(id=0, source="supabase://documents/u/a.pdf", document_id="d1", user_id="u")])
        [job] = queue.lease(1, time.time())
        queue.bury(job, "u/a.pdf: broken")
        return job.id


def state_of(settings, job_id: int) -> JobState:
    with LocalQueue(settings.queue) as queue:
        return queue.job(job_id).state


def refused(answer, status: int, text: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert text in answer.json()["error"]


DOC = {"user_document_id": "d9", "user_id": "u", "storage_path": "u/a.pdf"}


def test_without_a_token_only_loopback_host_names_on_our_port_are_answered(open_server, settings):
    port = open_server.port
    with open_server.client(token=None) as client:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert client.get("/v1/status", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                     f"127.0.0.1:{port + 1}", "127.0.0.1", "localhost:http", f"[::1]x:{port}", ""):
            for path in ("/v1/status", "/healthz", "/", "/metrics", "/v1/jobs/1"):
                refused(client.get(path, headers={"host": host}), 400, "without serve_token")
        # DNS rebinding: the attacker's page posts under its own name
        answer = client.post("/v1/documents", json=DOC, headers={"host": f"evil.example:{port}"})
        refused(answer, 400, "127.0.0.1, localhost or [::1]")
    with LocalQueue(settings.queue) as queue:
        assert queue.jobs(limit=10) == []


def test_a_cross_site_form_post_cannot_retry_a_dead_job(open_server, settings, dead_job):
    form = {"content-type": "application/x-www-form-urlencoded"}
    with open_server.client(token=None) as client:
        url = f"/v1/jobs/{dead_job}/retry"
        refused(client.post(url, content=b"x=1", headers={**form, "origin": EVIL}), 403, "another site")
        refused(client.post(url, content=b"x=1", headers={**form, "sec-fetch-site": "cross-site"}), 403, "another site")
        refused(client.post(url, content=b"x=1", headers={**form, "origin": "null"}), 403, "another site")
        # a browser that sends no Origin (old ones, some redirects): not JSON, so refused all the same
        refused(client.post(url, content=b"x=1", headers=form), 415, "application/json")
        refused(client.post(url, content=b"{}", headers={"content-type": "text/plain"}), 415, "application/json")
        refused(client.post(url), 415, "application/json")
        # even JSON from another site (only reachable after a CORS preflight, never answered)
        refused(client.post(url, json={}, headers={"origin": EVIL}), 403, "another site")
        refused(client.post(url, json={}, headers={"sec-fetch-site": "same-site"}), 403, "another site")
        assert state_of(settings, dead_job) == JobState.DEAD
        refused(client.post("/v1/documents", content=b"x", headers={**form, "origin": EVIL}), 403, "another site")
        # what an API client on this machine sends still works
        assert client.post(url, json={}).json() == {"success": True, "job_id": dead_job, "state": "queued"}
    assert state_of(settings, dead_job) == JobState.QUEUED


def test_the_dashboard_forms_keep_working_without_a_token(open_server, settings, dead_job):
    import re

    with open_server.client(token=None) as client:
        page = client.get("/")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        form = {"csrf_token": token}
        cross = client.post("/jobs/retry-dead", data=form, headers={"origin": EVIL})
        assert cross.status_code == 403 and state_of(settings, dead_job) == JobState.DEAD
        same = client.post("/jobs/retry-dead", data=form,
                           headers={"origin": open_server.url, "sec-fetch-site": "same-origin"})
        assert same.status_code == 303 and same.headers["location"] == "/?retried=1"
    assert state_of(settings, dead_job) == JobState.QUEUED


def test_with_a_token_a_cross_site_post_is_refused_even_with_the_token(settings, dead_job):
    serving = ServeThread(settings.replace(serve_token=TOKEN))
    try:
        with serving.client() as client:
            url = f"/v1/jobs/{dead_job}/retry"
            refused(client.post(url, headers={"origin": EVIL}), 403, "another site")
            refused(client.post("/login", data={"token": TOKEN}, headers={"origin": EVIL}), 403, "another site")
            assert state_of(settings, dead_job) == JobState.DEAD
            # other Host names are fine with a token (a reverse proxy names its own)
            assert client.get("/v1/status", headers={"host": "docutrain.example.com"}).status_code == 200
            # an API client with the token needs no JSON type for a body-less POST
            assert client.post(url).status_code == 200
    finally:
        serving.close()
    assert state_of(settings, dead_job) == JobState.QUEUED

"""The dashboard and /metrics over real HTTP: a uvicorn server on 127.0.0.1,
a real client, a real `docutrain run` over real PDFs in another process."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import httpx
import pytest
from dashboard_server import dashboard
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from pdfs import multi_page  # noqa: E402

TOKEN = "test-token-123"
HOSTILE = "<img src=x onerror=alert(1)>.pdf"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real run shared by the module: 3 documents done, 1 hostile file dead."""
    from conftest import Docutrain

    d = Docutrain(tmp_path_factory.mktemp("run"))
    for i in range(3):
        multi_page(d.workdir / f"doc{i}.pdf", pages=2, seed=i)
    (d.workdir / HOSTILE).write_bytes(b"this is not a PDF")
    assert d("enqueue", str(d.workdir)).returncode == 0
    result = d("run", "--drain", "--workers", "2")
    assert result.returncode == 3, result.stderr  # partly done: one dead
    return d


def jobs_json(d, state: str) -> list[dict]:
    result = d("jobs", "--state", state, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def dead_job_id(d) -> int:
    (job,) = jobs_json(d, "dead")
    return job["id"]


def login(client: httpx.Client, token: str = TOKEN) -> httpx.Response:
    return client.post("/login", data={"token": token, "next": "/"})


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_pages_need_the_token_and_the_cookie_is_httponly_strict_and_holds_no_secret(finished_run):
    with dashboard(finished_run) as url, httpx.Client(base_url=url) as client:
        r = client.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F"
        assert client.get("/?partial=1").status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/jobs/1").status_code == 303
        assert login(client, "wrong").status_code == 401
        assert not client.cookies

        r = login(client)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert TOKEN not in r.headers["set-cookie"]
        page = client.get("/")
        assert page.status_code == 200 and "Dead jobs" in page.text
        assert TOKEN not in page.text
        assert client.get("/metrics").status_code == 200  # the browser's session opens /metrics too
        assert "script-src 'self'" in page.headers["content-security-policy"]

        # logging out needs the CSRF token too, then the cookie is gone
        assert client.post("/logout", data={}).status_code == 403
        r = client.post("/logout", data={"csrf_token": csrf(page.text)})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert client.get("/").status_code == 303


def test_a_login_only_sends_you_to_a_page_of_this_site(finished_run):
    with dashboard(finished_run) as url, httpx.Client(base_url=url) as client:
        for target, expected in [("/jobs/2", "/jobs/2"), ("https://evil.example/", "/"), ("//evil.example", "/")]:
            r = client.post("/login", data={"token": TOKEN, "next": target})
            assert r.headers["location"] == expected


def test_the_hostile_file_name_and_its_error_are_escaped(finished_run):
    with dashboard(finished_run) as url, httpx.Client(base_url=url) as client:
        login(client)
        page = client.get("/").text
        assert "<img" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in page
        dead_id = dead_job_id(finished_run)
        job_page = client.get(f"/jobs/{dead_id}").text
        assert "<img" not in job_page and "&lt;img src=x onerror=alert(1)&gt;.pdf: not a PDF" in job_page
        search = client.get("/", params={"q": "<script>alert(2)</script>"}).text
        assert "<script>alert(2)" not in search and "&lt;script&gt;alert(2)&lt;/script&gt;" in search


def test_retry_needs_csrf_and_same_origin_then_queues_the_dead_job(finished_run):
    dead_id = dead_job_id(finished_run)
    with dashboard(finished_run) as url, httpx.Client(base_url=url) as client:
        login(client)
        token = csrf(client.get(f"/jobs/{dead_id}").text)
        assert client.post(f"/jobs/{dead_id}/retry", data={}).status_code == 403
        assert client.post(f"/jobs/{dead_id}/retry", data={"csrf_token": "forged"}).status_code == 403
        cross = client.post(
            f"/jobs/{dead_id}/retry", data={"csrf_token": token}, headers={"origin": "https://evil.example"}
        )
        assert cross.status_code == 403
        assert finished_run.status()["dead"] == 1

        r = client.post(f"/jobs/{dead_id}/retry", data={"csrf_token": token}, headers={"origin": url})
        assert r.status_code == 303 and r.headers["location"] == f"/jobs/{dead_id}?retried=1"
        status = finished_run.status()
        assert (status["dead"], status["queued"]) == (0, 1)
        assert "1 job(s) back in the queue" in client.get(r.headers["location"]).text

        # again: not dead any more, nothing happens
        r = client.post(f"/jobs/{dead_id}/retry", data={"csrf_token": token})
        assert r.headers["location"] == f"/jobs/{dead_id}?not_dead={dead_id}"
    # put it back as it was for the other tests: the run makes it dead again
    assert finished_run("run", "--drain", "--workers", "1").returncode == 3


def test_an_api_client_with_the_bearer_header_needs_no_csrf_token(finished_run):
    with dashboard(finished_run) as url, httpx.Client(base_url=url) as client:
        r = client.post("/jobs/retry-dead", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 303 and r.headers["location"] == "/?retried=1"
        assert finished_run.status()["dead"] == 0
        r = client.post("/jobs/retry-dead", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
    assert finished_run("run", "--drain", "--workers", "1").returncode == 3


def test_without_a_token_only_loopback_host_names_are_served(finished_run):
    with dashboard(finished_run, token=None) as url, httpx.Client(base_url=url) as client:
        page = client.get("/")
        assert page.status_code == 200 and "Log out" not in page.text
        # a DNS-rebinding page reaches 127.0.0.1 under its own host name
        assert client.get("/", headers={"host": "evil.example:8080"}).status_code == 400
        # POSTs still need the CSRF token
        assert client.post("/jobs/retry-dead").status_code == 403
        assert client.post("/jobs/retry-dead", data={"csrf_token": csrf(page.text)}).status_code == 303
    assert finished_run("run", "--drain", "--workers", "1").returncode == 3


def test_filter_by_state_and_search_by_file_or_document_id(finished_run):
    with dashboard(finished_run) as url, httpx.Client(base_url=url) as client:
        login(client)
        recent = client.get("/", params={"state": "done"}).text.split('id="recent"')[1]
        assert "doc0.pdf" in recent and "onerror" not in recent
        recent = client.get("/", params={"q": "DOC1"}).text.split('id="recent"')[1]
        assert "doc1.pdf" in recent and "doc0.pdf" not in recent
        assert client.get("/jobs/99999").status_code == 404


def test_metrics_match_status_json_after_a_real_run(finished_run):
    status = finished_run.status()
    with dashboard(finished_run) as url, httpx.Client(base_url=url) as client:
        r = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    for state in ("queued", "running", "retrying", "done", "dead"):
        assert samples[("docutrain_jobs", (("state", state),))] == status[state]
    assert samples[("docutrain_jobs_finished_total", (("outcome", "done"),))] == status["done"] == 3
    # events, not states: the module's retry tests revived the dead job, whose deaths still count
    assert samples[("docutrain_jobs_finished_total", (("outcome", "dead"),))] >= status["dead"] == 1
    assert samples[("docutrain_job_duration_seconds_count", ())] == 3
    assert samples[("docutrain_oldest_queued_age_seconds", ())] == 0
    assert samples[("docutrain_outbox_backlog", ())] == 0
    assert samples[("docutrain_runner_up", ())] == 0 and status["runner"] is None
    assert samples[("docutrain_workers", ())] == 0
    assert samples[("docutrain_jobs_unfinished", ())] == status["unfinished"] == 0
    # tokens: the sum of what each done job's result says it embedded
    tokens = sum(job["result"]["tokens_embedded"] for job in jobs_json(finished_run, "done"))
    model = jobs_json(finished_run, "done")[0]["result"]["model"]
    assert tokens > 0 and samples[("docutrain_embedding_tokens_total", (("model", model),))] == tokens


def test_the_outbox_backlogs_and_their_last_errors_are_shown(docutrain):
    """Real flushes to a Supabase and an app that refuse connections leave
    backlogs and errors (Supabase outbox and status webhooks)."""
    import socket

    from dashboard_server import settings_for

    from docutrain_cli.jobs import Job
    from docutrain_cli.status.recorder import StatusRecorder
    from docutrain_cli.status.reports import status_report

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    supabase = {
        "supabase_url": f"http://127.0.0.1:{dead_port}", "supabase_service_role_key": "service-role-secret",
        "status_webhook_url": f"http://127.0.0.1:{dead_port}/hook", "status_webhook_secret": "webhook-secret",
    }
    settings = settings_for(docutrain, **supabase)
    recorder = StatusRecorder(settings, request_timeout=2)
    for i in range(2):
        recorder.processing(Job(id=i + 1, source=f"supabase://documents/u/<b>{i}</b>.pdf", document_id=f"doc-{i}"))
    recorder.flush(5, force=True)
    recorder.close()

    with dashboard(docutrain, **supabase) as url, httpx.Client(base_url=url) as client:
        login(client)
        page = client.get("/").text
        outbox = page.split('aria-label="Supabase outbox"')[1].split("</section>")[0]
        assert 'id="outbox-backlog">2<' in outbox and "last error at" in outbox
        assert 'id="webhook-backlog">2<' in page and "status webhooks: 2 change(s) waiting" in page
        assert "service-role-secret" not in page and "webhook-secret" not in page
        assert "Supabase outbox: 2 change(s) waiting" in page  # in "needs attention"
        metrics = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    assert "docutrain_outbox_backlog 2.0" in metrics
    from docutrain_cli.queues import open_queue

    with open_queue(settings) as queue:
        assert status_report(settings, queue.stats(0))["supabase_outbox"]["backlog"] == 2


def test_a_queue_that_cannot_be_read_gives_a_page_that_says_why(docutrain):
    docutrain.queue.mkdir()  # a folder where the queue file should be
    with dashboard(docutrain) as url, httpx.Client(base_url=url) as client:
        login(client)
        page = client.get("/")
        assert page.status_code == 503 and "Cannot read the queue" in page.text
        assert "is a folder" in page.text and 'id="live"' in page.text  # keeps refreshing
        partial = client.get("/?partial=1")
        assert partial.status_code == 503 and "<html" not in partial.text


def test_on_cloudflare_the_page_and_metrics_show_what_can_be_told(cloudflare, docutrain):
    """Cloudflare Queues tells no per-state counts: the page shows them as
    unknown, /metrics has no sample for them, and the dead jobs still show."""
    import time as clock

    from dashboard_server import settings_for

    from docutrain_cli.jobs import Job
    from docutrain_cli.queues import open_queue

    cloudflare.create_queue("dead0001", max_retries=100)
    cloudflare.create_queue("main0001", max_retries=3, dead_letter_queue="dead0001")
    settings = settings_for(
        docutrain, queue=f"cloudflare://{cloudflare.account_id}/main0001", cloudflare_api_token=cloudflare.token,
        cloudflare_dead_queue="dead0001", cloudflare_api_url=cloudflare.url,
    )
    with open_queue(settings) as queue:
        queue.enqueue([Job(id=0, source=f"/data/{name}.pdf", sha256=name) for name in ("a", HOSTILE, "c")])
        leased = queue.lease(3, clock.time())
        hostile = next(j for j in leased if HOSTILE in j.source)
        queue.bury(hostile, f"{hostile.source}: not a PDF")
        for job in leased:
            if job is not hostile:
                queue.release(job)
    overrides = {k: getattr(settings, k) for k in ("queue", "cloudflare_api_token", "cloudflare_dead_queue", "cloudflare_api_url")}
    with dashboard(docutrain, **overrides) as url, httpx.Client(base_url=url) as client:
        login(client)
        page = client.get("/")
        assert page.status_code == 200, page.text
        assert 'id="count-queued">–<' in page.text and 'id="count-dead">1<' in page.text
        assert "&lt;img src=x onerror=alert(1)&gt;.pdf" in page.text and "<img" not in page.text
        assert cloudflare.token not in page.text
        metrics = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    assert 'docutrain_jobs{state="dead"} 1.0' in metrics and 'state="queued"' not in metrics
    assert "docutrain_jobs_unfinished 2.0" in metrics
    # No record of its own to count events from: no counter (the dead jobs are a state, above).
    assert "docutrain_jobs_finished_total" not in metrics and "docutrain_job_duration_seconds" not in metrics


def test_the_page_shows_who_is_waiting_and_their_share(docutrain):
    """Issue 21: the users with queued work, their documents and tokens, and
    their share of the last hour's tokens; the order and the depth per priority."""
    done = docutrain.workdir / "done"
    done.mkdir()
    multi_page(done / "served.pdf", pages=2, seed=1)
    assert docutrain("enqueue", str(done), "--user-id", "carol").returncode == 0
    assert docutrain("run", "--drain", "--workers", "1").returncode == 0
    waiting = docutrain.workdir / "waiting"
    waiting.mkdir()
    for i in range(3):
        multi_page(waiting / f"alice-{i}.pdf", pages=3, seed=10 + i)
    multi_page(waiting / "bob.pdf", pages=1, seed=20)
    assert docutrain("enqueue", *(str(waiting / f"alice-{i}.pdf") for i in range(3)), "--user-id", "alice").returncode == 0
    assert docutrain("enqueue", str(waiting / "bob.pdf"), "--user-id", "bob", "--priority", "high").returncode == 0
    with dashboard(docutrain, token=TOKEN) as url, httpx.Client(base_url=url) as client:
        assert login(client).status_code in (200, 303)
        page = client.get("/").text
    section = page[page.index('id="line"'):page.index('aria-label="Dead jobs"')]
    assert "order: <strong>fair</strong>" in section and "high 1" in section and "normal 3" in section
    rows = re.findall(r'<td data-label="user" class="file">([^<]+)</td>\s*<td data-label="queued documents">(\d+)</td>', section)
    assert dict(rows) == {"alice": "3", "bob": "1"}
    assert section.count("0%") >= 2  # neither has been served in the last hour; carol was

"""`docutrain serve` over real HTTP: uvicorn on 127.0.0.1 (port 0), httpx as
the client, the real queue underneath (a SQLite file; pgmq in PostgreSQL for
the idempotency test). Routes, every error status, auth, the 64 KB limit,
idempotency under concurrent requests, each Supabase webhook payload shape,
and a `kill -9` right after a 202."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import signal
import time

import httpx
import pytest
from serving import TOKEN, ServeThread, start_serve_process, with_supabase

from docutrain_cli.config import Settings
from docutrain_cli.jobs import JobState
from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.serve import ServeOptions


@pytest.fixture
def settings(tmp_path, supabase_standin) -> Settings:
    return Settings(queue=str(tmp_path / "queue.db"), store=str(tmp_path / "docutrain.db"), serve_token=TOKEN,
                    **with_supabase(supabase_standin))


@pytest.fixture
def server(settings):
    serving = ServeThread(settings)
    yield serving
    serving.close()


@pytest.fixture
def api(server):
    with server.client() as client:
        yield client


def doc(document_id: str = "doc-1", **extra) -> dict:
    return {"user_document_id": document_id, "user_id": "user-1", "storage_path": f"user-1/{document_id}.pdf", **extra}


def queued(settings) -> list:
    with LocalQueue(settings.queue) as queue:
        return queue.jobs(limit=1000)


# -- POST /v1/documents ----------------------------------------------------------------------


def test_post_document_commits_a_job_and_answers_202(api, settings):
    answer = api.post("/v1/documents", json=doc(metadata={"title": "Q3 report"}))
    assert answer.status_code == 202
    body = answer.json()
    assert body == {"success": True, "job_id": body["job_id"], "user_document_id": "doc-1",
                    "status": "pending", "created": True}
    [job] = queued(settings)
    assert (job.id, job.document_id, job.user_id, job.state) == (body["job_id"], "doc-1", "user-1", JobState.QUEUED)
    assert job.source == "supabase://documents/user-1/doc-1.pdf"  # a Storage path in storage_bucket
    assert job.metadata == {"title": "Q3 report"}


def test_same_document_while_active_gets_the_same_job_and_a_new_one_once_finished(api, settings):
    first = api.post("/v1/documents", json=doc()).json()["job_id"]
    again = api.post("/v1/documents", json=doc()).json()
    assert (again["job_id"], again["created"]) == (first, False)
    with LocalQueue(settings.queue) as queue:  # a runner takes it: running, still the same job
        [job] = queue.lease(1, time.time())
        assert api.post("/v1/documents", json=doc()).json() | {"job_id": first} == again | {"status": "processing"}
        queue.complete(job)
    later = api.post("/v1/documents", json=doc()).json()
    assert later["created"] and later["job_id"] != first  # done: an upload again is new work
    assert api.post("/v1/documents", json=doc("doc-2")).json()["created"]


def post_at_once(server: ServeThread, threads: int, document_ids: list[str]) -> list[int]:
    """POST each document from `threads` threads at once; the job id each answer names."""
    def post(document_id: str) -> int:
        with server.client() as client:
            answer = client.post("/v1/documents", json=doc(document_id))
            assert answer.status_code == 202, answer.text
            return answer.json()["job_id"]

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, document_ids))


def test_concurrent_posts_of_one_document_make_one_job(server, settings):
    """32 threads post the same document at once (the server runs them on
    8 queue handles, i.e. 8 SQLite connections), then 4 other documents."""
    ids = post_at_once(server, 32, ["same"] * 64 + [f"other-{i % 4}" for i in range(32)])
    assert len(set(ids[:64])) == 1
    jobs = queued(settings)
    assert sorted(j.document_id for j in jobs) == ["other-0", "other-1", "other-2", "other-3", "same"]


def test_concurrent_posts_on_pgmq_make_one_job(pg_url, pgmq_queue_name, settings):
    from docutrain_cli.queues.pgmq import PgmqQueue

    settings = settings.replace(queue=pg_url, queue_name=pgmq_queue_name)
    serving = ServeThread(settings)
    try:
        ids = post_at_once(serving, 16, ["same"] * 48 + ["other"] * 16)
    finally:
        serving.close()
    assert len(set(ids[:48])) == 1 and len(set(ids[48:])) == 1
    with PgmqQueue(pg_url, pgmq_queue_name) as queue:
        assert sorted(j.document_id for j in queue.jobs(limit=100)) == ["other", "same"]


def test_local_paths_are_refused_unless_allowed(api, settings, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    for path in (str(secret), "./secret.txt", "file://" + str(secret), "~/.ssh/id_rsa"):
        answer = api.post("/v1/documents", json=doc(storage_path=path))
        assert answer.status_code == 422 and "--allow-local-paths" in answer.json()["error"], path
    assert queued(settings) == []

    allowing = ServeThread(settings, ServeOptions(allow_local_paths=str(tmp_path)))
    try:
        with allowing.client() as client:
            answer = client.post("/v1/documents", json=doc(storage_path=str(secret)))
            assert answer.status_code == 202
            missing = client.post("/v1/documents", json=doc("d2", storage_path=str(tmp_path / "nope.pdf")))
            assert missing.status_code == 422 and "no such file" in missing.json()["error"]
    finally:
        allowing.close()
    [job] = queued(settings)
    assert job.source == str(secret.resolve()) and job.sha256  # hashed like `docutrain enqueue`


def test_a_storage_path_without_supabase_is_422_at_the_door(settings):
    """The README's first curl on a machine without Supabase: the job could
    only go dead ("Supabase is not configured"), so serve says so at once."""
    bare = ServeThread(settings.replace(supabase_url=None, supabase_service_role_key=None))
    try:
        with bare.client() as client:
            for path in ("user-1/report.pdf", "supabase://documents/user-1/report.pdf"):
                answer = client.post("/v1/documents", json=doc(storage_path=path))
                assert answer.status_code == 422, answer.text
                reason = answer.json()["error"]
                assert "Supabase is not configured" in reason and "SUPABASE_URL" in reason
                assert "--allow-local-paths DIR" in reason  # what to do instead
            hook = {"type": "INSERT", "table": "user_documents", "schema": "public", "old_record": None,
                    "record": {"id": "d1", "user_id": "u7", "status": "pending", "storage_path": "u7/a.pdf"}}
            answer = client.post("/v1/webhooks/supabase", json=hook)
            assert answer.status_code == 422 and "Supabase is not configured" in answer.json()["error"]
    finally:
        bare.close()
    assert queued(settings) == []


def test_a_custom_processor_may_take_storage_paths_without_supabase(settings):
    """Another processor reads its sources its own way: serve cannot tell it would fail."""
    custom = settings.replace(supabase_url=None, supabase_service_role_key=None, processor="tests.processors:record")
    serving = ServeThread(custom)
    try:
        with serving.client() as client:
            assert client.post("/v1/documents", json=doc()).status_code == 202
    finally:
        serving.close()
    assert [job.source for job in queued(settings)] == ["supabase://documents/user-1/doc-1.pdf"]


def test_without_storage_path_the_row_is_looked_up_in_supabase(supabase_standin, tmp_path):
    project = supabase_standin.project
    row = project.add_document("pending", storage_path="u9/report.pdf")
    bare = project.add_document("pending")
    settings = Settings(queue=str(tmp_path / "q.db"), store=str(tmp_path / "s.db"), serve_token=TOKEN,
                        supabase_url=supabase_standin.url, supabase_service_role_key=supabase_standin.key)
    serving = ServeThread(settings)
    try:
        with serving.client() as client:
            assert client.post("/v1/documents", json={"user_document_id": row, "user_id": "u9"}).status_code == 202
            answer = client.post("/v1/documents", json={"user_document_id": bare, "user_id": "u9"})
            assert answer.status_code == 422 and "has no storage_path" in answer.json()["error"]
    finally:
        serving.close()
    [job] = queued(settings)
    assert job.source == "supabase://documents/u9/report.pdf"


def test_without_storage_path_or_supabase_it_is_422(settings):
    bare = ServeThread(settings.replace(supabase_url=None, supabase_service_role_key=None))
    try:
        with bare.client() as client:
            answer = client.post("/v1/documents", json={"user_document_id": "d", "user_id": "u"})
    finally:
        bare.close()
    assert answer.status_code == 422 and "storage_path is required" in answer.json()["error"]


# -- reading -----------------------------------------------------------------------------------


def test_job_document_status_and_retry_routes(api, settings, docutrain):
    before = time.time()
    job_id = api.post("/v1/documents", json=doc()).json()["job_id"]
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert (job["id"], job["state"], job["document_id"]) == (job_id, "queued", "doc-1")
    # Times are ISO 8601 with the zone, as Supabase rows have them; none yet is null.
    enqueued = datetime.datetime.fromisoformat(job["enqueued_at"])
    assert enqueued.utcoffset() == datetime.timedelta(0) and job["enqueued_at"].endswith("+00:00")
    assert before - 1 <= enqueued.timestamp() <= time.time() + 1
    assert (job["started_at"], job["finished_at"], job["not_before"]) == (None, None, None)
    document = api.get("/v1/documents/doc-1").json()
    assert (document["status"], document["job_id"], document["job_ids"]) == ("pending", job_id, [job_id])

    retry = api.post(f"/v1/jobs/{job_id}/retry")
    assert retry.status_code == 409 and "queued, not dead" in retry.json()["error"]
    with LocalQueue(settings.queue) as queue:
        [leased] = queue.lease(1, time.time())
        queue.bury(leased, "u1/doc-1.pdf: broken")
    document = api.get("/v1/documents/doc-1").json()
    assert document["status"] == "error"
    assert document["job"]["finished_at"] == api.get(f"/v1/jobs/{job_id}").json()["finished_at"]
    assert datetime.datetime.fromisoformat(document["job"]["finished_at"]).timestamp() >= before - 1
    assert api.post(f"/v1/jobs/{job_id}/retry").json() == {"success": True, "job_id": job_id, "state": "queued"}
    assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"

    status = api.get("/v1/status").json()
    cli = docutrain("status", "--json", DOCUTRAIN_QUEUE=settings.queue, DOCUTRAIN_STORE=settings.store)
    expected = json.loads(cli.stdout)
    for volatile in ("oldest_queued_age_seconds",):
        status.pop(volatile), expected.pop(volatile)
    assert status == expected and status["queued"] == 1


def test_an_upload_is_high_priority_and_says_where_it_stands_in_line(settings):
    settings = settings.replace(embedding_tpm=60_000, embedder="offline")
    from docutrain_cli.jobs import Job
    from docutrain_cli.queues.fair import order_for

    with LocalQueue(settings.queue, order=order_for(settings)) as queue:  # another user's backfill, waiting
        queue.enqueue([Job(id=0, source=f"/d/{i}.pdf", user_id="alice", priority="low", cost=3000) for i in range(5)])
    serving = ServeThread(settings)
    try:
        with serving.client() as api:
            first = api.post("/v1/documents", json=doc("doc-1")).json()["job_id"]
            second = api.post("/v1/documents", json=doc("doc-2", priority="low")).json()["job_id"]
            job = api.get(f"/v1/jobs/{first}").json()
            assert (job["priority"], job["position"]) == ("high", 0)  # before the whole backfill
            assert job["eta_seconds"] is not None and job["eta_seconds"] >= 0
            document = api.get("/v1/documents/doc-2").json()
            # after the high one, then fair with alice: behind her first only (it came first, at the same vstart)
            assert (document["job"]["priority"], document["position"]) == ("low", 2)
            assert document["tokens_ahead"] == settings.remote_job_tokens + 3000
            with LocalQueue(settings.queue) as queue:
                [leased] = queue.lease(1, time.time())
            assert leased.id == first
            running = api.get(f"/v1/jobs/{first}").json()
            assert (running["state"], running["position"], running["eta_seconds"]) == ("running", None, None)
            status = api.get("/v1/status").json()
            assert status["lease_order"] == "fair"
            assert status["queued_by_priority"] == {"high": 0, "normal": 0, "low": 6}
            assert {u["user_id"]: u["queued"] for u in status["users"]} == {"alice": 5, "user-1": 1}
            assert api.get(f"/v1/jobs/{second}").json()["position"] == 1  # the high one is running now
    finally:
        serving.close()


def test_health_and_readiness(server, api):
    with server.client(token=None) as anonymous:
        assert anonymous.get("/healthz").json() == {"ok": True}
        assert anonymous.get("/readyz").status_code == 401
    assert api.get("/readyz").json() == {"ok": True, "queue": "local"}


def test_readiness_names_the_queue_as_the_queue_describes_itself(cloudflare, tmp_path):
    """A Cloudflare queue is "cloudflare" in /readyz (serve once rebuilt the
    kind from the URL itself and said "local")."""
    cloudflare.create_queue("dead0001", max_retries=100)
    cloudflare.create_queue("main0001", max_retries=3, dead_letter_queue="dead0001")
    settings = Settings(
        queue=f"cloudflare://{cloudflare.account_id}/main0001", store=str(tmp_path / "docutrain.db"),
        serve_token=TOKEN, cloudflare_api_token=cloudflare.token, cloudflare_dead_queue="dead0001",
        cloudflare_api_url=cloudflare.url,
    )
    serving = ServeThread(settings)
    try:
        with serving.client(token=None) as anonymous:
            assert anonymous.get("/healthz").json() == {"ok": True}
        with serving.client() as client:
            ready = client.get("/readyz")
    finally:
        serving.close()
    assert ready.json() == {"ok": True, "queue": "cloudflare"}, ready.text


def test_unreachable_queue_is_503_with_the_reason_and_no_secret(settings):
    url = "postgresql://docutrain:hunter2-secret@127.0.0.1:1/nowhere"
    settings = settings.replace(queue=url)
    serving = ServeThread(settings)
    try:
        with serving.client() as client:
            ready = client.get("/readyz")
            posted = client.post("/v1/documents", json=doc())
            assert client.get("/healthz").status_code == 200  # the process itself is fine
    finally:
        serving.close()
    for answer in (ready, posted):
        assert answer.status_code == 503, answer.text
        assert "cannot reach the queue database" in answer.json()["error"]
        assert "hunter2" not in answer.text


# -- auth ----------------------------------------------------------------------------------------


def test_every_route_but_healthz_needs_the_token(server):
    routes = [("POST", "/v1/documents"), ("POST", "/v1/webhooks/supabase"), ("GET", "/v1/jobs/1"),
              ("POST", "/v1/jobs/1/retry"), ("GET", "/v1/documents/x"), ("GET", "/v1/status"),
              ("GET", "/readyz"), ("GET", "/no/such/route")]
    for n, token in enumerate((None, "wrong-token", TOKEN[:-1], TOKEN + "x")):
        with server.client(token=token) as client:
            for m, (method, path) in enumerate(routes):
                # each guess from its own address: ten from one are throttled (test_serve_throttle.py)
                client.headers["x-forwarded-for"] = f"198.51.100.{n * len(routes) + m}"
                answer = client.request(method, path, json=doc())
                assert answer.status_code == 401, (token, method, path)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert TOKEN not in answer.text
    with server.client(token=None) as client:  # the secret header counts only for the webhook
        headers = {"X-Docutrain-Secret": TOKEN}
        assert client.post("/v1/documents", json=doc(), headers=headers).status_code == 401
        hook = {"type": "DELETE", "table": "user_documents", "record": None, "old_record": {"id": "x"}}
        assert client.post("/v1/webhooks/supabase", json=hook, headers=headers).status_code == 200
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("with_token", [True, False])
def test_the_start_line_says_where_the_dashboard_is_and_how_to_log_in(docutrain, with_token):
    env = {"DOCUTRAIN_SERVE_TOKEN": TOKEN} if with_token else {}
    proc = docutrain.start("serve", "--port", "0", **env)
    try:
        line = proc.stderr.readline().strip()
        port = line.split("listening on http://127.0.0.1:", 1)[1].split()[0]
        assert f"(queue {docutrain.queue})" in line
        dashboard = f"http://127.0.0.1:{port}/"
        if with_token:
            assert line.endswith(f"dashboard: {dashboard} (log in with the token in DOCUTRAIN_SERVE_TOKEN)"), line
            assert TOKEN not in line and TOKEN[:8] not in line
        else:
            assert line.endswith(f"dashboard: {dashboard} (no login: without serve_token only this machine reaches it)")
        page = httpx.get(dashboard, follow_redirects=True)
        assert page.status_code == 200 and "docutrain" in page.text  # the login page, or the dashboard itself
        assert ('name="token"' in page.text) == with_token, page.text[:500]
    finally:
        proc.kill()
        proc.wait()


def test_serve_refuses_a_public_address_without_a_token(docutrain):
    result = docutrain("serve", "--host", "0.0.0.0", "--port", "0", timeout=30)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr


def test_without_a_token_loopback_is_open(settings, tmp_path):
    serving = ServeThread(settings.replace(serve_token=None))
    try:
        with serving.client(token=None) as client:
            assert client.post("/v1/documents", json=doc()).status_code == 202
    finally:
        serving.close()


# -- errors --------------------------------------------------------------------------------------


def test_error_statuses_are_json(api, server):
    def error(answer, status: int, text: str) -> None:
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert text in answer.json()["error"]
        assert "Traceback" not in answer.text

    error(api.post("/v1/documents", content=b"{not json", headers={"Content-Type": "application/json"}), 400, "not valid JSON")
    error(api.post("/v1/documents", content=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400, "not valid JSON")
    error(api.post("/v1/documents", content=json.dumps(doc()), headers={"Content-Type": "text/plain"}), 415, "JSON")
    error(api.post("/v1/documents", content=json.dumps(doc())), 415, "JSON")  # no content type
    error(api.post("/v1/documents", json=[doc()]), 422, "JSON object")
    error(api.post("/v1/documents", json={"user_id": "u"}), 422, "user_document_id is required")
    error(api.post("/v1/documents", json={"user_document_id": "d"}), 422, "user_id is required")
    error(api.post("/v1/documents", json=doc(user_document_id=["x"])), 422, "must be a string")
    error(api.post("/v1/documents", json=doc(metadata="x")), 422, "metadata must be a JSON object")
    for bad in ("urgent", "", None, 1, ["high"], {"level": "high"}):
        error(api.post("/v1/documents", json=doc(priority=bad)), 422, "priority must be one of high, normal, low")
    error(api.post("/v1/documents", json=doc(storage_path="supabase://only-bucket")), 422, "storage_path")
    error(api.get("/v1/jobs/999"), 404, "no such job")
    error(api.get("/v1/jobs/abc"), 404, "no such route")
    error(api.get("/v1/documents/nobody"), 404, "no job for document")
    error(api.post("/v1/jobs/999/retry"), 404, "no such job")
    error(api.get("/v2/anything"), 404, "no such route")
    error(api.get("/v1/documents"), 405, "method GET not allowed")
    error(api.delete("/v1/status"), 405, "not allowed")


def test_bodies_over_64_kb_are_413_declared_or_streamed(api, settings):
    big = doc(metadata={"blob": "x" * 70_000})
    answer = api.post("/v1/documents", json=big)
    assert answer.status_code == 413 and "64 KB" in answer.json()["error"]

    def chunks():  # no Content-Length: chunked transfer encoding
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    answer = api.post("/v1/documents", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    just_under = doc(metadata={"blob": "x" * (64 * 1024 - 200)})
    assert len(json.dumps(just_under)) <= 64 * 1024
    assert api.post("/v1/documents", json=just_under).status_code == 202
    assert len(queued(settings)) == 1


def test_an_unexpected_error_is_500_without_details(server, api):
    async def broken(document_id, storage_path):
        raise RuntimeError("internal detail with a secret: sk-live-123")

    server.app.state.resolve_source = broken
    answer = api.post("/v1/documents", json=doc())
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error"}


# -- the Supabase webhook ---------------------------------------------------------------------------


def hook(event: str, record: dict | None, old: dict | None = None, table: str = "user_documents") -> dict:
    return {"type": event, "table": table, "schema": "public", "record": record, "old_record": old}


def row(status: str = "pending", **extra) -> dict:
    return {"id": "6f1c3a52-9f0e-4a7e-8a38-3b3c0f9d1a01", "user_id": "u7", "status": status,
            "storage_path": "u7/upload.pdf", **extra}


def test_supabase_webhook_payload_shapes(server, settings):
    with server.client(token=None) as client:
        headers = {"X-Docutrain-Secret": TOKEN}

        def send(payload: dict) -> httpx.Response:
            return client.post("/v1/webhooks/supabase", json=payload, headers=headers)

        inserted = send(hook("INSERT", row()))
        assert inserted.status_code == 202 and inserted.json()["created"] is True
        job_id = inserted.json()["job_id"]
        # The same row updated while its job waits: no second job.
        again = send(hook("UPDATE", row(), row()))
        assert (again.status_code, again.json()["job_id"], again.json()["created"]) == (202, job_id, False)
        for payload, reason in [
            (hook("UPDATE", row("processing"), row()), "status is 'processing'"),
            (hook("UPDATE", row("ready"), row("processing")), "status is 'ready'"),
            (hook("INSERT", row(), table="profiles"), "table profiles is not user_documents"),
            (hook("DELETE", None, row()), "deleted row"),
            (hook("INSERT", row(storage_path=None)), "no storage_path"),
        ]:
            answer = send(payload)
            assert answer.status_code == 200 and answer.json() == {"success": True, "queued": False,
                                                                   "reason": answer.json()["reason"]}
            assert reason in answer.json()["reason"]
        for garbage in ({"hello": "world"}, hook("TRUNCATE", None), hook("INSERT", {"status": "pending"})):
            assert send(garbage).status_code == 422
    [job] = queued(settings)
    assert (job.id, job.document_id, job.user_id, job.source) == (
        job_id, row()["id"], "u7", "supabase://documents/u7/upload.pdf")

    with LocalQueue(settings.queue) as queue:  # processed, then the app sets it back to pending
        [leased] = queue.lease(1, time.time())
        queue.bury(leased, "u7/upload.pdf: broken")
    with server.client() as client:  # bearer works on the webhook route too
        requeued = client.post("/v1/webhooks/supabase", json=hook("UPDATE", row(), row("error")))
    assert requeued.status_code == 202 and requeued.json()["job_id"] != job_id


# -- durability ----------------------------------------------------------------------------------------


def test_kill_9_right_after_a_202_loses_nothing(docutrain, supabase_standin):
    proc, url = start_serve_process(docutrain, DOCUTRAIN_SERVE_TOKEN=TOKEN, SUPABASE_URL=supabase_standin.url,
                                    SUPABASE_SERVICE_ROLE_KEY=supabase_standin.key)  # Storage paths are welcome
    accepted = []
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            for i in range(20):
                answer = client.post("/v1/documents", json=doc(f"k{i}"))
                assert answer.status_code == 202
                accepted.append(answer.json()["job_id"])
            os.kill(proc.pid, signal.SIGKILL)  # at once after the last 202
    finally:
        proc.kill()
        proc.wait()
    with LocalQueue(docutrain.queue) as queue:
        jobs = {job.id: job.document_id for job in queue.jobs(limit=100)}
    assert jobs == {job_id: f"k{i}" for i, job_id in enumerate(accepted)}


def test_closing_the_handles_never_closes_one_from_under_its_call(tmp_path):
    """Server shutdown while a request is in a queue call: that handle is
    closed by its own thread when the call returns, the idle ones at once."""
    import sqlite3
    import threading

    import anyio

    from docutrain_cli.serve.handles import QueueHandles

    def is_closed(queue) -> bool:
        try:
            queue.stats(time.time())
        except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
            return True
        return False

    handles = QueueHandles(Settings(queue=str(tmp_path / "q.db"), store=str(tmp_path / "s.db")))
    in_call, go_on, busy, idle = threading.Event(), threading.Event(), [], []

    def slow(queue):
        busy.append(queue)
        in_call.set()
        go_on.wait(30)
        return queue.stats(time.time()).counts["queued"]  # fails if closed meanwhile

    async def shut_down_during_a_call():
        async with anyio.create_task_group() as tg:
            tg.start_soon(handles.call, slow)
            try:
                await anyio.to_thread.run_sync(in_call.wait)
                await handles.call(idle.append)  # a second handle, idle again after this
                handles.close()
                assert is_closed(idle[0]) and not is_closed(busy[0])
            finally:
                go_on.set()

    anyio.run(shut_down_during_a_call)
    assert busy[0] is not idle[0] and is_closed(busy[0])  # closed when its call returned

"""The edge Worker in Cloudflare's own runtime: cloudflare/worker.js runs in
workerd through Miniflare 4, configured from cloudflare/wrangler.toml (its
push set-up), with a real queue, a real rate limiter and a real push consumer
that POSTs to a real `docutrain serve` (Supabase stand-in behind it, a proxy
in front that can answer errors). Upload -> /enqueue -> queue -> queue() ->
serve -> `docutrain run --drain` -> ready."""

from __future__ import annotations

import itertools
import json
import types
import uuid

import httpx
import pytest
from conftest import Docutrain, wait_for
from edge_worker import CLOUDFLARE, EdgeWorker, FaultyProxy, require_miniflare, wrangler_config
from pdfs import multi_page
from serving import TOKEN, start_serve_process
from supabase_standin import StandIn

ENQUEUE_TOKEN = "edge-enqueue-token-0123456789abcdef0123"
LIMITS = {"USER_INTAKE_LIMIT": 3, "ADDRESS_INTAKE_LIMIT": 5}  # small, to reach them
_seeds = itertools.count(1)


def worker_config(proxy_url: str) -> dict:
    deployed, push = wrangler_config()
    assert push["vars"]["DOCUTRAIN_URL"].startswith("https://")
    [consumer] = push["queues"]["consumers"]
    assert {r["name"] for r in deployed["ratelimits"]} == set(LIMITS)
    return {
        "worker": str(CLOUDFLARE / deployed["main"]),
        "compatibility_date": deployed["compatibility_date"],
        "vars": {"ENQUEUE_TOKEN": ENQUEUE_TOKEN, "DOCUTRAIN_URL": proxy_url, "DOCUTRAIN_TOKEN": TOKEN},
        "producers": {p["binding"]: p["queue"] for p in deployed["queues"]["producers"]},
        "consumer": {
            "queue": consumer["queue"],
            "maxBatchSize": consumer["max_batch_size"],
            "maxBatchTimeout": consumer["max_batch_timeout"],
            "maxRetries": consumer["max_retries"],
            "deadLetterQueue": consumer["dead_letter_queue"],
        },
        "ratelimits": {
            r["name"]: {"limit": LIMITS[r["name"]], "period": r["simple"]["period"]} for r in deployed["ratelimits"]
        },
    }


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    node = require_miniflare()
    standin = StandIn()
    docutrain = Docutrain(tmp_path_factory.mktemp("edge"))
    env = dict(SUPABASE_URL=standin.url, SUPABASE_SERVICE_ROLE_KEY=standin.key,
               DOCUTRAIN_EMBEDDER="offline", DOCUTRAIN_WORKERS="2")
    serve, serve_url = start_serve_process(docutrain, DOCUTRAIN_SERVE_TOKEN=TOKEN, **env)
    proxy = FaultyProxy(serve_url)
    worker = None
    try:
        worker = EdgeWorker(node, worker_config(proxy.url))
        yield types.SimpleNamespace(worker=worker, proxy=proxy, serve_url=serve_url, standin=standin,
                                    docutrain=docutrain, env=env)
    finally:
        if worker is not None:
            worker.close()
        proxy.close()
        serve.terminate()
        serve.wait(20)
        standin.close()


def upload(edge, user_id: str | None = None) -> dict:
    """A real PDF in the stand-in's Storage and its `pending` row: the /enqueue body."""
    user_id = user_id or str(uuid.uuid4())
    seed = next(_seeds)
    path = multi_page(edge.docutrain.workdir / f"upload{seed}.pdf", pages=2, seed=seed)
    storage_path = f"{user_id}/upload{seed}.pdf"
    edge.standin.project.put_object("documents", storage_path, path.read_bytes())
    document_id = edge.standin.project.add_document("pending", user_id=user_id, storage_path=storage_path)
    return {"user_document_id": document_id, "user_id": user_id, "storage_path": storage_path}


def enqueue(edge, body: dict, address: str, token: str = ENQUEUE_TOKEN) -> httpx.Response:
    # Cloudflare sets CF-Connecting-IP; Miniflare passes the test's through.
    headers = {"Authorization": f"Bearer {token}", "CF-Connecting-IP": address}
    return httpx.post(f"{edge.worker.url}/enqueue", json=body, headers=headers, timeout=30)


def at_serve(edge, document_id: str) -> dict | None:
    response = httpx.get(f"{edge.serve_url}/v1/documents/{document_id}",
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    return response.json() if response.status_code == 200 else None


def drain_until_ready(edge, document_id: str) -> None:
    result = edge.docutrain("run", "--drain", **edge.env)
    assert result.returncode == 0, result.stderr
    assert at_serve(edge, document_id)["status"] == "ready"
    [row] = [r for r in edge.standin.project.rows("user_documents") if r["id"] == document_id]
    assert row["status"] == "ready" and row["chunk_count"] > 0
    chunks = [c for c in edge.standin.project.rows("document_chunks") if c["user_document_id"] == document_id]
    assert len(chunks) == row["chunk_count"]


def assert_no_secret_logged(edge) -> None:
    output = "\n".join(edge.worker.output())
    assert TOKEN not in output and ENQUEUE_TOKEN not in output


def test_an_upload_goes_through_the_queue_and_the_push_consumer_to_serve_and_ends_ready(edge):
    body = upload(edge)
    document_id = body["user_document_id"]
    response = enqueue(edge, body, address="192.0.2.10")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"

    document = wait_for(lambda: at_serve(edge, document_id), 30, "the push consumer to deliver the document")
    assert document["status"] in ("pending", "processing") and len(document["job_ids"]) == 1
    [call] = edge.proxy.calls_for(document_id)
    assert (call.path, call.status) == ("/v1/documents", 202)
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["idempotency-key"] == document_id
    assert call.body == body

    drain_until_ready(edge, document_id)
    assert_no_secret_logged(edge)


def test_the_intake_limits_answer_429_with_retry_after_per_user_and_per_address(edge):
    # Per address, before the token: guessing is throttled, then even the right token waits.
    blocked = upload(edge)
    guesses = [enqueue(edge, blocked, "203.0.113.7", token=f"guess-{i}").status_code for i in range(5)]
    assert guesses == [401] * 5
    refused = enqueue(edge, blocked, "203.0.113.7")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    assert "client address" in refused.json()["error"]

    # Per user: the fourth upload of one user in a minute waits; another user does not.
    user_id = str(uuid.uuid4())
    bodies = [upload(edge, user_id) for _ in range(4)]
    answers = [enqueue(edge, body, "198.51.100.1") for body in bodies]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[3].headers["retry-after"] == "60" and "user" in answers[3].json()["error"]
    other = upload(edge)
    assert enqueue(edge, other, "198.51.100.2").status_code == 202

    # The accepted ones reach serve; the refused ones were never queued.
    for body in [*bodies[:3], other]:
        wait_for(lambda: at_serve(edge, body["user_document_id"]), 30, "the accepted uploads to reach serve")
    for body in (blocked, bodies[3]):
        assert edge.proxy.calls_for(body["user_document_id"]) == []
        assert at_serve(edge, body["user_document_id"]) is None


def test_a_429_or_5xx_from_serve_is_retried_after_its_retry_after_and_the_document_ends_ready(edge):
    body = upload(edge)
    document_id = body["user_document_id"]
    edge.proxy.fail(document_id, 429, {"retry-after": "1"})
    edge.proxy.fail(document_id, 503, {"retry-after": "1"})
    assert enqueue(edge, body, address="192.0.2.20").status_code == 202

    document = wait_for(lambda: at_serve(edge, document_id), 60, "the retried delivery to reach serve")
    assert len(document["job_ids"]) == 1
    calls = edge.proxy.calls_for(document_id)
    assert [c.status for c in calls] == [429, 503, 202]
    assert all(later.at - earlier.at >= 0.95 for earlier, later in zip(calls, calls[1:]))  # Retry-After: 1
    output = edge.worker.output()
    for delivery, status in ((1, 429), (2, 503)):
        expected = f"push: document {document_id}: docutrain serve answered {status}: injected by the test; " \
                   f"retried in 1 s (delivery {delivery})"
        assert expected in output

    drain_until_ready(edge, document_id)


def test_no_answer_from_serve_is_retried_with_a_backoff(edge):
    body = upload(edge)
    document_id = body["user_document_id"]
    edge.proxy.fail(document_id, 0)  # the connection closes unanswered
    assert enqueue(edge, body, address="192.0.2.25").status_code == 202

    wait_for(lambda: at_serve(edge, document_id), 60, "the retried delivery to reach serve")
    calls = edge.proxy.calls_for(document_id)
    assert [c.status for c in calls] == [0, 202]
    [line] = [line for line in edge.worker.output() if line.startswith(f"push: document {document_id}: ")]
    assert "cannot reach docutrain serve" in line and line.endswith("(delivery 1)")
    delay = int(line.split("retried in ")[1].split(" s")[0])
    assert 5 <= delay <= 10  # the first backoff: 10 s, spread over its upper half
    assert calls[1].at - calls[0].at >= delay - 0.05


def test_a_document_serve_refuses_goes_to_the_dead_letter_queue_with_serve_s_reason(edge):
    # No row and no storage_path: serve cannot tell which file it is (422).
    document_id = str(uuid.uuid4())
    body = {"user_document_id": document_id, "user_id": str(uuid.uuid4())}
    assert enqueue(edge, body, address="192.0.2.30").status_code == 202

    dead = wait_for(lambda: [d for d in edge.worker.dead_letters() if d.get("user_document_id") == document_id],
                    30, "the refused document in the dead-letter queue")
    [record] = dead
    assert record["dead"] is True and record["attempts"] == 1 and record["user_id"] == body["user_id"]
    [reason] = record["errors"]
    assert reason.startswith("push consumer: docutrain serve answered 422: ") and document_id in reason
    assert [c.status for c in edge.proxy.calls_for(document_id)] == [422]  # not retried: it cannot succeed
    assert at_serve(edge, document_id) is None
    assert any(line.startswith(f"push: document {document_id}: ") and line.endswith("moved to the dead-letter queue")
               for line in edge.worker.output())
    assert_no_secret_logged(edge)


def test_attacks_on_enqueue_get_a_4xx_in_workerd_and_queue_nothing(edge):
    good = upload(edge)
    document_id = good["user_document_id"]
    url = f"{edge.worker.url}/enqueue"
    auth = {"Authorization": f"Bearer {ENQUEUE_TOKEN}"}
    attacks = [
        ("POST", url, auth, b"not json", 400),
        ("POST", url, auth, b'{"user_document_id": ' + b"9" * 5000 + b', "user_id": "u"}', 400),
        ("POST", url, auth, b'{"user_document_id": NaN, "user_id": "u"}', 400),
        ("POST", url, auth, b"[" * 20_000 + b"]" * 20_000, 400),
        ("POST", url, auth, json.dumps({**good, "user_document_id": "x" * 2000}).encode(), 400),
        ("POST", url, auth, json.dumps({**good, "pad": "x" * 70_000}).encode(), 413),
        ("POST", url, {"Authorization": "Bearer " + "é" * 40}, json.dumps(good).encode(), 401),
        ("POST", url, {}, json.dumps(good).encode(), 401),
        ("GET", url, auth, b"", 405),
        ("POST", f"{edge.worker.url}/enqueue/../admin", auth, json.dumps(good).encode(), 404),
    ]
    for number, (method, target, headers, content, expected) in enumerate(attacks):
        headers = {**{k: v.encode() for k, v in headers.items()}, "CF-Connecting-IP": f"192.0.2.{100 + number}"}
        response = httpx.request(method, target, headers=headers, content=content or None, timeout=30)
        assert response.status_code == expected, (number, response.text)
        assert response.json()["success"] is False and response.json()["error"]
    # The Worker still serves, and none of the above reached the queue.
    assert enqueue(edge, good, address="192.0.2.99").status_code == 202
    wait_for(lambda: edge.proxy.calls_for(document_id), 30, "the good request to be pushed")
    assert len(edge.proxy.calls_for(document_id)) == 1

"""What the Cloudflare Queues backend does beyond the shared contract: the
wire format (base64 bodies, edge Worker requests), the API's limits, 429s,
lost answers, Cloudflare's own max_retries -> dead-letter queue, and the
CLI saying "unknown" where Cloudflare cannot tell. Everything runs over real
HTTP against tests/cloudflare_standin.py."""

from __future__ import annotations

import json
import time

import pytest

from harness import wait_for
from docutrain_cli.errors import ConfigError
from docutrain_cli.jobs import Job, JobState
from docutrain_cli.queues.cloudflare import UNKNOWN_DEATH, CloudflareQueue, lease_seconds
from docutrain_cli.queues.cloudflare_api import MessageTooLarge

MAIN, DEAD = "main0001", "dead0001"


@pytest.fixture
def cf(cloudflare):
    cloudflare.create_queue(DEAD, max_retries=100)
    cloudflare.create_queue(MAIN, max_retries=3, dead_letter_queue=DEAD)
    return cloudflare


def open_queue(cf, **kw) -> CloudflareQueue:
    kw.setdefault("lease", 30.0)
    return CloudflareQueue(f"cloudflare://{cf.account_id}/{MAIN}", token=cf.token, dead_queue=DEAD,
                           api_url=cf.url, **kw)


def jobs(n: int, prefix: str = "doc") -> list[Job]:
    return [Job(id=0, source=f"/data/{prefix}{i}.pdf", sha256=f"sha{i}") for i in range(n)]


def push_raw(cf, queue_id: str, content_type: str, body) -> None:
    """Publish as another producer would (the dashboard, the Worker, curl)."""
    with cf.lock:
        cf.send(cf.queues[queue_id], [{"body": body, "content_type": content_type}], None)


def test_settings_pick_the_backend_and_keep_the_token_secret(monkeypatch):
    from docutrain_cli.config import load_settings
    from docutrain_cli.queues import open_queue as open_from_settings

    env = {"DOCUTRAIN_QUEUE": "cloudflare://acc/q1", "CLOUDFLARE_API_TOKEN": "sekret-token-value-123"}
    settings = load_settings(environ=env)
    assert settings.queue_is_cloudflare and settings.cloudflare_api_url.startswith("https://api.cloudflare.com")
    assert "sekret" not in repr(settings) and "sekret" not in json.dumps(settings.redacted())
    with pytest.raises(ConfigError, match="dead-letter queue"):
        open_from_settings(settings)
    with pytest.raises(ConfigError, match="CLOUDFLARE_API_TOKEN"):
        open_from_settings(load_settings(environ={"DOCUTRAIN_QUEUE": "cloudflare://acc/q1"}))
    with pytest.raises(ConfigError, match="cloudflare://<account_id>/<queue_id>"):
        open_from_settings(load_settings(environ={**env, "DOCUTRAIN_QUEUE": "cloudflare://acc"}))


def test_the_lease_outlasts_a_backlogged_job_and_its_timeout():
    assert lease_seconds(600) == 1210  # a wait in the backlog + a full run + margin
    assert lease_seconds(10 * 3600) == 12 * 3600  # Cloudflare's maximum


def test_bodies_are_decoded_by_content_type_and_unreadable_ones_dead_lettered(cf):
    q = open_queue(cf)
    (job_id,) = q.enqueue(jobs(1))
    push_raw(cf, MAIN, "text", json.dumps({"source": "/data/t.pdf", "job_id": 7}))
    push_raw(cf, MAIN, "text", "not json at all")
    push_raw(cf, MAIN, "json", {"user_document_id": "doc-9", "user_id": "u-9", "storage_path": "u-9/a.pdf"})
    push_raw(cf, MAIN, "json", {"user_document_id": "doc-10", "user_id": "u-10"})  # no storage_path
    with cf.lock:  # v8 is what a Worker sends by default with a non-JSON-able body
        msg = cf.queues[MAIN].messages[-1]
        cf.queues[MAIN].messages.append(type(msg)("ff" * 16, "v8", b"\x00\x01", msg.timestamp_ms))

    leased = {j.source: j for j in q.lease(10, time.time())}
    assert set(leased) == {"/data/doc0.pdf", "/data/t.pdf", "supabase://documents/u-9/a.pdf"}
    assert leased["/data/doc0.pdf"].id == job_id and leased["/data/t.pdf"].id == 7
    edge = leased["supabase://documents/u-9/a.pdf"]
    assert (edge.document_id, edge.user_id, edge.attempts) == ("doc-9", "u-9", 1)

    # Nothing lost: the three unreadable ones wait in the dead-letter queue, with why.
    dead = q.jobs(JobState.DEAD)
    reasons = sorted(j.errors[-1] for j in dead)
    assert len(dead) == 3
    assert any("text body is not JSON" in r for r in reasons)
    assert any("v8" in r for r in reasons)
    assert any("doc-10" in r and "storage_path" in r for r in reasons)
    q.flush(quiet=False)
    assert cf.backlog(MAIN) == 3  # the three good ones, still leased
    # Reading them again and again keeps what they held; they cannot be revived.
    for _ in range(2):
        assert len(q.jobs(JobState.DEAD)) == 3
    kept = cf.bodies(DEAD)
    assert len(kept) == 3 and "not json at all" in [b["raw_body"] for b in kept]
    assert q.revive(None) == [] and cf.backlog(DEAD) == 3


def test_a_document_the_push_consumer_dead_lettered_shows_serve_s_reason_and_can_be_retried(cf):
    # The record cloudflare/push.js writes when `docutrain serve` refuses a document.
    reason = "push consumer: docutrain serve answered 422: storage_path: no such object"
    push_raw(cf, DEAD, "json", {"job_id": 12, "user_document_id": "doc-12", "user_id": "u-12",
                                "storage_path": "u-12/a.pdf", "dead": True, "attempts": 1, "errors": [reason]})
    q = open_queue(cf)
    [dead] = q.jobs(JobState.DEAD)
    assert (dead.id, dead.document_id, dead.source) == (12, "doc-12", "supabase://documents/u-12/a.pdf")
    assert dead.errors == [reason] and dead.attempts == 1
    assert q.revive([12]) == [12]
    [back] = cf.bodies(MAIN)
    assert (back["document_id"], back["source"], back["attempts"]) == ("doc-12", "supabase://documents/u-12/a.pdf", 0)


def test_sends_respect_the_message_and_batch_limits(cf):
    q = open_queue(cf)
    before = len(cf.requests)
    ids = q.enqueue(jobs(250))
    batches = [r for r in cf.requests[before:] if r[0] == "batch"]
    assert len(ids) == 250 and len(batches) == 3  # 100 + 100 + 50
    assert cf.backlog(MAIN) == 250

    big = [Job(id=0, source="/data/x.pdf", errors=["e" * 30_000] * 3) for _ in range(12)]  # ~90 KB each
    before = len(cf.requests)
    assert len(q.enqueue(big)) == 12
    assert len([r for r in cf.requests[before:] if r[0] == "batch"]) == 6  # two per 256 KB batch

    huge = Job(id=0, source="/data/huge.pdf", errors=["x" * 130_000])
    with pytest.raises(MessageTooLarge, match="^/data/huge.pdf: .* over Cloudflare Queues' limit of 128,000 bytes"):
        q.enqueue(jobs(1) + [huge])
    with pytest.raises(MessageTooLarge, match="message 2 of 2"):  # the client checks on its own too
        q.api.send(MAIN, [{"a": 1}, {"b": "x" * 130_000}])
    assert cf.backlog(MAIN) == 262  # refused before anything of that call was sent


def test_acks_are_batched_and_a_lost_answer_neither_loses_nor_doubles_them(cf):
    q = open_queue(cf)
    q.enqueue(jobs(4))
    a, b, c, d = q.lease(4, time.time())
    for job in (a, b, c):
        q.complete(job)
    q.retry_later(d, "flaky", time.time())
    assert [r for r in cf.requests if r[0] == "ack"] == []  # buffered
    cf.lose_answer("ack")  # Cloudflare does the work, the answer never arrives
    assert q.flush(quiet=False)
    acks = [r for r in cf.requests if r[0] == "ack"]
    assert len(acks) == 2  # the lost one, then the same lease ids again
    assert len(cf.acked) == 3 and len(set(cf.acked)) == 3  # each message deleted once
    # The retry took effect once: d is back, once, with one delivery behind it.
    assert [body["job_id"] for body in cf.bodies(MAIN)] == [d.id]
    (again,) = q.lease(10, time.time())
    assert (again.id, again.attempts, again.errors) == (d.id, 2, ["flaky"])


def test_rate_limited_requests_wait_and_go_through(cf):
    q = open_queue(cf)
    cf.rate_limit(2, retry_after=1)
    started = time.monotonic()
    ids = q.enqueue(jobs(3))
    assert len(ids) == 3 and cf.backlog(MAIN) == 3
    assert [status for _, status in cf.requests[:3]] == ["429", "429", "200"]
    assert time.monotonic() - started >= 2 * 0.9  # it honoured retry-after

    q.api.patience = 0.5  # a limit longer than we will wait: a clear error, nothing sent twice
    cf.rate_limit(5, retry_after=3)
    with pytest.raises(Exception, match="rate limited"):
        q.enqueue(jobs(1))
    assert cf.backlog(MAIN) == 3


def test_a_refused_token_is_a_clear_error_that_does_not_print_it(cf):
    q = CloudflareQueue(f"cloudflare://{cf.account_id}/{MAIN}", token="wrong-token-abcdef", dead_queue=DEAD,
                        api_url=cf.url)
    with pytest.raises(ConfigError) as caught:
        q.enqueue(jobs(1))
    assert "Queues Read and Queues Edit" in str(caught.value) and "code 10000" in str(caught.value)
    assert "wrong-token" not in str(caught.value)
    q2 = CloudflareQueue(f"cloudflare://{cf.account_id}/nosuchqueue", token=cf.token, dead_queue=DEAD, api_url=cf.url)
    with pytest.raises(ConfigError, match="no queue nosuchqueue"):
        q2.lease(1, time.time())


def test_an_unreachable_api_is_unavailable_after_patience_not_a_crash(cf):
    from docutrain_cli.errors import ExitCode, ServiceUnavailableError

    q = CloudflareQueue(f"cloudflare://{cf.account_id}/{MAIN}", token=cf.token, dead_queue=DEAD,
                        api_url="http://127.0.0.1:1/client/v4")
    q.api.patience = 0.6
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="ConnectError.*gave up after 0.6 s") as caught:
        q.stats(time.time())
    assert caught.value.exit_code == ExitCode.UNAVAILABLE and cf.token not in str(caught.value)
    assert time.monotonic() - started >= 0.5  # it did try again before giving up


def test_cloudflare_dead_letters_a_job_whose_runners_keep_dying(cf):
    """max_retries is Cloudflare's backstop: leases that lapse max_retries
    times (runners killed mid-job) land in the dead-letter queue, where
    docutrain shows them as dead and can revive them."""
    q = open_queue(cf, lease=0.2)
    (job_id,) = q.enqueue(jobs(1))
    for attempt in (1, 2, 3):
        (job,) = lease_until(q)
        assert job.attempts == attempt
        q._leases.clear()  # this "runner" dies: its lease lapses unanswered
    time.sleep(0.3)
    assert q.lease(1, time.time()) == []
    (dead,) = q.jobs(JobState.DEAD)
    assert dead.id == job_id and dead.errors == [UNKNOWN_DEATH]
    # Listing reads the dead-letter queue without using up its own retries.
    for _ in range(5):
        assert [j.id for j in q.jobs(JobState.DEAD)] == [job_id]
    assert q.revive(None) == [job_id]
    (back,) = q.lease(1, time.time())
    assert (back.id, back.attempts) == (job_id, 1)


def lease_until(q, timeout: float = 5.0) -> list[Job]:
    return wait_for(lambda: q.lease(1, time.time()), timeout, what="something to lease")


def test_a_duplicate_of_a_job_in_hand_is_acked_not_run_twice(cf):
    q = open_queue(cf)
    (job_id,) = q.enqueue(jobs(1))
    push_raw(cf, MAIN, "json", {"source": "/data/doc0.pdf", "job_id": job_id, "attempts": 0})
    assert [j.id for j in q.lease(10, time.time())] == [job_id]
    q.flush(quiet=False)
    assert cf.backlog(MAIN) == 1


def two_unfinished_and_one_dead(cf) -> tuple[Job, dict]:
    """Three jobs sent, one buried; the env the CLI needs for this queue."""
    q = open_queue(cf)
    q.enqueue(jobs(3))
    (job,) = q.lease(1, time.time())
    q.bury(job, "/data/doc0.pdf: not a PDF")
    q.close()
    env = dict(DOCUTRAIN_QUEUE=f"cloudflare://{cf.account_id}/{MAIN}", CLOUDFLARE_API_TOKEN=cf.token,
               DOCUTRAIN_CLOUDFLARE_DEAD_QUEUE=DEAD, DOCUTRAIN_CLOUDFLARE_API_URL=cf.url)
    return job, env


def test_status_says_unknown_where_cloudflare_cannot_tell(cf, docutrain):
    job, env = two_unfinished_and_one_dead(cf)
    result = docutrain("status", **env)
    assert result.returncode == 0, result.stderr
    assert "queued unknown  running unknown  retrying unknown  done unknown  dead 1" in result.stdout
    assert f"cloudflare queue {MAIN}: 2 unfinished" in result.stdout
    data = json.loads(docutrain("status", "--json", **env).stdout)
    assert (data["queued"], data["done"], data["dead"], data["unfinished"]) == (None, None, 1, 2)
    assert cf.token not in result.stdout + result.stderr

    init = docutrain("queue", "init", **env)
    assert init.returncode == 0 and f"cloudflare queue {MAIN} reachable: backlog 2" in init.stdout, init.stderr

    listed = docutrain("jobs", "--state", "dead", **env)
    assert listed.returncode == 0 and "not a PDF" in listed.stdout
    refused = docutrain("jobs", "--state", "queued", **env)
    assert refused.returncode == 2 and "can only show dead jobs" in refused.stderr
    retried = docutrain("retry", "--all-dead", "--json", **env)
    assert json.loads(retried.stdout)["retried"] == [job.id]
    assert cf.backlog(DEAD) == 0 and cf.backlog(MAIN) == 3


def test_run_retries_buries_with_the_history_and_retry_revives_on_cloudflare(cf, docutrain, tmp_path):
    """`docutrain run --drain` over the stand-in: a job that fails twice is
    retried with Cloudflare's delayed retries and then done; a permanent
    failure and a job that runs out of attempts go to the dead-letter queue
    with their errors; `retry` brings one back."""
    docutrain.env.update(
        DOCUTRAIN_QUEUE=f"cloudflare://{cf.account_id}/{MAIN}", CLOUDFLARE_API_TOKEN=cf.token,
        DOCUTRAIN_CLOUDFLARE_DEAD_QUEUE=DEAD, DOCUTRAIN_CLOUDFLARE_API_URL=cf.url,
        DOCUTRAIN_PROCESSOR="tests.processors:by_name", DOCUTRAIN_MAX_ATTEMPTS="3",
        DOCUTRAIN_RETRY_BASE_DELAY="1", DOCUTRAIN_RETRY_MAX_DELAY="1",
    )
    for name in ("good-1.txt", "transient-2.txt", "transient-9.txt", "permanent-1.txt"):
        (tmp_path / name).write_text(name)
    queued = docutrain("enqueue", "good-1.txt", "transient-2.txt", "transient-9.txt", "permanent-1.txt", "--json")
    assert queued.returncode == 0, queued.stderr
    ids = {j["source"].rsplit("/", 1)[1]: j["id"] for j in json.loads(queued.stdout)["queued"]}

    run = docutrain("run", "--workers", "2", "--drain", "--json")
    assert run.returncode == 3, run.stderr  # two dead on purpose
    summary = json.loads(run.stdout)
    assert (summary["done"], summary["dead"], summary["retried"]) == (2, 2, 4)
    assert summary["remaining"]["queued"] is None  # unknown, not zero
    assert cf.backlog(MAIN) == 0 and cf.backlog(DEAD) == 2
    runs = docutrain.runs()
    assert sorted(a for j, a in runs if j == ids["transient-2.txt"]) == [1, 2, 3]

    dead = {j["id"]: j for j in json.loads(docutrain("jobs", "--state", "dead", "--json").stdout)}
    assert set(dead) == {ids["transient-9.txt"], ids["permanent-1.txt"]}
    gave_up = dead[ids["transient-9.txt"]]
    assert gave_up["attempts"] == 3 and len(gave_up["errors"]) == 3  # the whole history, one runner
    assert "gave up after 3 attempts" in gave_up["errors"][-1]
    assert dead[ids["permanent-1.txt"]]["attempts"] == 1

    retried = docutrain("retry", str(ids["permanent-1.txt"]), str(ids["good-1.txt"]), "--json")
    assert retried.returncode == 3
    assert json.loads(retried.stdout) == {"retried": [ids["permanent-1.txt"]], "refused": [ids["good-1.txt"]]}
    assert cf.backlog(MAIN) == 1 and cf.backlog(DEAD) == 1



def test_a_runner_does_not_stop_for_a_figure_it_cannot_read(cf):
    """The runner reads stats while idle; when sends are rate-limited for
    minutes (the API's 1,200 requests / 5 min), the backlog from its last
    pull stands in and the dead count is unknown, rather than an error."""
    q = open_queue(cf)
    q.enqueue(jobs(2))
    q.lease(1, time.time())  # a pull: fresh backlog figures
    cf.rate_limit(100, retry_after=300)
    stats = q.stats(time.time())
    assert (stats.unfinished, stats.counts["dead"]) == (2, None)
    # With nothing seen before, `status` has nothing to show and says why.
    fresh = open_queue(cf)
    with pytest.raises(Exception, match="retry after 300 s"):
        fresh.stats(time.time())


def test_the_stand_in_answers_get_queue_metrics_as_documented(cf):
    """GET /accounts/{account_id}/queues/{queue_id}/metrics: the envelope,
    float numbers, 0 as the oldest timestamp of an empty queue, a 404 for an
    unknown queue, 405 for another method, 403 without the token."""
    import httpx

    url = f"{cf.url}/accounts/{cf.account_id}/queues/{MAIN}/metrics"
    auth = {"Authorization": f"Bearer {cf.token}"}
    empty = httpx.get(url, headers=auth).json()
    assert empty == {"success": True, "errors": [], "messages": [],
                     "result": {"backlog_count": 0.0, "backlog_bytes": 0.0, "oldest_message_timestamp_ms": 0.0}}
    before = time.time() * 1000
    push_raw(cf, MAIN, "json", {"source": "/data/x.pdf"})
    result = httpx.get(url, headers=auth).json()["result"]
    assert result["backlog_count"] == 1.0 and result["backlog_bytes"] > 100
    assert before - 1000 <= result["oldest_message_timestamp_ms"] <= time.time() * 1000
    assert httpx.get(url.replace(MAIN, "nosuch01"), headers=auth).status_code == 404
    assert httpx.post(url, headers=auth, json={}).status_code == 405
    assert httpx.get(url).status_code == 403


def test_status_reads_backlog_and_oldest_age_from_the_metrics_endpoint(cf, docutrain):
    _, env = two_unfinished_and_one_dead(cf)
    with cf.lock:  # the oldest message was sent a minute ago
        cf.queues[MAIN].messages[0].timestamp_ms -= 60_000
        cf.queues[DEAD].messages[0].timestamp_ms -= 30_000
        cf.requests.clear()
    result = docutrain("status", "--json", **env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    details = data["queue_details"]
    assert (data["unfinished"], data["dead"]) == (2, 1)
    assert details["backlog"] == 2 and details["backlog_bytes"] > 0
    assert 60 <= details["oldest_message_age_seconds"] < 120
    assert details["dead_letter_backlog"] == 1 and details["dead_letter_backlog_bytes"] > 0
    assert 30 <= details["dead_letter_oldest_message_age_seconds"] < 90
    with cf.lock:
        asked = [tail for tail, _ in cf.requests]
    assert asked.count("metrics") == 2 and "batch" not in asked  # no empty batch sent
    shown = docutrain("status", **env).stdout
    assert f"cloudflare queue {MAIN}: 2 unfinished" in shown and ", oldest 1." in shown


def test_high_priority_goes_through_a_second_queue_pulled_first(cf):
    HIGH = "high0001"
    cf.create_queue(HIGH, max_retries=3, dead_letter_queue=DEAD)
    queue = open_queue(cf, high_queue=HIGH)
    assert queue.lease_order == "priority"
    normal = queue.enqueue(jobs(5))
    [urgent] = queue.enqueue([Job(id=0, source="/data/urgent.pdf", priority="high")])
    assert len(cf.queues[HIGH].messages) == 1 and len(cf.queues[MAIN].messages) == 5
    first = queue.lease(2, time.time())
    assert first[0].id == urgent and first[1].id in normal
    queue.release(first[0])  # back to the queue it came from, and first again
    queue.retry_later(first[1], "flaky", time.time())
    assert queue.lease(1, time.time())[0].id == urgent
    stats = queue.stats(time.time())
    assert stats.details["high_priority_queue"] == HIGH and stats.unfinished == 6
    # without a high queue, priority cannot be kept: said so, and nothing is lost
    plain = open_queue(cf)
    assert plain.lease_order == "none"
    plain.enqueue([Job(id=0, source="/data/other.pdf", priority="high")])
    assert len(cf.queues[MAIN].messages) == 6

"""One user's script cannot flood the queue (issue 22, point 9, serve side).

With intake_rate, POST /v1/documents and the Supabase webhook accept that
many documents per user_id and per client address in the window, then 429
with Retry-After, and queue nothing more; a refused request counts for
neither; webhook events that queue nothing do not count. Off by default."""

from __future__ import annotations

import pytest
from serving import TOKEN, ServeThread, with_supabase

from docutrain_cli.config import Settings, load_settings, parse_rate
from docutrain_cli.errors import ConfigError
from docutrain_cli.queues.local import LocalQueue


@pytest.fixture
def settings(tmp_path, supabase_standin) -> Settings:
    return Settings(queue=str(tmp_path / "q.db"), store=str(tmp_path / "s.db"), serve_token=TOKEN,
                    intake_rate="3/minute", **with_supabase(supabase_standin))


@pytest.fixture
def api(settings):
    serving = ServeThread(settings)
    with serving.client() as client:
        yield client
    serving.close()


def post(client, document_id: str, user_id: str, address: str):
    body = {"user_document_id": document_id, "user_id": user_id, "storage_path": f"{user_id}/{document_id}.pdf"}
    return client.post("/v1/documents", json=body, headers={"x-forwarded-for": address})


def limited(answer, who: str) -> None:
    assert answer.status_code == 429, answer.text
    assert 55 <= int(answer.headers["retry-after"]) <= 60
    assert answer.json() == {"error": f"intake limit (3/minute) reached for {who}: try again in "
                                      f"{answer.headers['retry-after']} s"}


def queued_ids(settings) -> list[str]:
    with LocalQueue(settings.queue) as queue:
        return sorted(job.document_id for job in queue.jobs(limit=100))


def test_per_user_and_per_address(api, settings):
    assert [post(api, f"a{i}", "u1", "203.0.113.1").status_code for i in range(3)] == [202] * 3
    limited(post(api, "a3", "u1", "203.0.113.1"), "user u1")
    limited(post(api, "b0", "u2", "203.0.113.1"), "your address")  # that address used its 3
    limited(post(api, "a4", "u1", "203.0.113.2"), "user u1")  # u1 from elsewhere: still u1
    assert [post(api, f"b{i}", "u2", "203.0.113.2").status_code for i in range(3)] == [202] * 3  # refusals cost nothing
    limited(post(api, "c0", "u3", "203.0.113.2"), "your address")
    assert queued_ids(settings) == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_the_webhook_is_limited_per_record_user_and_ignored_events_do_not_count(api, settings):
    def send(document_id: str, status: str = "pending", user_id: str = "u7"):
        record = {"id": document_id, "user_id": user_id, "status": status, "storage_path": f"{user_id}/x.pdf"}
        payload = {"type": "UPDATE", "table": "user_documents", "schema": "public", "record": record, "old_record": None}
        return api.post("/v1/webhooks/supabase", json=payload, headers={"x-forwarded-for": "198.51.100.7"})

    for i in range(10):  # our own status updates come back as webhooks too: answered, not counted
        assert send(f"done{i}", status="ready").json()["queued"] is False
    assert [send(f"w{i}").status_code for i in range(3)] == [202] * 3
    limited(send("w3"), "user u7")
    limited(send("v0", user_id="u8"), "your address")  # Supabase's address carries every user
    assert queued_ids(settings) == ["w0", "w1", "w2"]


def test_off_by_default(settings):
    serving = ServeThread(settings.replace(intake_rate=None))
    try:
        with serving.client() as client:
            assert {post(client, f"d{i}", "u1", "203.0.113.1").status_code for i in range(40)} == {202}
    finally:
        serving.close()


def test_the_setting():
    assert load_settings(environ={"DOCUTRAIN_INTAKE_RATE": "120/minute"}).intake_rate == "120/minute"
    assert load_settings(environ={}).intake_rate is None
    assert parse_rate("120/minute") == (120, 60.0) and parse_rate(" 5 / seconds ") == (5, 1.0)
    assert parse_rate("1000/day") == (1000, 86400.0) and parse_rate("off") is None and parse_rate(None) is None
    for bad in ("120", "120/fortnight", "0/minute", "-1/minute", "many/minute", "120/minute/2"):
        with pytest.raises(ConfigError, match="intake_rate: expected a count per second, minute, hour or day"):
            load_settings(environ={"DOCUTRAIN_INTAKE_RATE": bad})

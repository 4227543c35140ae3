"""The Supabase trigger holds its own secret, not the master token (issue 22, point 5).

Over real HTTP: with `webhook_secret` set, /v1/webhooks/supabase takes that
secret only (bearer or X-Docutrain-Secret), the serve token no longer opens
it, and the webhook secret opens nothing else (API, dashboard log-in)."""

from __future__ import annotations

import pytest
from serving import TOKEN, ServeThread, with_supabase

from docutrain_cli.config import Settings, load_settings
from docutrain_cli.errors import ConfigError
from docutrain_cli.queues.local import LocalQueue

WEBHOOK_SECRET = "webhook-secret-0123456789abcdef0123456789"


def hook(document_id: str) -> dict:
    record = {"id": document_id, "user_id": "u7", "status": "pending", "storage_path": "u7/upload.pdf"}
    return {"type": "INSERT", "table": "user_documents", "schema": "public", "record": record, "old_record": None}


def queued_ids(settings) -> list[str]:
    with LocalQueue(settings.queue) as queue:
        return sorted(job.document_id for job in queue.jobs(limit=100))


@pytest.fixture
def settings(tmp_path, supabase_standin) -> Settings:
    return Settings(queue=str(tmp_path / "q.db"), store=str(tmp_path / "s.db"), serve_token=TOKEN,
                    webhook_secret=WEBHOOK_SECRET, **with_supabase(supabase_standin))


def test_only_the_webhook_secret_opens_the_webhook_and_nothing_else(settings):
    serving = ServeThread(settings)
    try:
        with serving.client(token=None) as client:
            url = "/v1/webhooks/supabase"
            assert client.post(url, json=hook("a"), headers={"x-docutrain-secret": WEBHOOK_SECRET}).status_code == 202
            assert client.post(url, json=hook("b"), headers={"authorization": f"Bearer {WEBHOOK_SECRET}"}).status_code == 202
            for headers in ({"x-docutrain-secret": TOKEN}, {"authorization": f"Bearer {TOKEN}"}, {}):
                answer = client.post(url, json=hook("c"), headers=headers)
                assert answer.status_code == 401, headers
                assert answer.json() == {"error": "missing or wrong token: send Authorization: Bearer <webhook_secret>"}
            as_webhook = {"authorization": f"Bearer {WEBHOOK_SECRET}"}
            doc = {"user_document_id": "d", "user_id": "u7", "storage_path": "u7/x.pdf"}
            assert client.post("/v1/documents", json=doc, headers=as_webhook).status_code == 401
            assert client.get("/v1/status", headers=as_webhook).status_code == 401
            assert client.post("/v1/jobs/1/retry", headers=as_webhook).status_code == 401
            assert client.get("/", headers=as_webhook).status_code == 303  # to the log-in form
            assert client.post("/login", data={"token": WEBHOOK_SECRET}).status_code == 401
            assert client.get("/v1/status", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
            for answer in (client.get("/v1/status", headers={"authorization": f"Bearer {TOKEN}"}),):
                assert WEBHOOK_SECRET not in answer.text
    finally:
        serving.close()
    assert queued_ids(settings) == ["a", "b"]


def test_without_a_serve_token_the_webhook_still_needs_its_secret(settings):
    serving = ServeThread(settings.replace(serve_token=None))
    try:
        with serving.client(token=None) as client:
            assert client.post("/v1/webhooks/supabase", json=hook("a")).status_code == 401
            answer = client.post("/v1/webhooks/supabase", json=hook("a"), headers={"x-docutrain-secret": WEBHOOK_SECRET})
            assert answer.status_code == 202
            assert client.get("/v1/status").status_code == 200  # the rest is open on loopback, as before
    finally:
        serving.close()


def test_the_setting_reads_from_the_environment_and_is_never_shown(docutrain):
    settings = load_settings(environ={"DOCUTRAIN_WEBHOOK_SECRET": WEBHOOK_SECRET})
    assert settings.webhook_secret == WEBHOOK_SECRET
    assert WEBHOOK_SECRET not in repr(settings) and WEBHOOK_SECRET not in str(settings.redacted())
    with pytest.raises(ConfigError, match="webhook_secret: must differ from serve_token"):
        load_settings(environ={"DOCUTRAIN_WEBHOOK_SECRET": TOKEN, "DOCUTRAIN_SERVE_TOKEN": TOKEN})
    short = docutrain("serve", "--host", "0.0.0.0", "--port", "0", timeout=30,
                      DOCUTRAIN_SERVE_TOKEN="t" * 40, DOCUTRAIN_WEBHOOK_SECRET="short-secret")
    assert short.returncode == 2 and "with a webhook_secret of 12 characters" in short.stderr
    assert "short-secret" not in short.stderr

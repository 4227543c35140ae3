"""Status webhooks: every status change POSTed to the app through an outbox,
signed with HMAC-SHA256. A real HTTP receiver (tests/webhook_receiver.py)
plays the app; signatures are checked here with hmac directly, as an app
would, not with docutrain's own helper."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from conftest import make_files
from webhook_receiver import Receiver

from docutrain_cli.config import Settings
from docutrain_cli.jobs import Job, JobResult
from docutrain_cli.status.recorder import StatusRecorder
from docutrain_cli.status.webhooks import SIGNATURE_HEADER, sign, verify_signature

SECRET = "whsec-test-0123456789abcdef"
ORDER = {"processing": 0, "ready": 1, "error": 1}


@pytest.fixture
def receiver():
    app = Receiver()
    yield app
    app.close()


def signed_correctly(call, secret: str = SECRET, tolerance: float = 300) -> bool:
    header = call.headers[SIGNATURE_HEADER.lower()]
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + call.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < tolerance


def statuses_by_document(calls) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for call in calls:
        body = call.json()
        seen.setdefault(body["user_document_id"], []).append(body["status"])
    return seen


def never_regressed(seen: dict[str, list[str]]) -> bool:
    return all([ORDER[s] for s in statuses] == sorted(ORDER[s] for s in statuses) for statuses in seen.values())


def test_signature_scheme():
    body = b'{"status":"ready"}'
    header = sign(SECRET, body, 1_700_000_000)
    digest = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={digest}"
    assert verify_signature(SECRET, body, header, now=1_700_000_100)
    assert not verify_signature(SECRET, body + b" ", header, now=1_700_000_100)  # tampered body
    assert not verify_signature("other-secret", body, header, now=1_700_000_100)
    assert not verify_signature(SECRET, body, header, now=1_700_000_000 + 301)  # a replay, too old
    assert not verify_signature(SECRET, body, "v1=" + digest, now=1_700_000_000)
    assert not verify_signature(SECRET, body, "garbage", now=1_700_000_000)


def test_status_webhooks_through_an_outage(docutrain, receiver):
    files = make_files(docutrain.workdir / "in", ["a.txt", "b.txt", "permanent.txt"])
    env = dict(DOCUTRAIN_STATUS_WEBHOOK_URL=receiver.url, DOCUTRAIN_STATUS_WEBHOOK_SECRET=SECRET,
               DOCUTRAIN_PROCESSOR="tests.processors:by_name", DOCUTRAIN_WORKERS="2")
    for path in files:
        assert docutrain("enqueue", str(path), "--document-id", f"doc-{path.stem}", **env).returncode == 0
    receiver.down()  # the app is unreachable for the whole run
    result = docutrain("run", "--drain", **env)
    assert result.returncode == 3, result.stderr  # permanent.txt is dead
    status = json.loads(docutrain("status", "--json", **env).stdout)["status_webhook_outbox"]
    assert status["backlog"] == 3 and "ConnectError" in status["last_error"]
    text = docutrain("status", **env).stdout
    assert "status webhook outbox: 3 waiting" in text
    assert SECRET not in result.stderr + result.stdout + text

    receiver.up()  # same port
    synced = docutrain("sync", **env)
    assert synced.returncode == 0, synced.stderr
    assert "status webhooks: delivered 3" in synced.stdout
    calls = receiver.delivered()
    assert all(signed_correctly(call) for call in calls)
    assert all(call.headers["content-type"] == "application/json" for call in calls)
    final = {call.json()["user_document_id"]: call.json() for call in calls}
    assert {doc: body["status"] for doc, body in final.items()} == {
        "doc-a": "ready", "doc-b": "ready", "doc-permanent": "error"}
    assert final["doc-a"]["page_count"] == 1 and final["doc-a"]["event"] == "document.status"
    assert "not a PDF" in final["doc-permanent"]["error_message"]
    assert len(calls) == 3  # the newest change per document only: `processing` was superseded
    assert json.loads(docutrain("status", "--json", **env).stdout)["status_webhook_outbox"]["backlog"] == 0


def test_a_run_delivers_in_order_and_retries_5xx(docutrain, receiver):
    files = make_files(docutrain.workdir / "in", [f"sleep-0.3-{i}.txt" for i in range(4)])
    env = dict(DOCUTRAIN_STATUS_WEBHOOK_URL=receiver.url, DOCUTRAIN_STATUS_WEBHOOK_SECRET=SECRET,
               DOCUTRAIN_PROCESSOR="tests.processors:by_name", DOCUTRAIN_WORKERS="2")
    for i, path in enumerate(files):
        assert docutrain("enqueue", str(path), "--document-id", f"d{i}", **env).returncode == 0
    receiver.answer(503, times=3)  # the first three calls fail: retried, not lost
    assert docutrain("run", "--drain", **env).returncode == 0
    # The run pushes the first document that ends at once and meets a 503;
    # the outbox backs off, so the next pushes wait. The run's last flush
    # ignores the backoff and meets the second; sync ignores it too, meets
    # the third (exit 5), and the next sync delivers.
    first = docutrain("sync", **env)
    assert first.returncode == 5 and "status webhook: " in first.stderr and "answered 503" in first.stderr
    assert docutrain("sync", **env).returncode == 0
    seen = statuses_by_document(receiver.delivered())
    assert {doc: statuses[-1] for doc, statuses in seen.items()} == {f"d{i}": "ready" for i in range(4)}
    assert never_regressed(seen)
    assert [c.answered for c in receiver.calls[:3]] == [503, 503, 503]
    assert all(signed_correctly(call) for call in receiver.calls)


def test_outbox_backoff_gone_and_refused(receiver, tmp_path):
    settings = Settings(store=str(tmp_path / "docutrain.db"), queue=str(tmp_path / "q.db"),
                        status_webhook_url=receiver.url, status_webhook_secret=SECRET)
    recorder = StatusRecorder(settings)
    try:
        job = Job(id=1, source="a.pdf", document_id="doc-1")
        recorder.processing(job)
        receiver.answer(503)
        recorder.flush_webhooks()
        assert recorder.last_webhook_result.error == "status webhook http://127.0.0.1:%d/hooks/docutrain: answered 503" % receiver.port
        recorder.ready(job, JobResult(pages=2, chunks=3))
        recorder.flush_webhooks()
        assert recorder.last_webhook_result.skipped.startswith("backing off")  # no request during backoff
        assert len(receiver.calls) == 1
        recorder.flush_webhooks(force=True)
        assert [c.json()["status"] for c in receiver.delivered()] == ["ready"]  # never the older `processing`

        gone = Job(id=2, source="b.pdf", document_id="doc-gone")
        refused = Job(id=3, source="c.pdf", document_id="doc-refused")
        later = Job(id=4, source="d.pdf", document_id="doc-later")
        for j in (gone, refused, later):
            recorder.processing(j)
        receiver.answer(410)
        receiver.answer(400)
        recorder.flush_webhooks(force=True)
        result = recorder.last_webhook_result
        assert (result.delivered, result.dropped, result.refused) == (1, 1, 1)  # a refusal does not block others
        assert recorder.webhook_outbox.backlog() == 1  # the refused one waits (slowly) for a fixed app
        recorder.flush_webhooks(force=True)
        assert recorder.webhook_outbox.backlog() == 0
        assert [c.json()["user_document_id"] for c in receiver.calls[-4:]] == [
            "doc-gone", "doc-refused", "doc-later", "doc-refused"]
        recorder.processing(Job(id=5, source="no-document-id.pdf"))  # a plain file: nothing to tell the app
        assert recorder.webhook_outbox.backlog() == 0
    finally:
        recorder.close()


def test_webhook_settings_are_checked(tmp_path):
    from docutrain_cli.config import load_settings
    from docutrain_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="status_webhook_secret is not"):
        load_settings({"status_webhook_url": "https://app.example/hook"}, environ={})
    with pytest.raises(ConfigError, match="http:// or https://"):
        load_settings({"status_webhook_url": "app.example/hook", "status_webhook_secret": "s"}, environ={})
    settings = load_settings({}, environ={"DOCUTRAIN_STATUS_WEBHOOK_SECRET": "s3cret-value-123456"})
    assert "s3cret-value-123456" not in repr(settings) and "s3cret-value" not in str(settings.redacted())

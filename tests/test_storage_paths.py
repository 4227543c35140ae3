"""Storage paths cannot leave the bucket (issue 22, point 1).

A `storage_path` becomes a download URL requested with the service-role key,
so `..` segments, another bucket, a redirect or another user's folder must be
refused before any request: at the HTTP door (422), in the Supabase webhook
(422), in `enqueue --from-supabase` (one line per refused row), and in the
worker that downloads (the job ends dead with the reason). The stand-in
records every request it receives, so "nothing was read" is checked there.
"""

from __future__ import annotations

import uuid

import pytest
from pdfs import multi_page
from serving import TOKEN, ServeThread

from docutrain_cli.config import Settings, load_settings
from docutrain_cli.errors import ConfigError, PermanentError
from docutrain_cli.jobs import Job, JobState
from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.run.runner import Runner
from docutrain_cli.supabase.pull import pending_jobs
from docutrain_cli.supabase.storage import check_object_path, check_source

ESCAPES = [
    "user-1/../../../../../auth/v1/admin/users",
    "../other-bucket/victim/secret.pdf",
    "user-1/./report.pdf",
    "user-1//report.pdf",
    "user-1/report.pdf/",
    "user-1/..",
    "user-1\\..\\..\\auth\\v1\\admin\\users",
    "/user-1/report.pdf",
    "user-1/report\x00.pdf",
    "user-1/report\r\nX-Evil: 1.pdf",
    "",
    "user-1/" + "a" * 1100,
]


@pytest.mark.parametrize("path", ESCAPES)
def test_a_path_that_could_leave_the_bucket_is_refused(path):
    with pytest.raises(PermanentError, match="storage_path"):
        check_object_path(path)


def test_a_plain_object_path_is_kept_as_given():
    assert check_object_path("user-1/Q3 report (final).pdf") == "user-1/Q3 report (final).pdf"
    assert check_object_path("user-1/a/b/c.pdf", user_id="user-1", user_prefix=True) == "user-1/a/b/c.pdf"


def test_the_user_prefix_rule():
    with pytest.raises(PermanentError, match="'user-1'/"):
        check_object_path("user-2/their.pdf", user_id="user-1", user_prefix=True)
    with pytest.raises(PermanentError, match="'user-1'/"):
        check_object_path("user-10/their.pdf", user_id="user-1", user_prefix=True)  # a prefix of a name is not a folder
    with pytest.raises(PermanentError, match="has none"):
        check_object_path("user-1/a.pdf", user_id=None, user_prefix=True)
    assert check_object_path("shared/a.pdf", user_id="user-1", user_prefix=False) == "shared/a.pdf"


def test_only_the_configured_bucket():
    assert check_source("supabase://documents/u/a.pdf", bucket="documents", user_id="u", user_prefix=True) == "u/a.pdf"
    with pytest.raises(PermanentError, match="'other-bucket' is not the configured storage_bucket 'documents'"):
        check_source("supabase://other-bucket/u/a.pdf", bucket="documents", user_id="u", user_prefix=True)


def test_the_setting_reads_from_the_environment(tmp_path):
    assert load_settings(environ={}, config_file=None).storage_user_prefix is True
    off = load_settings(environ={"DOCUTRAIN_STORAGE_USER_PREFIX": "false"})
    assert off.storage_user_prefix is False
    with pytest.raises(ConfigError, match="DOCUTRAIN_STORAGE_USER_PREFIX storage_user_prefix: expected true or false"):
        load_settings(environ={"DOCUTRAIN_STORAGE_USER_PREFIX": "maybe"})


# -- at the HTTP door ------------------------------------------------------------------------


@pytest.fixture
def served(supabase_standin, tmp_path):
    settings = Settings(
        queue=str(tmp_path / "queue.db"), store=str(tmp_path / "docutrain.db"), serve_token=TOKEN,
        supabase_url=supabase_standin.url, supabase_service_role_key=supabase_standin.key,
    )
    serving = ServeThread(settings)
    with serving.client() as client:
        yield client, settings
    serving.close()


def _queued(settings) -> list[Job]:
    with LocalQueue(settings.queue) as queue:
        return queue.jobs(limit=100)


@pytest.mark.parametrize("path", ESCAPES[:-2] + [
    "supabase://other-bucket/user-1/secret.pdf",
    "supabase://documents/user-1/../../../auth/v1/admin/users",
    "supabase://documents/user-2/their.pdf",
    "user-2/their.pdf",
])
def test_post_document_refuses_the_path_with_422_and_queues_nothing(served, supabase_standin, path):
    client, settings = served
    answer = client.post("/v1/documents", json={"user_document_id": "doc-1", "user_id": "user-1", "storage_path": path})
    assert answer.status_code == 422, answer.text
    assert "storage_path" in answer.json()["error"]
    assert _queued(settings) == []
    assert supabase_standin.count("*", "/storage") == 0 and supabase_standin.count("*", "/auth") == 0


def test_a_path_read_from_the_row_is_checked_too_and_never_local(served, supabase_standin, tmp_path):
    client, settings = served
    project = supabase_standin.project
    escaping = project.add_document("pending", user_id="user-1", storage_path="user-1/../../auth/v1/admin/users")
    local = project.add_document("pending", user_id="user-1", storage_path=str(tmp_path / "secret.pdf"))
    for doc in (escaping, local):
        answer = client.post("/v1/documents", json={"user_document_id": doc, "user_id": "user-1"})
        assert answer.status_code == 422, answer.text
    assert _queued(settings) == []


def test_the_webhook_refuses_an_escaping_row(served, supabase_standin):
    client, settings = served
    record = {"id": "doc-7", "user_id": "user-7", "status": "pending", "storage_path": "user-7/../../../auth/v1/admin/users"}
    answer = client.post("/v1/webhooks/supabase", json={
        "type": "INSERT", "table": "user_documents", "schema": "public", "record": record, "old_record": None})
    assert answer.status_code == 422 and "'..'" in answer.json()["error"]
    other = {**record, "storage_path": "user-8/their.pdf"}
    answer = client.post("/v1/webhooks/supabase", json={
        "type": "INSERT", "table": "user_documents", "schema": "public", "record": other, "old_record": None})
    assert answer.status_code == 422 and "'user-7'/" in answer.json()["error"]
    assert _queued(settings) == [] and supabase_standin.count("*", "/storage") == 0


def test_from_supabase_refuses_escaping_rows_by_name(supabase_standin, supabase_settings):
    project = supabase_standin.project
    good = project.add_document("pending", storage_path="u1/a.pdf")
    bad = project.add_document("pending", user_id="u1", storage_path="u1/../u2/b.pdf")
    jobs, refused = pending_jobs(supabase_settings)
    assert [job.document_id for job in jobs] == [good]
    assert [(r.path, r.reason) for r in refused] == [
        (f"user_documents row {bad}", "storage_path must not contain empty, '.' or '..' segments")]


# -- in the worker that downloads ----------------------------------------------------------


def _run_jobs(settings: Settings, jobs: list[Job]) -> list[Job]:
    with LocalQueue(settings.queue) as queue:
        queue.enqueue(jobs)
        Runner(settings, queue, in_process=True).run(drain=True)
        return queue.jobs(limit=100)


def test_the_worker_downloads_nothing_outside_the_bucket_or_the_users_folder(supabase_standin, supabase_settings, tmp_path):
    project = supabase_standin.project
    me, other = str(uuid.uuid4()), str(uuid.uuid4())  # user ids are uuids in Supabase
    pdf = multi_page(tmp_path / "a.pdf", pages=1).read_bytes()
    project.put_object("documents", f"{me}/a.pdf", pdf)
    project.put_object("documents", f"{other}/theirs.pdf", pdf)
    project.buckets["other-bucket"] = {f"{me}/secret.pdf": pdf}
    sources = {
        "ok": f"supabase://documents/{me}/a.pdf",
        "climb": f"supabase://documents/{me}/../../../auth/v1/admin/users",
        "bucket": f"supabase://other-bucket/{me}/secret.pdf",
        "theirs": f"supabase://documents/{other}/theirs.pdf",
    }
    ids = {name: project.add_document("pending", user_id=me) for name in sources}
    done = _run_jobs(supabase_settings.replace(max_attempts=1), [
        Job(id=0, source=source, user_id=me, document_id=ids[name]) for name, source in sources.items()])
    by_document = {name: next(job for job in done if job.document_id == ids[name]) for name in sources}
    assert by_document["ok"].state is JobState.DONE, by_document["ok"].errors
    assert "'..'" in by_document["climb"].last_error
    assert "is not the configured storage_bucket" in by_document["bucket"].last_error
    assert f"'{me}'/" in by_document["theirs"].last_error
    assert all(by_document[d].state is JobState.DEAD for d in ("climb", "bucket", "theirs"))
    fetched = [r.path for r in supabase_standin.requests("GET", "/storage")]
    assert fetched == [f"/storage/v1/object/documents/{me}/a.pdf"]
    assert supabase_standin.count("*", "/auth") == 0


def test_a_redirect_from_storage_is_not_followed(supabase_standin, supabase_settings, tmp_path):
    project = supabase_standin.project
    path = f"{uuid.uuid4()}/a.pdf"
    project.put_object("documents", path, multi_page(tmp_path / "a.pdf", pages=1).read_bytes())
    supabase_standin.redirect(f"/storage/v1/object/documents/{path}", f"{supabase_standin.url}/auth/v1/admin/users")
    doc = project.add_document("pending", storage_path=path)
    [job] = _run_jobs(supabase_settings.replace(max_attempts=1), [
        Job(id=0, source=f"supabase://documents/{path}", user_id=path.split("/")[0], document_id=doc)])
    assert job.state is JobState.DEAD and "redirect (HTTP 302); not followed" in job.last_error
    assert supabase_standin.count("*", "/auth") == 0

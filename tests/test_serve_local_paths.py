"""`serve --allow-local-paths DIR` has a fence (issue 22, point 3).

Attacks over real HTTP against real files: paths outside DIR (absolute,
`..`, `~`, a symlink inside DIR pointing out, /etc/shadow, /proc/self/environ)
get one answer whether they exist or not; a file over max_file_mb is refused
before a byte is hashed (a 64 GB sparse file: hashing it would outlast the
client's timeout); a FIFO does not hang the server; no response ever carries
a local file's hash; a path read from a database row is never local."""

from __future__ import annotations

import os

import pytest
from serving import TOKEN, ServeThread

from docutrain_cli.config import Settings
from docutrain_cli.pipeline.load import sha256_file
from docutrain_cli.queues.local import LocalQueue
from docutrain_cli.serve import ServeOptions

OUTSIDE = "storage_path: not inside the folder `serve --allow-local-paths` allows"


@pytest.fixture
def folders(tmp_path):
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir(), elsewhere.mkdir()
    (allowed / "report.pdf").write_bytes(b"%PDF-1.4 inside")
    (elsewhere / "secret.pdf").write_bytes(b"%PDF-1.4 do not read me")
    return allowed, elsewhere


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(queue=str(tmp_path / "queue.db"), store=str(tmp_path / "docutrain.db"), serve_token=TOKEN)


@pytest.fixture
def api(settings, folders):
    serving = ServeThread(settings, ServeOptions(allow_local_paths=str(folders[0])))
    with serving.client() as client:
        yield client
    serving.close()


def post(client, path: str, document_id: str = "d1"):
    return client.post("/v1/documents", json={"user_document_id": document_id, "user_id": "u", "storage_path": path})


def queued(settings) -> list:
    with LocalQueue(settings.queue) as queue:
        return queue.jobs(limit=100)


def test_paths_outside_the_folder_get_one_answer_whether_they_exist_or_not(api, settings, folders):
    allowed, elsewhere = folders
    (allowed / "link.pdf").symlink_to(elsewhere / "secret.pdf")
    (allowed / "dirlink").symlink_to(elsewhere)
    attempts = [
        "/etc/shadow", "/etc/no-such-file", "/proc/self/environ", "file:///proc/self/environ",
        str(elsewhere / "secret.pdf"), str(elsewhere / "missing.pdf"),
        "../elsewhere/secret.pdf", "../elsewhere/missing.pdf", "./../elsewhere/secret.pdf",
        str(allowed / ".." / "elsewhere" / "secret.pdf"), "~/.ssh/id_rsa", "~root/.bash_history",
        "./link.pdf", str(allowed / "link.pdf"), "./dirlink/secret.pdf", "./dirlink/missing.pdf",
    ]
    for path in attempts:
        answer = post(api, path)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json() == {"error": OUTSIDE}, path  # the same words: nothing told about the file
    assert queued(settings) == []


def test_a_file_inside_is_queued_but_its_hash_is_never_sent(api, settings, folders):
    allowed, _ = folders
    answer = post(api, "./report.pdf")
    assert answer.status_code == 202, answer.text
    assert "sha256" not in answer.text
    [job] = queued(settings)
    assert job.source == str((allowed / "report.pdf").resolve())
    assert job.sha256 == sha256_file(job.source)  # kept for the job, as `docutrain enqueue` hashes
    for path in (f"/v1/jobs/{job.id}", "/v1/documents/d1"):
        shown = api.get(path)
        assert shown.status_code == 200 and job.sha256 not in shown.text, path
    assert job.sha256 not in api.get(f"/jobs/{job.id}").text  # the dashboard's job page
    # the same file by its absolute path and through a symlink inside the folder
    (allowed / "sub").mkdir()
    (allowed / "sub" / "alias.pdf").symlink_to(allowed / "report.pdf")
    assert post(api, str(allowed / "report.pdf"), "d2").status_code == 202
    assert post(api, "file://" + str(allowed / "sub" / "alias.pdf"), "d3").status_code == 202


def test_inside_the_folder_what_cannot_be_read_is_said(api, settings, folders, tmp_path):
    allowed, _ = folders
    os.mkfifo(allowed / "pipe.pdf")  # opening it for reading would block without O_NONBLOCK
    (allowed / "folder.pdf").mkdir()
    for path, reason in [("./missing.pdf", "missing.pdf: no such file"), ("./pipe.pdf", "pipe.pdf: not a regular file"),
                         ("./folder.pdf", "folder.pdf: not a regular file"), ("./a\x00b.pdf", "not a path")]:
        answer = post(api, path)
        assert answer.status_code == 422 and answer.json()["error"] == f"storage_path: {reason}", answer.text
    assert queued(settings) == []


def test_max_file_mb_is_checked_before_hashing(settings, folders):
    allowed, _ = folders
    with open(allowed / "huge.pdf", "wb") as fh:
        fh.truncate(64 * 1024**3)  # sparse: 64 GB that take no disk, minutes to hash
    serving = ServeThread(settings.replace(max_file_mb=1), ServeOptions(allow_local_paths=str(allowed)))
    try:
        with serving.client() as client:
            answer = post(client, "./huge.pdf")
    finally:
        serving.close()
    assert answer.status_code == 422
    assert answer.json() == {"error": "storage_path: huge.pdf: larger than max_file_mb (1 MB)"}
    assert queued(settings) == []


def test_a_path_from_the_database_row_is_never_local(supabase_standin, tmp_path, folders):
    allowed, _ = folders
    project = supabase_standin.project
    rows = [project.add_document("pending", user_id="u", storage_path=path)
            for path in (str(allowed / "report.pdf"), "file://" + str(allowed / "report.pdf"), "./report.pdf")]
    settings = Settings(queue=str(tmp_path / "q.db"), store=str(tmp_path / "s.db"), serve_token=TOKEN,
                        supabase_url=supabase_standin.url, supabase_service_role_key=supabase_standin.key)
    serving = ServeThread(settings, ServeOptions(allow_local_paths=str(allowed)))
    try:
        with serving.client() as client:
            for row in rows:
                answer = client.post("/v1/documents", json={"user_document_id": row, "user_id": "u"})
                assert answer.status_code == 422 and "storage_path" in answer.json()["error"], answer.text
    finally:
        serving.close()
    assert queued(settings) == []


def test_the_flag_needs_a_folder(docutrain, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    for value in (str(tmp_path / "file.txt"), str(tmp_path / "nowhere")):
        result = docutrain("serve", "--port", "0", "--allow-local-paths", value, timeout=30)
        assert result.returncode == 2, result.stderr
        assert f"serve --allow-local-paths: {value} is not a folder" in result.stderr

"""A service's workers start with the client libraries they will use
already imported (in the forkserver, once), so the first upload each worker
takes does not wait for them: bench row 8c/8d's first upload took about 1 s
against 0.35 s, most of it `import openai` (0.35 s) and `import supabase`
(0.15 s). A drain does not preload them: an empty cron run stays light."""

from __future__ import annotations

from pathlib import Path

CLIENTS = dict(
    DOCUTRAIN_PROCESSOR="tests.processors:client_modules", DOCUTRAIN_WORKERS="1",
    DOCUTRAIN_EMBEDDER="openai", OPENAI_API_KEY="sk-test-preload-0000",
)


def modules_seen(docutrain) -> list[str]:
    notes = Path(str(docutrain.output) + ".modules")
    return notes.read_text().splitlines() if notes.exists() else []


def enqueue_one(docutrain, name: str) -> None:
    path = docutrain.workdir / name
    path.write_text("a document")
    assert docutrain("enqueue", str(path)).returncode == 0


def test_a_service_worker_begins_its_first_job_with_its_clients_imported(docutrain, supabase_standin):
    env = dict(CLIENTS, SUPABASE_URL=supabase_standin.url, SUPABASE_SERVICE_ROLE_KEY=supabase_standin.key)
    service = docutrain.start("run", **env)
    try:
        enqueue_one(docutrain, "first.txt")
        docutrain.wait_for(lambda: modules_seen(docutrain), what="the first job")
    finally:
        service.terminate()
        _, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert modules_seen(docutrain) == ["openai supabase"]


def test_a_drain_imports_them_only_when_a_job_needs_them(docutrain):
    enqueue_one(docutrain, "first.txt")
    result = docutrain("run", "--drain", **CLIENTS)
    assert result.returncode == 0, result.stderr
    assert modules_seen(docutrain) == [""]


def test_a_worker_begins_with_what_its_processor_names_in_worker_preload(docutrain):
    # The forkserver imports them (run/worker_preload.py), not each worker, and
    # not the runner before it starts the forkserver (console.py).
    enqueue_one(docutrain, "first.txt")
    result = docutrain("run", "--drain", DOCUTRAIN_PROCESSOR="tests.declared_preload:where_imported",
                       DOCUTRAIN_WORKERS="1")
    assert result.returncode == 0, result.stderr
    (line,) = Path(str(docutrain.output) + ".preload").read_text().splitlines()
    imported_by, worker = line.split()
    assert imported_by != "None" and imported_by != worker  # before the fork: in the forkserver

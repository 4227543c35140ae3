"""A document that ends reaches Supabase at once, not at the runner's next
periodic flush (issue 24, bench row 8d: the 2 s flush was 0.8 s of a 1.3 s
upload). Here the periodic flush never comes (an hour apart), so every
status Supabase receives was pushed because its document ended; `processing`
is left for the periodic flush."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

from docutrain_cli.jobs import Job
from docutrain_cli.queues.local import LocalQueue

# `docutrain run` (a service) whose periodic status flush is an hour apart.
SERVICE_WITHOUT_PERIODIC_FLUSH = textwrap.dedent("""
    import sys
    from docutrain_cli.run import runner
    from docutrain_cli.cli import main

    runner.FLUSH_EVERY = 3600.0
    sys.argv = ["docutrain", "run"]
    main()
""")


def test_ready_goes_to_supabase_when_the_job_ends_busy_or_idle(docutrain, supabase_standin, tmp_path):
    project = supabase_standin.project
    env = {**docutrain.env, "DOCUTRAIN_PROCESSOR": "tests.processors:by_name", "DOCUTRAIN_WORKERS": "2",
           "DOCUTRAIN_EMBEDDER": "offline", "SUPABASE_URL": supabase_standin.url,
           "SUPABASE_SERVICE_ROLE_KEY": supabase_standin.key}
    service = subprocess.Popen([sys.executable, "-c", SERVICE_WITHOUT_PERIODIC_FLUSH], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    docutrain.started.append(service)  # killed at the end if the test fails
    # The service's reconcile (at start) looks for pending rows: let it find none.
    docutrain.wait_for(lambda: supabase_standin.count("GET", "/rest/v1/user_documents"), what="the reconcile")

    quick, waiting = tmp_path / "quick.txt", tmp_path / "wait-b.txt"
    quick.write_text("ends at once")
    waiting.write_text("ends when wait-b.go exists")
    docs = {path: project.add_document("pending", storage_path=f"{uuid.uuid4()}/{path.name}")
            for path in (quick, waiting)}
    with LocalQueue(docutrain.queue) as producer:  # one commit: leased together; wakes the runner
        producer.enqueue([Job(id=0, source=str(path), document_id=doc) for path, doc in docs.items()])

    docutrain.wait_for(lambda: project.document(docs[quick])["status"] == "ready", what="quick.txt ready")
    # Its `processing` went with it, coalesced: one PATCH, `ready`.
    sent = [r.json()["status"] for r in supabase_standin.requests("PATCH", "/rest/v1/user_documents")
            if f"id=eq.{docs[quick]}" in r.query]
    assert sent == ["ready"]
    # The one still running: its `processing` waits for the periodic flush.
    assert docutrain.status()["running"] == 1
    assert project.document(docs[waiting])["status"] == "pending"

    waiting.with_suffix(".go").write_text("")
    docutrain.wait_for(lambda: project.document(docs[waiting])["status"] == "ready", what="wait-b.txt ready")
    assert docutrain.status()["done"] == 2  # and the service is idle
    service.terminate()
    _, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert supabase_standin.count("PATCH", "/rest/v1/user_documents") == 2  # nothing sent twice

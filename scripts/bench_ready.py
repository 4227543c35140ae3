"""Rows 8c and 8d of scripts/bench.py: upload to searchable (issue 24, point 7).

A real `docutrain serve` and a real service runner (`docutrain run --workers
2`, no --drain, default poll_interval) as processes on 127.0.0.1, the OpenAI
embeddings stand-in (tests/openai_standin.py, in this process) answering
every request after 300 ms, and a fresh 10-page PDF (about 2,500 characters
of prose a page) for every upload, so the embedding cache never answers for
the API. One upload at a time, each after a 0.5-1.0 s pause, so the service
is idle when it arrives. One warm-up upload per worker first (a worker's
first job makes its HTTP clients); their latencies are in the JSON
(`warmup_ms`), not in the samples.

8c  local paths: `serve --allow-local-paths DIR`, the POST names a file in
    DIR. Ready is what the app sees: `GET /v1/documents/{id}` polled every
    10 ms until its status is `ready`, from just before the POST.
8d  Supabase: the Supabase stand-in (tests/supabase_standin.py: Storage and
    PostgREST, in this process) holds the PDF in its `documents` bucket and a
    `pending` user_documents row, as the app leaves them after an upload; the
    POST names the Storage path; the worker downloads it, embeds, uploads the
    chunks to `document_chunks`, and the runner's outbox sends the status.
    Ready is the user_documents row's status becoming `ready` in the
    stand-in (read under its lock every 5 ms), from just before the POST;
    its chunks are checked to be there then.

The baseline is the floor: 300 ms times the embedding requests the stand-in
answered for the document. The JSON splits each latency (see `_split`)
with the job's `finished_at` (the runner settled it) and the worker's own
`seconds`, read from `GET /v1/jobs/{id}` afterwards, on this machine's clock.

Run just these: `.venv/bin/python scripts/bench.py --only 8c,8d`.
"""

from __future__ import annotations

import datetime
import random
import subprocess
import time
import uuid
from pathlib import Path

import bench
from bench_http import TOKEN, start_serve, stop, _wait_ready

EMBED_LATENCY = 0.3  # seconds the embedding API takes to answer one request
PAGES = 10
WORKERS = 2
POLL = {"local": 0.01, "supabase": 0.005}
TARGET_P50 = {"local": 1.0, "supabase": 2.0}  # seconds
DIMENSIONS = "256"  # keeps the stand-in's vectors cheap to make (row 6 does the same)


def uploads_for(mode) -> int:
    return 12 if mode.name == "quick" else 40


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_ready_local(mode, root: Path, ncpu: int, reps: int):
    return _bench(mode, root, supabase=False)


def bench_ready_supabase(mode, root: Path, ncpu: int, reps: int):
    return _bench(mode, root, supabase=True)


def _bench(mode, root: Path, *, supabase: bool):
    import httpx

    openai_standin = bench._load_standin()
    kind = "supabase" if supabase else "local"
    d = bench.fresh_dir(root, f"ready-{kind}")
    pdfs = d / "uploads"
    pdfs.mkdir()
    count = uploads_for(mode)
    files = [bench.write_pdf(pdfs / f"upload{i:03d}.pdf", PAGES, 9000 + i) for i in range(WORKERS + count)]
    supa = None
    with openai_standin.Server() as embeddings:
        embeddings.latency = EMBED_LATENCY
        env = {
            "DOCUTRAIN_EMBEDDER": "openai", "OPENAI_API_KEY": "sk-bench-ready", "OPENAI_BASE_URL": embeddings.base_url,
            "DOCUTRAIN_EMBEDDING_DIMENSIONS": DIMENSIONS,
        }
        serve_args: list[str] = []
        if supabase:
            from supabase_standin import StandIn

            supa = StandIn()
            env.update(SUPABASE_URL=supa.url, SUPABASE_SERVICE_ROLE_KEY=supa.key)
        else:
            serve_args = ["--allow-local-paths", str(pdfs)]
        serve, port = start_serve(bench, d, env, serve_args)
        runner_log = (d / "runner.log").open("w")
        runner = subprocess.Popen(
            bench.docutrain_cmd() + ["run", "--workers", str(WORKERS)],
            env=bench.base_env(d / "queue.db", d / "store.db", **env), cwd=d,
            stdout=subprocess.DEVNULL, stderr=runner_log,
        )
        samples: list[dict] = []
        rng = random.Random(24)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=30) as client:
                _wait_ready(client, runner)
                for i, path in enumerate(files):
                    time.sleep(0.5 + rng.random() * 0.5)  # the service is idle again
                    requests_before = embeddings.successes
                    if supa is None:
                        sample = _upload_local(client, f"ready-{i}", path)
                    else:
                        sample = _upload_supabase(client, supa, path)
                    sample["embedding_requests"] = embeddings.successes - requests_before
                    samples.append(sample)
                    if i < WORKERS:
                        bench.log(f"8{'d' if supabase else 'c'} warm-up upload: {sample['seconds'] * 1000:.0f} ms")
        finally:
            stop(runner)
            stop(serve)
            runner_log.close()
            if supa is not None:
                supa.close()
    return _rows(kind, samples[:WORKERS], samples[WORKERS:])


def _upload_local(client, document_id: str, path: Path) -> dict:
    before = time.time()
    answer = client.post("/v1/documents", json={"user_document_id": document_id, "user_id": "bench-user",
                                                 "storage_path": str(path)})
    if answer.status_code != 202:
        raise bench.BenchError(f"POST /v1/documents answered {answer.status_code}: {answer.text}")
    job_id = answer.json()["job_id"]
    end = time.monotonic() + 120
    while True:
        status = client.get(f"/v1/documents/{document_id}").json()["status"]
        if status == "ready":
            seconds = time.time() - before
            break
        if status == "error" or time.monotonic() > end:
            raise bench.BenchError(f"document {document_id}: {status}: {client.get(f'/v1/jobs/{job_id}').text}")
        time.sleep(POLL["local"])
    return _split(client, job_id, before, seconds)


def _upload_supabase(client, supa, path: Path) -> dict:
    project = supa.project
    user_id = str(uuid.uuid4())
    storage_path = f"{user_id}/{path.name}"
    # What the app has done before it calls docutrain: the file in Storage, a pending row.
    project.put_object("documents", storage_path, path.read_bytes())
    document_id = project.add_document("pending", user_id=user_id, storage_path=storage_path)
    before = time.time()
    answer = client.post("/v1/documents", json={"user_document_id": document_id, "user_id": user_id,
                                                 "storage_path": storage_path})
    if answer.status_code != 202:
        raise bench.BenchError(f"POST /v1/documents answered {answer.status_code}: {answer.text}")
    job_id = answer.json()["job_id"]
    end = time.monotonic() + 120
    while True:
        row = project.document(document_id)
        if row["status"] == "ready":
            seconds = time.time() - before
            break
        if row["status"] == "error" or time.monotonic() > end:
            raise bench.BenchError(f"document {document_id}: {row}: {client.get(f'/v1/jobs/{job_id}').text}")
        time.sleep(POLL["supabase"])
    chunks = sum(1 for c in project.rows("document_chunks") if c["user_document_id"] == document_id)
    if not chunks or chunks != row["chunk_count"]:
        raise bench.BenchError(f"document {document_id} ready with {chunks} chunks in Supabase, row says {row}")
    sample = _split(client, job_id, before, seconds)
    sample["supabase_chunks"] = chunks
    return sample


def _split(client, job_id: int, before: float, seconds: float) -> dict:
    """The latency, and where it went: the worker's own time (download,
    extract, chunk, embed, store), the rest up to the runner settling the job
    (POST, wake-up, lease, hand-off to the pool, the result's way back), and
    from there until ready was seen (for 8d: the status's way to Supabase)."""
    job = client.get(f"/v1/jobs/{job_id}").json()
    finished = datetime.datetime.fromisoformat(job["finished_at"]).timestamp()
    result = job.get("result") or {}
    return {
        "seconds": seconds,
        "worker": result.get("seconds"),
        "dispatch": finished - before - result.get("seconds", 0.0),
        "finished_to_seen": before + seconds - finished,
        "pages": result.get("pages"),
        "chunks": result.get("chunks"),
    }


def _rows(kind: str, warmups: list[dict], samples: list[dict]):
    latencies = [s["seconds"] for s in samples]
    p50, p95, worst = percentile(latencies, 0.5), percentile(latencies, 0.95), max(latencies)
    floors = [s["embedding_requests"] * EMBED_LATENCY for s in samples]
    floor = bench.med(floors)
    target = TARGET_P50[kind]
    parts = {key: bench.med([s[key] for s in samples]) * 1000
             for key in ("worker", "dispatch", "finished_to_seen")}
    details = {
        "p50_ms": p50 * 1000, "p95_ms": p95 * 1000, "max_ms": worst * 1000,
        "p50_result": "PASS" if p50 < target else "MISS", "p95_result": "PASS" if p95 < target else "MISS",
        "uploads": len(samples), "pages_per_document": PAGES,
        "chunks_per_document": bench.med([s["chunks"] for s in samples]),
        "embedding_requests_per_document": bench.med([s["embedding_requests"] for s in samples]),
        "embedding_latency_ms": EMBED_LATENCY * 1000,
        "median_split_ms": parts,
        "warmup_ms": [w["seconds"] * 1000 for w in warmups],
        "runner": f"docutrain run --workers {WORKERS} (a service, default poll_interval), woken by serve",
        "ready_seen_by": (
            "the user_documents row in the Supabase stand-in, read every 5 ms" if kind == "supabase"
            else "GET /v1/documents/{id}, polled every 10 ms"
        ),
    }
    if kind == "supabase":
        row_id, name = "8d", "upload -> ready in Supabase p50 (p95 in details), 10-page PDF, Storage + chunks"
    else:
        row_id, name = "8c", "upload -> ready p50 (p95 in details), 10-page PDF, local path"
    bench.log(f"{row_id} upload -> ready: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
              f"max {worst * 1000:.0f} ms (floor {floor * 1000:.0f} ms); median split {parts}")
    row = bench.Row(
        row_id, name, p50 * 1000, "ms", floor * 1000,
        f"the embedding API's {EMBED_LATENCY * 1000:.0f} ms x requests per document", p50 / floor if floor else None,
        f"p50 < {target * 1000:,.0f} ms", p50 < target, details,
    )
    return [row], {"samples": samples, "warmups": warmups}

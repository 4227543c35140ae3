"""Measurement 8 of scripts/bench.py: HTTP intake (`docutrain serve`).

8a  POST /v1/documents requests/s: one `docutrain serve` process (one uvicorn
    worker) on the local SQLite queue, every request a new document (the
    uniqueness check, an insert and a commit each). The load comes from
    another process: a small asyncio client on keep-alive connections
    (httpx would be the bottleneck long before the server).
8b  upload -> processing latency: a service runner (`docutrain run`, no
    --drain) idles with poll_interval 30s, so only the wake-up from `serve`
    can start a job quickly. Documents are posted one at a time with pauses
    (so the runner is idle each time); latency is from just before the POST
    to the job's started_at (the lease, when the runner records
    `processing`), both on this machine's clock.

Run just these: `.venv/bin/python scripts/bench.py --only 8` (or `--http`).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import subprocess
import sys
import time
from pathlib import Path

TOKEN = "bench-token-0123456789abcdef"
POLL_INTERVAL = "30s"
# serve refuses Storage paths when the built-in processor could not download
# them (no Supabase here); this one takes any path and does nothing.
NOOP = {"DOCUTRAIN_PROCESSOR": "docutrain_cli.run.worker:noop"}


def start_serve(bench, d: Path, extra_env: dict | None = None, args: list[str] = ()) -> tuple[subprocess.Popen, int]:
    env = bench.base_env(d / "queue.db", d / "store.db", DOCUTRAIN_SERVE_TOKEN=TOKEN, **(extra_env or {}))
    proc = subprocess.Popen(
        bench.docutrain_cmd() + ["serve", "--port", "0", *args], env=env, cwd=d,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stderr.readline()
    if "listening on http://" not in line:
        proc.kill()
        raise bench.BenchError(f"serve did not start: {line}{proc.stderr.read()[-2000:]}")
    return proc, int(line.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the load generator (run in its own process: `bench.py _child http_load`) --------------------


def _request(port: int, document_id: str) -> bytes:
    body = json.dumps(
        {"user_document_id": document_id, "user_id": "bench-user", "storage_path": f"bench-user/{document_id}.pdf"}
    ).encode()
    head = (
        f"POST /v1/documents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def _load(port: int, total: int, connections: int, prefix: str) -> dict:
    counter = iter(range(total))
    statuses: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in counter:
            writer.write(_request(port, f"{prefix}-{i}"))
            status = await _read_response(reader)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "statuses": statuses}


def load_child(port: str, total: str, connections: str, prefix: str) -> dict:
    return asyncio.run(_load(int(port), int(total), int(connections), prefix))


# -- 8a and 8b ----------------------------------------------------------------------------------


def bench_http(mode, root: Path, ncpu: int, reps: int):
    import bench

    posts = 5000 if mode.name == "quick" else 20_000
    connections = 32
    s: dict[str, list] = {"posts_per_s": [], "latency": []}
    for rep in range(reps):
        d = bench.fresh_dir(root, "http")
        proc, port = start_serve(bench, d, NOOP)
        try:
            bench.child("http_load", port, 300, 8, "warmup", env=bench.base_env(), cwd=d)
            _, result = bench.child("http_load", port, posts, connections, f"r{rep}", env=bench.base_env(), cwd=d)
        finally:
            stop(proc)
        if result["statuses"] != {"202": posts}:
            raise bench.BenchError(f"POST /v1/documents answered {result['statuses']}")
        s["posts_per_s"].append(posts / result["elapsed"])
        bench.log(f"http rep {rep + 1}/{reps}: {s['posts_per_s'][-1]:,.0f} POST/s")
    s["latency"] = wake_latencies(bench, root, 20 if mode.name == "quick" else 60)
    lat = sorted(s["latency"])
    p50 = lat[len(lat) // 2]
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    rows = [
        bench.Row(
            "8a", "POST /v1/documents, 1 uvicorn worker, SQLite queue", bench.med(s["posts_per_s"]), "req/s",
            None, "-", None, ">= 1,000 req/s", bench.med(s["posts_per_s"]) >= 1000,
            {"requests": posts, "connections": connections, "client": "asyncio keep-alive, separate process",
             "each request": "auth, JSON, uniqueness check + insert + commit (WAL, synchronous=NORMAL)"},
        ),
        bench.Row(
            "8b", "upload -> processing latency p50 (p95 in details)", p50 * 1000, "ms",
            float(POLL_INTERVAL[:-1]) * 1000 / 2, f"mean wait polling every {POLL_INTERVAL}", None,
            "p95 < 1,000 ms", p95 < 1.0,
            {"p50_ms": p50 * 1000, "p95_ms": p95 * 1000, "max_ms": lat[-1] * 1000, "uploads": len(lat),
             "runner": f"docutrain run --workers 1, poll_interval {POLL_INTERVAL}, woken by serve"},
        ),
    ]
    bench.log(f"upload -> processing: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    return rows, s


def wake_latencies(bench, root: Path, uploads: int) -> list[float]:
    import httpx

    d = bench.fresh_dir(root, "wake")
    env = {"DOCUTRAIN_POLL_INTERVAL": POLL_INTERVAL, **NOOP}
    proc, port = start_serve(bench, d, env)
    runner = subprocess.Popen(
        bench.docutrain_cmd() + ["run", "--workers", "1"],
        env=bench.base_env(d / "queue.db", d / "store.db", **env), cwd=d,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    latencies = []
    rng = random.Random(8)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            _wait_ready(client, runner)
            for i in range(uploads):
                time.sleep(0.3 + rng.random() * 0.4)  # the runner is idle again
                before = time.time()
                answer = client.post("/v1/documents", json={
                    "user_document_id": f"wake-{i}", "user_id": "u", "storage_path": f"u/{i}.pdf"})
                job_id = answer.json()["job_id"]
                job = _wait_done(client, job_id)
                latencies.append(datetime.datetime.fromisoformat(job["started_at"]).timestamp() - before)
    finally:
        stop(runner)
        stop(proc)
    return latencies


def _wait_ready(client, runner, timeout: float = 60.0) -> None:
    """Until the runner holds the queue (and so listens for wake-ups)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if client.get("/v1/status").json().get("runner"):
            time.sleep(0.5)  # the lock is taken just before the pool starts
            return
        if runner.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError("the runner did not start")


def _wait_done(client, job_id: int, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] == "done":
            return job
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} not done after {timeout} s")


if __name__ == "__main__":  # pragma: no cover - a helper, run through bench.py
    sys.exit("run: .venv/bin/python scripts/bench.py --only 8")

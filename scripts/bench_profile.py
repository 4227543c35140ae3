#!/usr/bin/env python3
"""Profiles behind the MISS rows of scripts/bench.py (see docs/benchmarks.md).

    .venv/bin/python scripts/bench_profile.py pipeline     # cProfile of process_job on a 200-page PDF
    .venv/bin/python scripts/bench_profile.py stages       # process_job's stages timed one by one (no profiler)
    .venv/bin/python scripts/bench_profile.py dispatcher   # cProfile of the runner with the no-op processor
    .venv/bin/python scripts/bench_profile.py scaling      # CPU seconds of runner and workers at 1 and 2 workers

Everything runs in a temporary folder; nothing in the repository is changed.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

import bench  # noqa: E402


def _settings(work: Path, **extra):
    from docutrain_cli.config import load_settings

    return load_settings({"store": str(work / "store.db"), "embedder": "offline", **extra}, environ={})


def _best(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def pipeline(work: Path) -> None:
    from docutrain_cli.jobs import Job
    from docutrain_cli.run.process import process_job
    from docutrain_cli.run.worker import WorkerContext

    pdf = bench.write_pdf(work / "p200.pdf", 200, 100)
    settings = WorkerContext(_settings(work))  # as a worker keeps it for all its jobs
    job = Job(id=1, source=str(pdf))
    process_job(job, settings)  # warm up: imports, store schema
    t_job = _best(lambda: process_job(job, settings))
    t_raw = _best(lambda: bench._raw_extract(str(pdf)))
    print(f"200 pages, one process, best of 5: process_job {t_job:.3f} s, raw PyMuPDF extraction {t_raw:.3f} s,"
          f" ratio {t_raw / t_job:.2f}")
    profile = cProfile.Profile()
    profile.enable()
    process_job(job, settings)
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(12)
    stats.sort_stats("cumulative").print_stats(r"docutrain_cli|get_text|page_get_textpage", 14)


def stages(work: Path) -> None:
    """process_job's stages timed one by one, without a profiler's distortion."""
    from array import array

    from docutrain_cli.jobs import Job
    from docutrain_cli.pipeline.chunk import chunk_pages
    from docutrain_cli.pipeline.extract import Extraction
    from docutrain_cli.run.process import process_job
    from docutrain_cli.store.local import ChunkRow
    from docutrain_cli.run.worker import WorkerContext

    pdf = bench.write_pdf(work / "p200.pdf", 200, 100)
    context = WorkerContext(_settings(work))
    settings = context.settings
    embedder = context.embedder
    store = context.store
    job = Job(id=1, source=str(pdf))
    process_job(job, context)  # warm up

    def extract():
        with Extraction(pdf) as doc:
            return [p for p in doc.pages()]

    pages = extract()

    def chunk():
        return list(chunk_pages(pages, embedder.counter, chunk_tokens=settings.chunk_tokens,
                                overlap=settings.chunk_overlap, max_input_tokens=embedder.max_input_tokens))

    chunks = chunk()
    count = lambda: [embedder.counter.count(text) for _, text in pages]  # noqa: E731
    def embed():  # as process_job does: in batches, float32 arrays
        texts, counts = [c.content for c in chunks], [c.token_count for c in chunks]
        return [v for _, batch in embedder.embed_batches(texts, counts) for v in batch]

    vectors = embed()
    rows = [ChunkRow(c.index, c.page_start, c.page_end, c.token_count, c.content, array("f", v))
            for c, v in zip(chunks, vectors)]

    # Documents this worker has not seen (other seeds, as in bench.py row 1):
    # every chunk is embedded and cached, as in a run.
    new_docs = iter([Job(id=10 + i, source=str(bench.write_pdf(work / f"new{i}.pdf", 200, 101 + i))) for i in range(5)])

    def new_document():
        return process_job(next(new_docs), context)

    write = lambda: store.replace_chunks("stage-test", rows, embedding_model=embedder.model,  # noqa: E731
                                         embedding_dimensions=len(vectors[0]), page_count=len(pages))
    times = {
        "raw PyMuPDF open + get_text (baseline)": _best(lambda: bench._raw_extract(str(pdf))),
        "extract (docutrain Extraction.pages)": _best(extract),
        "chunk (split + token estimates)": _best(chunk),
        "  of which: one estimate pass over the page text": _best(count),
        "embed (offline embedder)": _best(embed),
        "store (replace_chunks, one transaction)": _best(write),
        "process_job total (vectors all in the cache)": _best(lambda: process_job(job, context)),
        "process_job total (a new document)": _best(new_document),
    }
    print(f"200 pages, {len(chunks)} chunks, one process, best of 5:")
    for name, seconds in times.items():
        print(f"  {name:50s} {seconds * 1e3:7.1f} ms  {seconds / 200 * 1e3:.2f} ms/page")


def _dispatch(work: Path, n: int, profile: cProfile.Profile | None = None) -> float:
    from docutrain_cli.jobs import Job
    from docutrain_cli.queues.local import LocalQueue
    from docutrain_cli.run.runner import Runner
    from docutrain_cli.status.recorder import StatusRecorder

    run_dir = bench.fresh_dir(work, f"dispatch-{n}")
    (run_dir / "f.txt").write_text("x")
    settings = _settings(run_dir, queue=str(run_dir / "queue.db"), workers=2,
                         processor="docutrain_cli.run.worker:noop")
    queue = LocalQueue(run_dir / "queue.db")
    queue.enqueue([Job(id=0, source=str(run_dir / "f.txt"), sha256=f"{i:064x}") for i in range(n)])
    runner = Runner(settings, queue, status=StatusRecorder(settings))
    if profile:
        profile.enable()
    summary = runner.run(drain=True)
    if profile:
        profile.disable()
    queue.close()
    assert summary.done == n
    return summary.elapsed


def dispatcher(work: Path) -> None:
    one = min(_dispatch(work, 1) for _ in range(3))
    many = min(_dispatch(work, 2000) for _ in range(3))
    print(f"no-op run, 2 workers: 1 job {one:.3f} s (pool start-up and drain check), 2,000 jobs {many:.3f} s;"
          f" marginal {(many - one) / 1999 * 1e3:.3f} ms/job, {1999 / (many - one):,.0f} jobs/s steady")
    profile = cProfile.Profile()
    _dispatch(work, 2000, profile)
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(8)
    stats.sort_stats("cumulative").print_stats(r"docutrain_cli|persistqueue|asdict", 16)


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        nxt = []
        for parent in frontier:
            try:
                children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            except OSError:
                children = []
            nxt += [int(c) for c in children]
        found += nxt
        frontier = nxt
    return found


def scaling(work: Path) -> None:
    """CPU seconds of the runner and of every worker at 1 and 2 workers: if
    the workers' total stays the same, nothing in docutrain serialises them."""
    import json
    import subprocess

    folder, _ = bench.pdf_folder(work, "scaling", [200] * 6, 100)
    for workers in (1, 2, 1, 2):
        d = bench.fresh_dir(work, f"w{workers}")
        queue, store = d / "queue.db", d / "store.db"
        bench.enqueue_cli(folder, queue, store, d)
        proc = subprocess.Popen(
            bench.docutrain_cmd() + ["run", "--drain", "--workers", str(workers), "--json"],
            env=bench.base_env(queue, store), cwd=d, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        seen: dict[int, float] = {}
        while proc.poll() is None:
            for pid in [proc.pid, *_descendants(proc.pid)]:
                cpu = _cpu_seconds(pid)
                if cpu is not None:
                    seen[pid] = cpu
            time.sleep(0.02)
        elapsed = json.loads(proc.stdout.read())["elapsed"]
        others = sorted((v for k, v in seen.items() if k != proc.pid), reverse=True)
        busy = others[:workers]
        print(f"{workers} worker(s): elapsed {elapsed:.2f} s; runner process {seen.get(proc.pid, 0):.2f} s CPU;"
              f" workers {', '.join(f'{c:.2f}' for c in busy)} s CPU (sum {sum(busy):.2f});"
              f" forkserver and others {sum(others[workers:]):.2f} s")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "pipeline"
    with tempfile.TemporaryDirectory(prefix="docutrain-profile-") as tmp:
        os.chdir(tmp)
        {"pipeline": pipeline, "stages": stages, "dispatcher": dispatcher, "scaling": scaling}[what](Path(tmp))


if __name__ == "__main__":
    main()

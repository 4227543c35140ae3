"""Measurement 12 of scripts/bench.py: the Batch API mode (issue 18).

The same corpus is embedded twice: once with `docutrain run` (sync) against
the embeddings stand-in, once with `docutrain run --batch` against the Files +
Batches stand-in (a first run sends, the stand-in completes the batch, a
second run applies). Rows: cost per million billed tokens in each mode (want
batch = 0.5x sync), and files and request lines used against the fewest the
Batch API's limits allow for these texts. Run just this with `--batch` (or `--only 12`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sqlite3
import sys
from pathlib import Path


def _load(name: str, repo: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, repo / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def bench_batch(mode, root: Path, ncpu: int, reps: int, *, h) -> tuple[list, dict]:
    """`h` is scripts/bench.py (its helpers and Row), passed in to avoid a circular import."""
    sys.path.insert(0, str(h.REPO / "tests"))
    standin = _load("openai_standin", h.REPO)
    batch_standin = _load("openai_batch_standin", h.REPO)
    from docutrain_cli.batch import plan
    from docutrain_cli.pipeline.embed import MAX_INPUTS_PER_REQUEST, MAX_TOKENS_PER_REQUEST

    folder, files = h.pdf_folder(root / "corpus", "embed", list(mode.embed_docs), 800)
    dims = "256"
    workers = str(max(2, ncpu))
    s: dict[str, list[float]] = {k: [] for k in (
        "sync_tokens", "sync_cost", "batch_tokens", "batch_cost", "files", "min_files",
        "requests", "min_requests", "inputs", "batches")}
    for rep in range(reps):
        with standin.Server() as state:
            d = h.fresh_dir(root, "batch-sync")
            env = h.base_env(d / "queue.db", d / "store.db", DOCUTRAIN_EMBEDDER="openai", OPENAI_API_KEY="dummy",
                             OPENAI_BASE_URL=state.base_url, DOCUTRAIN_EMBEDDING_DIMENSIONS=dims)
            h.enqueue_cli(folder, d / "queue.db", d / "store.db", d)
            _, out = h.run(h.docutrain_cmd() + ["run", "--drain", "--workers", workers, "--json"], env, d)
            sync = json.loads(out)
            s["sync_tokens"].append(state.tokens)
            s["sync_cost"].append(sync["cost_usd"])
        with batch_standin.BatchServer() as state:
            d = h.fresh_dir(root, "batch-batch")
            env = h.base_env(d / "queue.db", d / "store.db", DOCUTRAIN_EMBEDDER="openai", OPENAI_API_KEY="dummy",
                             OPENAI_BASE_URL=state.base_url, DOCUTRAIN_EMBEDDING_DIMENSIONS=dims)
            h.enqueue_cli(folder, d / "queue.db", d / "store.db", d)
            cmd = h.docutrain_cmd() + ["run", "--batch", "--drain", "--workers", workers, "--json"]
            _, out = h.run(cmd, env, d)
            sent = json.loads(out)["batch"]
            state.advance(None, "completed")
            _, out = h.run(cmd, env, d)
            back = json.loads(out)
            if back["batch"]["documents_ready"] != len(files):
                raise h.BenchError(f"batch run incomplete: {back['batch']}")
            s["batch_tokens"].append(state.tokens_billed)
            s["batch_cost"].append(back["cost_usd"])
            s["files"].append(state.files_created)
            s["batches"].append(state.batches_created)
            s["requests"].append(sent["requests"])
            s["inputs"].append(sent["inputs"])
            # The fewest the limits allow for these distinct texts (tokens as the server counts them).
            db = sqlite3.connect(d / "store.db")
            texts = {content for (content,) in db.execute("SELECT content FROM chunks")}
            db.close()
            tokens = sum(standin.count_tokens(t) for t in texts)
            size = sum(len(json.dumps(t, ensure_ascii=False).encode()) + 1 for t in texts)
            s["min_files"].append(plan.minimum_files(len(texts), tokens, size))
            s["min_requests"].append(max(math.ceil(len(texts) / MAX_INPUTS_PER_REQUEST),
                                         math.ceil(tokens / MAX_TOKENS_PER_REQUEST)))
        h.log(f"batch rep {rep + 1}/{reps}: sync ${s['sync_cost'][-1]:.6f} for {s['sync_tokens'][-1]} tokens, "
              f"batch ${s['batch_cost'][-1]:.6f} for {s['batch_tokens'][-1]} tokens; {s['files'][-1]} files "
              f"(min {s['min_files'][-1]}), {s['requests'][-1]} requests (min {s['min_requests'][-1]})")
    per_m = lambda cost, tok: h.med([c * 1e6 / t for c, t in zip(s[cost], s[tok])])  # noqa: E731
    sync_m, batch_m = per_m("sync_cost", "sync_tokens"), per_m("batch_cost", "batch_tokens")
    files, min_files = h.med(s["files"]), h.med(s["min_files"])
    requests, min_requests = h.med(s["requests"]), h.med(s["min_requests"])
    common = {"documents_pages": list(mode.embed_docs), "dimensions_requested": int(dims),
              "inputs": h.med(s["inputs"]), "batches_created": h.med(s["batches"])}
    rows = [
        h.Row("12a", "cost per million tokens, batch vs sync", batch_m, "$", sync_m, "sync run",
              batch_m / sync_m if sync_m else None, "0.5x", abs(batch_m / sync_m - 0.5) < 1e-6 if sync_m else False,
              common | {"sync_tokens": h.med(s["sync_tokens"]), "batch_tokens": h.med(s["batch_tokens"])}),
        h.Row("12b", "batch request files used", files, "files", min_files, "fewest the limits allow",
              min_files / files if files else None, "= minimum", files <= min_files, common),
        h.Row("12c", "batch request lines used", requests, "req", min_requests, "fewest the limits allow",
              min_requests / requests if requests else None, "= minimum", requests <= min_requests, common),
    ]
    return rows, s

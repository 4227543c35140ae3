"""Worker processes that embed as fast as they can through one shared rate
budget (tests/test_ratelimit.py, tests/test_rate_budget_pgmq.py): far more
demand than the stand-in's limit allows, with no PDF work in between, so
only the budget can keep them from being refused."""

from __future__ import annotations

import multiprocessing
import time

KEY = "sk-test-budget-workers-0123456789abcdef"


def _embed_loop(base_url: str, store_spec: tuple[str, str], requests: int, words: int, barrier) -> None:
    from docutrain_cli.pipeline.embed import OpenAIEmbedder
    from docutrain_cli.ratelimit.budget import RateBudget, SQLiteBudgetStore, budget_key

    kind, where = store_spec
    if kind == "sqlite":
        store = SQLiteBudgetStore(where)
    else:
        from docutrain_cli.ratelimit.postgres import PostgresBudgetStore

        store = PostgresBudgetStore(where)
    budget = RateBudget(store, budget_key(base_url, KEY, "text-embedding-3-small"))
    embedder = OpenAIEmbedder(api_key=KEY, base_url=base_url, dimensions=4, budget=budget, timeout=30)
    barrier.wait()
    for i in range(requests):
        embedder.embed([" ".join(f"w{i}x{j}" for j in range(words))])


def run_workers(base_url: str, store_specs: list[tuple[str, str]], requests: int, words: int) -> float:
    """One process per store spec (the same spec = a shared budget); returns seconds taken."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(store_specs))
    procs = [
        context.Process(target=_embed_loop, args=(base_url, spec, requests, words, barrier))
        for spec in store_specs
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0, f"a worker process failed (exit {proc.exitcode})"
    return time.monotonic() - started

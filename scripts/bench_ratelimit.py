"""Measurements 10 and 11 of scripts/bench.py: embedding at the account's limit.

The OpenAI stand-in (tests/openai_standin.py) enforces an account limit the
way OpenAI does: a one-minute token (or request) bucket refilled
continuously, 150 ms per answer, x-ratelimit-* headers, 429 when over. The
CLI runs as real subprocesses (`run --drain`) with fresh queues, stores and
budgets; the stand-in starts with a full bucket, as an idle account does.

10a-10c  TPM-limited, 2 / 8 / 24 workers
10d      RPM-limited, 8 workers
10e      two runners (4 workers each) on one pgmq queue, one TPM limit
       (needs PostgreSQL on 127.0.0.1:5432; left out with a note otherwise)
11       the acceptance run of issue 13: 120,000 TPM, `run --workers 8
       --drain`, 40 documents of 30 pages

For 10: what the runs achieve per minute once the first minute's burst is
spent (from the stand-in's log of accepted requests, from 60 s after the
start to the last answer) against the limit (want >= 0.9), 429 answers per
successful request (want <= 0.05), and dead jobs (want 0). For 11: all done,
0 dead, 429s under 10 % of successes, and a wall time within 1.25x of what
the limit allows: (tokens - 120,000) / 120,000 minutes.

Each row is one run (they take minutes: a limit per minute needs minutes
to measure), so --reps does not apply here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import bench
from bench import REPO, Row, base_env, docutrain_cmd, fresh_dir, log, pdf_folder

KEY = "sk-bench-ratelimit-0000000000000000"
ROWS = {"10a", "10b", "10c", "10d", "10e"}  # bench.py --only 10c,10e narrows this
LATENCY = 0.15  # seconds per answer, as measured against api.openai.com
DIMENSIONS = "256"


def _standin():
    return bench._load_standin()


def _pg():
    """(admin URL, user) of the local PostgreSQL, or None."""
    sys.path.insert(0, str(REPO / "tests"))
    import pg

    try:
        return pg, pg.find_admin()
    except LookupError as exc:
        log(f"10e left out: {exc}")
        return pg, None


def _run(root: Path, name: str, folder: Path, *, tpm: int | None, rpm: int | None, workers: int,
         runners: int = 1, queue_url: str | None = None, queue_name: str | None = None) -> dict:
    """One limited run: the stand-in's counters and the runners' summaries."""
    standin = _standin()
    d = fresh_dir(root, name)
    queue, store = d / "queue.db", d / "store.db"
    with standin.Server() as state:
        state.limit(tpm=tpm, rpm=rpm, latency=LATENCY)
        env = base_env(
            queue, store,
            DOCUTRAIN_EMBEDDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=state.base_url,
            DOCUTRAIN_EMBEDDING_DIMENSIONS=DIMENSIONS,
        )
        if queue_url:
            env.update(DOCUTRAIN_QUEUE=queue_url, DOCUTRAIN_QUEUE_NAME=queue_name or "docutrain")
        _, out = bench.run(docutrain_cmd() + ["enqueue", str(folder), "--json"], env, d)
        queued = len(json.loads(out)["queued"])
        started = time.monotonic()
        procs = [
            subprocess.Popen(docutrain_cmd() + ["run", "--drain", "--workers", str(workers), "--json"],
                             env=env, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(runners)
        ]
        summaries = []
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode not in (0, 3):
                raise bench.BenchError(f"{name}: run exited {proc.returncode}\n{err[-2000:]}")
            summaries.append(json.loads(out))
        wall = time.monotonic() - started
        accepted = list(state.accepted)
        result = {
            "queued": queued,
            "wall_s": wall,
            "done": sum(s["done"] for s in summaries),
            "dead": sum(s["dead"] for s in summaries),
            "retried": sum(s["retried"] for s in summaries),
            "given_back": sum(s.get("given_back", 0) for s in summaries),
            "tokens": state.tokens,
            "successes": state.successes,
            "rate_limited": state.rate_limited,
            "too_large": state.too_large,
            "wait_s": sum(s.get("rate_wait_seconds", 0.0) for s in summaries),
            "runner_elapsed_s": [round(s["elapsed"], 1) for s in summaries],
        }
    # What the account delivered once the first minute's burst was spent.
    window_start = started + 60.0
    window_end = accepted[-1][0] if accepted else window_start
    in_window = [(at, n) for at, n in accepted if at >= window_start]
    minutes = (window_end - window_start) / 60.0
    result["window_s"] = round(max(window_end - window_start, 0.0), 1)
    result["tokens_per_min_after_first_minute"] = sum(n for _, n in in_window) / minutes if minutes > 0 else None
    result["requests_per_min_after_first_minute"] = len(in_window) / minutes if minutes > 0 else None
    return result


def _limit_row(row_id: str, label: str, r: dict, limit: int, per: str) -> Row:
    achieved = r[f"{per}_per_min_after_first_minute"]
    ratio = achieved / limit if achieved else None
    refusals = r["rate_limited"] / r["successes"] if r["successes"] else float("inf")
    passed = bool(ratio and ratio >= 0.9 and refusals <= 0.05 and r["dead"] == 0 and r["done"] == r["queued"])
    unit = "tok/min" if per == "tokens" else "req/min"
    return Row(row_id, label, achieved or float("nan"), unit, float(limit), "the account's limit", ratio,
               ">= 0.9, 429/success <= 0.05, 0 dead", passed,
               r | {"limit": limit, "rate_limited_per_success": round(refusals, 4)})


def bench_rate_limits(mode, root: Path, ncpu: int, reps: int) -> tuple[list[Row], dict]:
    """10a-10e. TPM rows: 60,000 tokens/min over about three minutes' worth of tokens."""
    tpm = 60_000
    folder, _ = pdf_folder(root / "corpus", "ratelimit-tpm", [15] * 36, 4000)  # ~190,000 tokens
    rows, samples = [], {}
    for row_id, workers in (("10a", 2), ("10b", 8), ("10c", 24)):
        if row_id not in ROWS:
            continue
        r = _run(root, f"rl-{row_id}", folder, tpm=tpm, rpm=None, workers=workers)
        log(f"{row_id}: {workers} workers at {tpm:,} TPM: {_brief(r, tpm, 'tokens')}")
        rows.append(_limit_row(row_id, f"TPM-limited, {workers} workers: tokens/min after the first minute",
                               r, tpm, "tokens"))
        samples[row_id] = r
    rpm = 120
    if "10d" in ROWS:
        small, _ = pdf_folder(root / "corpus", "ratelimit-rpm", [1] * 330, 5000)  # one request each
        r = _run(root, "rl-10d", small, tpm=None, rpm=rpm, workers=8)
        log(f"10d: 8 workers at {rpm} RPM: {_brief(r, rpm, 'requests')}")
        rows.append(_limit_row("10d", "RPM-limited, 8 workers: requests/min after the first minute", r, rpm,
                               "requests"))
        samples["10d"] = r

    pg, admin = _pg() if "10e" in ROWS else (None, None)
    if admin:
        from docutrain_cli.queues.pgmq_setup import bundled_sql, init_queue

        with pg.fresh_database(*admin, prefix="docutrain_bench") as url:
            pg.admin_execute(url, bundled_sql()[0].read_text(encoding="utf-8"))
            init_queue(url, "bench")
            r = _run(root, "rl-10e", folder, tpm=tpm, rpm=None, workers=4, runners=2,
                     queue_url=url, queue_name="bench")
        log(f"10e: 2 runners x 4 workers on one pgmq queue at {tpm:,} TPM: {_brief(r, tpm, 'tokens')}")
        rows.append(_limit_row("10e", "two runners on one pgmq queue (4 workers each): tokens/min after "
                               "the first minute", r, tpm, "tokens"))
        samples["10e"] = r
    return rows, samples


def bench_acceptance(mode, root: Path, ncpu: int, reps: int) -> tuple[list[Row], dict]:
    """11: issue 13's acceptance run."""
    tpm = 120_000
    folder, _ = pdf_folder(root / "corpus", "acceptance", [30] * 40, 6000)
    r = _run(root, "acceptance", folder, tpm=tpm, rpm=None, workers=8)
    allowed_s = 1.25 * max(r["tokens"] - tpm, 0) / tpm * 60.0
    ideal_s = allowed_s / 1.25
    refusals = r["rate_limited"] / r["successes"] if r["successes"] else float("inf")
    passed = r["done"] == 40 and r["dead"] == 0 and refusals < 0.10 and r["wall_s"] <= allowed_s
    log(f"11: {r['done']} done, {r['dead']} dead, {r['rate_limited']} 429s for {r['successes']} successes, "
        f"{r['tokens']:,} tokens in {r['wall_s']:.0f} s (the limit allows {ideal_s:.0f} s; 1.25x = {allowed_s:.0f} s)")
    row = Row("11", "acceptance: 40 docs x 30 pages, 8 workers, 120,000 TPM: wall time", r["wall_s"], "s",
              ideal_s, "(tokens - TPM) / TPM", r["wall_s"] / ideal_s if ideal_s else None,
              "<= 1.25, all done, 0 dead, 429s < 10%", passed,
              r | {"allowed_s": allowed_s, "rate_limited_per_success": round(refusals, 4)})
    return [row], r


def _brief(r: dict, limit: int, per: str) -> str:
    achieved = r[f"{per}_per_min_after_first_minute"]
    ratio = f"{achieved / limit:.2f}" if achieved else "-"
    return (f"{r['done']}/{r['queued']} done, {r['dead']} dead, {r['rate_limited']} 429s for "
            f"{r['successes']} successes, {r['tokens']:,} tokens in {r['wall_s']:.0f} s, "
            f"achieved/limit after the first minute {ratio} (over {r['window_s']:.0f} s)")

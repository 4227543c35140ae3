"""Helpers for the tests of the rate budget's line (tests/test_rate_budget_order.py):
a budget on either store, and a second process that waits in its line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from docutrain_cli.ratelimit.budget import RateBudget, SQLiteBudgetStore
from docutrain_cli.ratelimit.order import Place

RATE = 100  # tokens a second: tpm 6,000 with no margin


def open_budget(spec: tuple[str, str], key: str, **options) -> RateBudget:
    kind, where = spec
    if kind == "sqlite":
        store = SQLiteBudgetStore(where)
    else:
        from docutrain_cli.ratelimit.postgres import PostgresBudgetStore

        store = PostgresBudgetStore(where)
    return answered(RateBudget(store, key, tpm=RATE * 60, margin=0.0, **options))


def answered(budget: RateBudget) -> RateBudget:
    """The budget after the server's first answer (until then its first
    request goes alone, even with a configured limit), one that said nothing
    of the account's level: the tests start from a full bucket."""
    first = budget.reserve(0)
    if not first.again:
        budget.settle(first, 0, None, waited=0.0)
    return budget


# The other process: it opens the same budget, asks for `tokens` for a job
# at `place` and, with --pace, waits its turns as a worker does (Pacer),
# then says when it was granted. Without --pace it only takes its place in
# the line, says so, and sleeps (to be killed there).
_OTHER = """
import json, sys, time
sys.path.insert(0, {tests!r})
from budget_line import open_budget
from docutrain_cli.ratelimit.order import Place
from docutrain_cli.ratelimit.pacing import Pacer

spec, key, place, tokens, pace, grace = json.loads(sys.argv[1])
budget = open_budget(tuple(spec), key, grace=grace)
budget.place = Place(**place)
asked = time.time()
if pace:
    pacer = Pacer(budget)
    pacer.turn(tokens, None)
    print(json.dumps({{"asked": asked, "granted": time.time(), "waited": pacer.waited}}), flush=True)
else:
    held = budget.reserve(tokens)
    print(json.dumps({{"asked": asked, "in_line": held.in_line, "wait": held.wait}}), flush=True)
    time.sleep(600)
"""


def other_process(spec: tuple[str, str], key: str, place: Place, tokens: int, *, pace: bool,
                  grace: float = 10.0) -> subprocess.Popen:
    code = _OTHER.format(tests=str(Path(__file__).parent))
    args = json.dumps([list(spec), key, place.__dict__, tokens, pace, grace])
    return subprocess.Popen([sys.executable, "-c", code, args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def first_line(proc: subprocess.Popen) -> dict:
    """The other process's report (it has asked by then)."""
    line = proc.stdout.readline()
    assert line, f"the other process said nothing: {proc.stderr.read()[-2000:]}"
    return json.loads(line)

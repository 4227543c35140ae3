"""The rate budget grants tokens in the fair order (ratelimit/order.py), on
the SQLite file and on the Postgres row: a request that stands earlier in
the order goes first even when it asks later, from another process; and a
worker that dies waiting does not keep its place. Real files, a real
PostgreSQL on 127.0.0.1:5432 (those cases skip without it; fail when CI is
set), real processes. The budget refills 100 tokens a second."""

from __future__ import annotations

import time

import pytest

from budget_line import RATE, first_line, open_budget, other_process
from docutrain_cli.ratelimit import order
from docutrain_cli.ratelimit.order import Line, Place

ALICE = Place(user="alice")
BOB = Place(user="bob")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def spec(request, tmp_path) -> tuple[str, str]:
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "queue.db.budget"))
    return ("postgres", request.getfixturevalue("pg_url"))


@pytest.fixture
def key(tmp_path) -> str:
    return f"test-order-{tmp_path.name}"


def drained(spec, key, place: Place = ALICE, **options):
    """A budget whose bucket alice's first minute just emptied."""
    budget = open_budget(spec, key, **options)
    budget.place = place
    assert budget.reserve(RATE * 60).wait == 0
    return budget


def test_a_later_request_earlier_in_the_fair_order_is_granted_first(spec, key):
    alice = drained(spec, key)
    emptied = time.time()
    held = alice.reserve(600)  # six seconds of refill
    asked = time.time()
    assert held.in_line and held.wait == pytest.approx(6 - (asked - emptied), abs=0.2)
    # bob, who has had nothing lately, asks from another process after her.
    bob = other_process(spec, key, BOB, 100, pace=True)
    try:
        while held.in_line:  # alice waits her turns as a worker does (Pacer.turn)
            time.sleep(held.wait)
            held = alice.reserve(600, held=held)
        alice_granted = time.time()
        bob_turn = first_line(bob)
    finally:
        bob.kill()
        bob.wait()
    assert bob_turn["asked"] > asked
    assert bob_turn["granted"] < alice_granted
    # bob waited for his own 100 tokens at most, not behind alice's 600 (7 s first come, first served) ...
    assert bob_turn["waited"] <= 100 / RATE + 0.3
    # ... and alice for hers and his: she asked again when her time came, and waited on.
    assert alice_granted - asked == pytest.approx(7, abs=0.5)


def test_priority_then_the_user_served_least_lately_then_age(spec, key, monkeypatch):
    # Handles on the same budget, as other workers have (opened first: the clock runs).
    others = {name: open_budget(spec, key) for name in ("high", "bob", "low")}
    others["high"].place = Place(level=0, user="alice")
    others["bob"].place = BOB
    others["low"].place = Place(level=2, user="carol")
    alice = drained(spec, key)
    emptied = time.time()

    def left(seconds: float):  # what is still to wait: the bucket refills while the test runs
        return pytest.approx(seconds - (time.time() - emptied), abs=0.15)

    normal = alice.reserve(300)
    assert normal.in_line and normal.wait == left(3)
    assert others["high"].reserve(100).wait == left(1)  # her urgent job goes first
    assert others["bob"].reserve(100).wait == left(2)  # before her normal job, after her urgent one
    assert others["low"].reserve(100).wait == left(6)  # a low job waits for all of them
    assert alice.reserve(300, held=normal).wait == left(5)  # asking again: behind both
    # Nobody starves: a request passed over for longer than AGED goes first.
    monkeypatch.setattr(order, "AGED", 0.5)
    time.sleep(0.6)
    assert alice.reserve(300, held=normal).wait == left(3)


def test_a_dead_workers_place_in_the_line_lapses(spec, key):
    alice = drained(spec, key)
    emptied = time.time()
    # bob's worker takes a place (8 s of tokens: a process may take seconds
    # to start on a busy machine) and is killed while it sleeps.
    bob = other_process(spec, key, BOB, 800, pace=False, grace=0.5)
    try:
        report = first_line(bob)
        assert report["in_line"] and 1.0 < report["wait"] <= 8.05  # less what refilled while it started
        behind = alice.reserve(100)  # while bob's place holds, alice waits for his tokens too
        assert behind.in_line and behind.wait == pytest.approx(9 - (time.time() - emptied), abs=0.2)
        alice.cancel(behind)  # her job was given up: her place goes at once
    finally:
        bob.kill()
        bob.wait()
    lapses = report["asked"] + report["wait"] + 0.5
    time.sleep(max(0.0, lapses - time.time()) + 0.2)
    # Over 8 s of refill: without bob's place ahead of it, a request of 3.5 s goes at once.
    granted = alice.reserve(350)
    assert not granted.in_line and granted.wait <= 0.01
    line = alice.store.transact(key, lambda row, now: Line.load(row.line, now))
    assert line.waiting == [] and set(line.granted) == {"alice"}

"""The chaos test, short form (issue 10): about 30 s of `docutrain run`
killed every way a machine kills it, per variant, then one drain and every
invariant (see tests/chaos.py; scripts/chaos is the long form).

DOCUTRAIN_CHAOS_SECONDS changes the length, DOCUTRAIN_CHAOS_SEED replays a
seed; the seed is in every failure message. Timing on a loaded machine only
changes how much happens, never whether an invariant holds: the checks wait
for outcomes, with generous bounds.
"""

from __future__ import annotations

import os

import pytest

from chaos import Chaos, Options

pytestmark = pytest.mark.chaos
SECONDS = float(os.environ.get("DOCUTRAIN_CHAOS_SECONDS", "30"))
SEED = int(os.environ["DOCUTRAIN_CHAOS_SEED"]) if os.environ.get("DOCUTRAIN_CHAOS_SEED") else None


def run_chaos(tmp_path, **options) -> None:
    report = Chaos(Options(seconds=SECONDS, seed=SEED, **options), tmp_path).run()
    assert report.actions and report.enqueues, f"nothing happened (seed {report.seed})"
    assert report.ok, "\n".join(report.lines()) + f"\nlogs: {tmp_path / 'logs'}"


def test_chaos_local(tmp_path):
    run_chaos(tmp_path, backend="local")


def test_chaos_local_with_supabase_outages(tmp_path):
    run_chaos(tmp_path, backend="local", supabase_outages=True)


@pytest.mark.postgres
def test_chaos_pgmq_three_runners(tmp_path, pg_url, pgmq_queue_name):
    run_chaos(tmp_path, backend="pgmq", pg_url=pg_url, queue_name=pgmq_queue_name)

"""The rate a waiting job's ETA is worked out at (queues/line.py): the
throughput of the last ten minutes' *working* time. An hour's pause, or a
minute between two bursts, is not time the line was being served: counted
in, a job queued after a pause was told 10 minutes for 11 seconds of work."""

from __future__ import annotations

import time

from docutrain_cli.config import Settings
from docutrain_cli.queues.base import Finished
from docutrain_cli.queues.line import ServedRate, busy_seconds
from docutrain_cli.ratelimit.budget import MARGIN


class FinishedRecords:
    """What ServedRate.measure reads of a queue: its finished records."""

    def __init__(self, records: list[Finished]):
        self.records = records

    def finished(self, since: float = 0.0) -> list[Finished]:
        return [r for r in self.records if r.finished_at >= since]


def done(job_id: int, finished_at: float, seconds: float, tokens: int) -> Finished:
    return Finished(job_id, "done", finished_at, seconds, 1, tokens, "offline-hash-v1", "u", tokens)


def test_busy_seconds_is_the_union_of_the_spans():
    assert busy_seconds([]) == 0.0
    assert busy_seconds([(0, 10), (5, 12), (100, 110), (105, 106)]) == 22.0  # two workers overlap
    assert busy_seconds([(50, 60), (0, 10)]) == 20.0  # in any order


def test_idle_time_does_not_slow_the_measured_rate():
    now = time.time()
    # two bursts of 10 jobs, each 4 s long on 2 workers (1,000 tokens a job), 5 minutes apart
    burst = [done(i, now - 400 + 2 * (i // 2 + 1), 2.0, 1000) for i in range(10)]
    later = [done(100 + i, now - 60 + 2 * (i // 2 + 1), 2.0, 1000) for i in range(10)]
    rate = ServedRate.measure(FinishedRecords(burst + later), Settings(), now)
    # 20,000 tokens over 20 s of work: 1,000 a second (over the window's 400 s it read 50)
    assert rate.per_second == 1000.0
    assert rate.seconds_for(10_000) == 10.0


def test_a_short_burst_is_not_trusted_over_a_known_limit():
    now = time.time()
    records = [done(i, now - 30 + i, 1.0, 10) for i in range(10)]  # 10 s of work: too little to trust
    rate = ServedRate.measure(FinishedRecords(records), Settings(embedding_tpm=600_000), now)
    assert rate.per_second == 600_000 * (1 - MARGIN) / 60  # the limit, not the burst's 10 tokens a second

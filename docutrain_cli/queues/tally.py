"""Finish counts that only go up, for the counters of /metrics.

A queue's finished records are states, not events: `retry` takes a dead job
out, housekeeping prunes old done records (and in Batch API mode a parked
job that cannot be embedded turns from done to dead). Counted from the
records alone, `jobs_finished_total{outcome="dead"}` fell on every retry,
which Prometheus reads as a counter reset.

So a record is folded into a tally before it leaves, in the same database
(a small `name, label, value` table beside the records), and the counters
are the tally plus the records still kept. Nothing is written per job: only
the rare moves that drop a record (prune, retry, done -> dead) fold.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

from docutrain_cli.queues.base import Finished

# Seconds from lease to finish: small documents take a second, big ones minutes.
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


def create_sql(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        " name TEXT NOT NULL, label TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, label))"
    )


def fold_sql(table: str, mark: str = "?") -> str:
    """Add to a row (SQLite >= 3.24 and Postgres both take this upsert)."""
    return (
        f"INSERT INTO {table} (name, label, value) VALUES ({mark}, {mark}, {mark})"
        f" ON CONFLICT (name, label) DO UPDATE SET value = {table}.value + excluded.value"
    )


@dataclasses.dataclass
class Tally:
    finished: dict[str, int] = dataclasses.field(default_factory=dict)  # outcome -> jobs
    tokens: dict[str, int] = dataclasses.field(default_factory=dict)  # model -> embedding tokens of done jobs
    durations: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0  # seconds; durations: done jobs per bucket, not cumulative, +Inf last

    @classmethod
    def of(cls, records: Iterable[Finished]) -> "Tally":
        tally = cls()
        for record in records:
            tally.count(record)
        return tally

    def count(self, record: Finished) -> None:
        self.finished[record.outcome] = self.finished.get(record.outcome, 0) + 1
        if record.outcome != "done":
            return
        if record.model:
            self.tokens[record.model] = self.tokens.get(record.model, 0) + record.tokens
        if record.seconds is not None:
            seconds = max(record.seconds, 0.0)
            self.durations[_bucket(seconds)] += 1
            self.duration_sum += seconds

    def plus(self, other: "Tally") -> "Tally":
        return Tally.from_rows([*self.rows(), *other.rows()])

    def rows(self) -> Iterator[tuple[str, str, float]]:
        """(name, label, value) rows, as the tally table keeps them."""
        for outcome, n in self.finished.items():
            yield "finished", outcome, n
        for model, n in self.tokens.items():
            yield "tokens", model, n
        for i, n in enumerate(self.durations):
            if n:
                yield "duration", str(i), n
        if self.duration_sum:
            yield "duration_sum", "", self.duration_sum

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, float]]) -> "Tally":
        tally = cls()
        for name, label, value in rows:
            if name == "finished":
                tally.finished[label] = tally.finished.get(label, 0) + int(value)
            elif name == "tokens":
                tally.tokens[label] = tally.tokens.get(label, 0) + int(value)
            elif name == "duration" and label.isdigit() and int(label) < len(tally.durations):
                tally.durations[int(label)] += int(value)
            elif name == "duration_sum":
                tally.duration_sum += value
        return tally

    def histogram(self) -> list[tuple[float, int]]:
        """(upper bound, cumulative count) per bucket, +Inf last, as Prometheus wants."""
        out, total = [], 0
        for bound, n in zip((*DURATION_BUCKETS, float("inf")), self.durations):
            total += n
            out.append((bound, total))
        return out


def _bucket(seconds: float) -> int:
    for i, bound in enumerate(DURATION_BUCKETS):
        if seconds <= bound:
            return i
    return len(DURATION_BUCKETS)

"""Who is leased next: the one place where the order of leasing is decided.

Every backend that picks its own jobs (the local file, pgmq through its
ordering table) keeps one order, written as data when a job is enqueued:

1. priority: a job's `priority` (high > normal > low) is its *level*;
   levels are served highest first, except that a level whose oldest due
   job has waited longer than `priority_max_wait` goes before every higher
   level whose oldest due job arrived after it (`turn_order`), so nothing starves;
2. within a level, by the job's `vstart` (virtual start), then arrival.

What a policy (`LeaseOrder`) decides is how `vstart` is written:
- `prepare(jobs)`, before the enqueue transaction: what needs a file read
  (the estimated tokens of each job, `job.cost`);
- `tag(jobs, book)`, inside the enqueue transaction: each job's `vstart`,
  from what the policy keeps in the queue's own database (`book`, see
  `Book`), so every process and machine leasing from one queue follows one
  order;
- `finished(job, book)`, in the transaction that completes a job: what the
  policy learns from what it really cost.
A policy that keeps a book (`uses_book`) has a virtual clock per level,
which every lease moves up to the vstart of the jobs it takes (never down):
the backends do that in the lease's own statement or transaction.

The rate budget follows the same order: `place(job)` says where the job's
requests stand in the budget's line (ratelimit/order.py), so the tokens of
a short account go to the job first in this order too.

`LeaseOrder` itself is first in, first out within a level (every vstart is
0, so arrival decides); `queues.fair.FairShare` shares by tokens between
users (setting lease_order, default fair; `queues.order_for`). Cloudflare Queues has no
ordering control: priority there is a second queue, pulled first
(queues/cloudflare.py), and fair share is not available.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from docutrain_cli.jobs import PRIORITIES, Job
from docutrain_cli.ratelimit.order import Place


def level_of(job: Job) -> int:
    """The job's level: 0 for high, 1 normal, 2 low (an unknown priority is normal)."""
    return PRIORITIES.index(job.priority) if job.priority in PRIORITIES else 1


class Book(Protocol):
    """What an ordering policy keeps between jobs, in the queue's own database,
    read and written inside the caller's transaction (queues/fair_book.py)."""

    def clock(self, level: int) -> float:
        """The level's virtual now; locked until the transaction ends."""

    def finishes(self, level: int, users: set[str]) -> dict[str, float]:
        """Each user's last virtual finish at the level (users never seen are absent)."""

    def save(self, level: int, finishes: Mapping[str, float]) -> None: ...

    def advance(self, latest: Mapping[int, float]) -> None:
        """Move each level's virtual now up to the vstart given (never down)."""

    def correct(self, level: int, user: str, delta: float) -> None:
        """Move one user's last finish by `delta`."""


def latest_vstarts(jobs: Sequence[Job]) -> dict[int, float]:
    """level -> the highest vstart among `jobs`: where a lease moves the clocks."""
    latest: dict[int, float] = {}
    for job in jobs:
        if job.vstart is not None:
            level = level_of(job)
            latest[level] = max(latest.get(level, job.vstart), job.vstart)
    return latest


class LeaseOrder:
    """First in, first out within each priority level."""

    name = "fifo"
    # True when the policy keeps a book: backends then open one for `tag` and
    # `finished`, and move each level's virtual clock as they lease.
    uses_book = False

    def __init__(self, max_wait: float = 900.0):
        self.max_wait = max_wait  # seconds: the aging of `turn_order`

    def prepare(self, jobs: Sequence[Job]) -> None:
        """Before the enqueue transaction: fill in what `tag` needs and
        costs a file read. First in, first out needs nothing."""

    def tag(self, jobs: Sequence[Job], book: Book | None) -> None:
        """Write each job's `vstart` (inside the enqueue transaction)."""
        for job in jobs:
            job.vstart = 0.0

    def finished(self, job: Job, book: Book | None) -> None:
        """The job is done, its result known (inside the completing transaction)."""

    def place(self, job: Job) -> Place:
        """Where the job's requests stand in the rate budget's line: by its
        level, then first come, first served (no users told apart)."""
        return Place(level=level_of(job))

    def turn_order(self, level: str, oldest: str, now: str, max_wait: str | None = None) -> str:
        """The SQL ORDER BY that puts the levels with due jobs in the order
        they are served, over a level, when its oldest due job entered the
        queue and now (epoch seconds): highest first; but a level whose
        oldest job has waited longer than `max_wait` goes before any level
        whose oldest job is younger, so a job is never overtaken for longer
        than that by higher-priority work that arrived after it. `max_wait`
        may be given as SQL (a parameter); by default it is this order's."""
        aged = f"({now} - {oldest} > {max_wait or repr(float(self.max_wait))})"
        return f"CASE WHEN {aged} THEN 0 ELSE 1 END, CASE WHEN {aged} THEN {oldest} END, {level}"


FIFO = LeaseOrder()


def levels_before(turns: Sequence[int], level: int) -> list[int]:
    """The levels served before `level`, given the turns of the levels with
    due jobs (a level without due jobs waits behind the higher ones)."""
    return list(turns[: turns.index(level)]) if level in turns else [lv for lv in turns if lv < level]


def priority_counts(rows) -> dict[str, int]:
    """(level, count) rows -> {priority: count}, every priority present."""
    counts = dict.fromkeys(PRIORITIES, 0)
    for level, count in rows:
        counts[PRIORITIES[level]] += count
    return counts


def level_sql(priority: str) -> str:
    """`level_of` in SQL, over an expression giving the job's priority."""
    cases = " ".join(f"WHEN '{name}' THEN {rank}" for rank, name in enumerate(PRIORITIES) if name != "normal")
    return f"(CASE {priority} {cases} ELSE {PRIORITIES.index('normal')} END)"

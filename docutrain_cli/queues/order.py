"""Who is leased next: the one place where the order of leasing is decided.

Ordering policies live here and nowhere else. A policy (`LeaseOrder`) has
two halves, and every backend goes through both:

- `tag(jobs)`, at enqueue time, just before the backend stores the jobs:
  writes into each job the fields the order sorts by. They are job fields,
  so they are persisted with its payload and read back at lease time.
- `order_by(columns)`, at lease time: the SQL ORDER BY a backend that picks
  its own due rows uses among them, written over the backend's `Columns`
  (what it calls the arrival sequence, a job field, and "now").

`FIFO`, the only policy today, tags nothing and sorts by arrival. Each
backend keeps it this way:
- the local file: `ORDER BY` what `order_by` returns (`_id`);
- pgmq: `pgmq.read` hands out by msg_id, which is the arrival order; a
  policy that sorts by anything else (`by_arrival` False) is refused there
  until pgmq leases through an ordering table (`require_arrival`);
- Cloudflare Queues has no ordering control: it hands out in its own order,
  whatever the policy.

Fair share (issue 21) is meant to be a second `LeaseOrder` here: `tag` gives
each job `priority` and `vstart = max(virtual now, the user's last finish)`
and moves the user's last finish to `vstart + cost / weight`; `order_by`
sorts by priority rank (a job waiting longer than `priority_max_wait` ranks
first), then vstart, then arrival. What such a policy keeps between jobs
(virtual now, each user's last finish) belongs in the queue's own database,
written in the same transaction as the jobs, so that every process and
machine leasing from one queue follows one order.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from docutrain_cli.errors import ConfigError
from docutrain_cli.jobs import Job


@dataclasses.dataclass(frozen=True)
class Columns:
    """What an order may sort by, as SQL expressions over one backend's table."""

    arrival: str  # the queue's own arrival sequence (local: _id; pgmq: msg_id)
    field: Callable[[str], str]  # a job field by dotted path ("metadata.x"), as `tag` wrote it
    now: str  # the lease's now in epoch seconds: a bound parameter or the database clock


class LeaseOrder:
    """First in, first out: the base every ordering policy refines."""

    name = "fifo"
    # True when the order is the queue's arrival order, which a backend's own
    # ordered read (pgmq.read) keeps without being told.
    by_arrival = True

    def tag(self, jobs: Sequence[Job]) -> None:
        """Write the fields this order sorts by into jobs about to be
        stored. First in, first out needs none: the queue's arrival
        sequence is its order."""

    def order_by(self, columns: Columns) -> str:
        """The SQL ORDER BY (without the keywords) that puts due jobs in
        lease order."""
        return columns.arrival


FIFO = LeaseOrder()


def require_arrival(order: LeaseOrder, backend: str) -> None:
    """For a backend that can only hand out in arrival order: refuse any
    other order rather than ignore it."""
    if not order.by_arrival:
        raise ConfigError(
            f"the {backend} queue leases in arrival order only; it cannot keep the {order.name!r} order"
        )

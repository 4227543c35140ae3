"""Timers for the runner's periodic work (status flushes, housekeeping,
lease extension, the pool's health check, reconcile, the rate budget's
figures, batch polling). Every wait of the runner ticks them, idle or busy
or stopping, so none of that work depends on jobs being in flight.
"""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass
class Periodic:
    """Work the runner does every `every` seconds whatever it is doing; or
    sooner when `due_early()` says so. Add one in `Runner._periodic_tasks`."""

    name: str
    every: float
    action: Callable[[], None]
    due_early: Callable[[], bool] = lambda: False
    next_at: float = 0.0  # monotonic; 0 = one interval after the first tick

    def tick(self, now: float) -> None:
        if not self.next_at:
            self.next_at = now + self.every
        elif now >= self.next_at or self.due_early():
            self.next_at = now + self.every
            self.action()

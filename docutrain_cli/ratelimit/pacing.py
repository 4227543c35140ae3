"""A worker's side of the shared rate budget, around each embedding request.

Before a request: reserve its tokens and sleep until the budget says it is
our turn (asking again after each sleep while we wait in its line: someone
earlier in the fair order may have come in between). After a 429: wait what the server asked (with jitter, so the
refused workers do not all come back at once), tell the budget so everyone
else holds off too, and try again, never charging the job an attempt. Only
when refusals go on for `patience`, or waiting would run into the job's own
timeout (which would cost an attempt), does the job go back to the queue:
RateLimitedError. Counts what it waited and how often it was refused, for
the job's result and the run's summary.
"""

from __future__ import annotations

import random
import time
from typing import Mapping

from docutrain_cli.errors import AccountError, RateLimitedError
from docutrain_cli.ratelimit.budget import RateBudget, Reservation, refusal_wait

MAX_BLIND_WAIT = 60.0  # a 429 that says nothing about when: back off up to this


class Pacer:
    def __init__(self, budget: RateBudget | None, patience: float = 600.0):
        self.budget = budget  # None: no shared budget (library use); 429s still wait
        self.patience = patience
        self.deadline: float | None = None  # monotonic time by which waiting must stop (the job's)
        self.rate_limited = 0  # 429 answers received
        self.waited = 0.0  # seconds spent waiting for the budget or after a 429
        self._reported_wait = 0.0
        self._blind_refusals = 0

    def turn(self, tokens: int, refused_since: float | None) -> Reservation | None:
        """Reserve a request's tokens and sleep until they are covered."""
        if self.budget is None:
            return None
        reservation = self.budget.reserve(tokens)
        # again: another worker's first request is out, its answer tells the
        # limit; in_line: our tokens are not covered yet.
        while reservation.again or reservation.in_line:
            if reservation.in_line:
                self._check_patience(reservation, refused_since)
            self._sleep(reservation.wait)
            reservation = self.budget.reserve(tokens, held=reservation)
        if reservation.wait > 0:
            self._check_patience(reservation, refused_since)
            self._sleep(reservation.wait)
        return reservation

    def _check_patience(self, reservation: Reservation, refused_since: float | None) -> None:
        """Give the reservation back and the job to the queue when waiting
        `reservation.wait` would run past `patience` or the job's deadline."""
        give_up = self._give_up_at(refused_since)
        if give_up is not None and time.monotonic() + reservation.wait > give_up:
            self.budget.cancel(reservation)
            raise RateLimitedError(
                f"the embedding API's rate limit left no room for {reservation.wait:.0f} s; "
                "the job goes back to the queue",
                retry_after=reservation.wait,
            )

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)
        self.waited += seconds

    def refused(self, headers: Mapping[str, str] | None, message: str, refused_since: float) -> None:
        """A 429: wait what the server says, with jitter, and tell the budget."""
        wait = refusal_wait(headers, message)
        if wait is None:
            self._blind_refusals += 1
            wait = min(MAX_BLIND_WAIT, 2.0 ** self._blind_refusals)
        else:
            self._blind_refusals = 0
        wait = wait * random.uniform(1.0, 1.15) + 0.01
        self.rate_limited += 1
        if self.budget is not None:  # everyone holds off; our next turn waits it out
            self.budget.refused(wait, headers, self._unreported_wait())
        give_up = self._give_up_at(refused_since)
        if give_up is not None and time.monotonic() + wait > give_up:
            raise RateLimitedError(
                f"the embedding API kept refusing (429 rate limit) for "
                f"{time.monotonic() - refused_since:.0f} s; the job goes back to the queue",
                retry_after=wait,
            )
        if self.budget is None:
            time.sleep(wait)
            self.waited += wait

    def settle(self, reservation: Reservation | None, used: int | None, headers: Mapping[str, str] | None) -> None:
        """The request succeeded; `used` is what the server counted (None: not reported)."""
        if reservation is not None and self.budget is not None:
            counted = used if used else reservation.tokens
            self.budget.settle(reservation, counted, headers, self._unreported_wait())

    def cancel(self, reservation: Reservation | None) -> None:
        """The request was not counted (refused, failed): give its tokens back."""
        if reservation is not None and self.budget is not None:
            self.budget.cancel(reservation)

    def account_problem(self, message: str) -> AccountError:
        """Quota or key trouble: recorded where `status` shows it."""
        if self.budget is not None:
            self.budget.report_problem(message)
        return AccountError(message)

    def request_ceiling(self) -> int | None:
        return self.budget.request_ceiling() if self.budget is not None else None

    def _give_up_at(self, refused_since: float | None) -> float | None:
        """When waiting must stop: `patience` after the first refusal, and
        before the job's own timeout would kill it."""
        limits = [t for t in (self.deadline,) if t is not None]
        if refused_since is not None:
            limits.append(refused_since + self.patience)
        return min(limits) if limits else None

    def _unreported_wait(self) -> float:
        """Seconds waited since the budget was last told (it keeps the total)."""
        new = self.waited - self._reported_wait
        self._reported_wait = self.waited
        return new

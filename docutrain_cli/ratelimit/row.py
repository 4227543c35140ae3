"""One budget's shared state (`BudgetRow`) and what holds it (`BudgetStore`):
a SQLite file (budget.SQLiteBudgetStore) or the pgmq Postgres
(postgres.PostgresBudgetStore). Apart from the bucket arithmetic in
budget.py, which opens the Postgres store: so that store needs nothing of it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, TypeVar

T = TypeVar("T")


@dataclasses.dataclass
class BudgetRow:
    """The shared state of one budget (one key). Times are epoch seconds."""

    key: str
    tpm: int = 0  # tokens per minute the server allows; 0 = not known yet
    rpm: int = 0
    learned: int = 0  # 1 when tpm/rpm came from the server's headers
    token_level: float = 0.0  # tokens we may still send now; negative = reserved ahead
    request_level: float = 0.0
    at: float = 0.0  # when the levels were last refilled
    blocked_until: float = 0.0  # a 429 asked everyone to wait until then
    density: float = 0.0  # tokens the server counts per estimated token (0: not known yet)
    answered: int = 0  # 1 once an answer (or refusal) came back: what it said about limits is known
    probe_until: float = 0.0  # the first request goes alone, until its answer or then
    tokens_total: int = 0
    requests_total: int = 0
    refusals_total: int = 0  # 429 rate_limit answers
    waited_seconds: float = 0.0  # worker time spent waiting for the budget or after a 429
    minute_start: float = 0.0
    minute_tokens: int = 0  # tokens in the minute that began at minute_start
    last_minute_tokens: int = 0  # tokens in the minute before it
    problem: str | None = None  # an account problem (quota, key) that stopped runs
    problem_at: float | None = None
    updated_at: float = 0.0
    line: str = ""  # who waits for tokens and who was granted lately: JSON of ratelimit/order.py's Line


FIELDS = [f.name for f in dataclasses.fields(BudgetRow)]


class BudgetStore(Protocol):
    def transact(self, key: str, work: Callable[[BudgetRow, float], T]) -> T:
        """Run `work(row, now)` with the row locked; save the row after it."""

    def rows(self) -> list[BudgetRow]: ...

    def close(self) -> None: ...

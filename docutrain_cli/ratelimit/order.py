"""Who is granted tokens first when the budget is short: the budget's line.

Jobs are leased in the fair order (queues/order.py: priority, then fair
share by tokens between users). But a job that is leased next still sends
its requests through the one budget that every worker shares; if grants
went first come, first served, bob's first request would queue behind the
requests alice's other workers already have pending, and wait for their
tokens anyway. So a reservation the budget cannot cover at once takes a
place in a short line, and tokens go to the line in this order:

1. a reservation passed over for longer than `AGED` goes first (by when it
   first asked), so no request starves, whatever arrives after it;
2. the higher priority level of the job it is for (0 high, 1 normal, 2 low);
3. the user who has been granted the fewest tokens lately (a count that
   fades with `FADE` seconds, divided by the user's weight): the same fair
   share by tokens the lease order keeps, measured where the tokens are
   really spent. (The jobs' own virtual starts cannot decide between users
   here: the jobs alice's workers already hold started before bob's, by
   the very order that leased bob's next.)
4. the job's virtual start (a user's earlier job first), then arrival.

A reservation waits only for the tokens of those ahead of it (plus what is
already granted and not yet refilled). It sleeps until then and asks again:
a reservation that arrived later but stands earlier may have gone in
between. Nothing is taken from the bucket until the grant. A worker that
dies in the line stops asking; its place lapses `GRACE` seconds after it
was due to ask again, so it never blocks the line for good.

The line and the users' counts are kept as JSON in the budget's row (a few
entries: one per waiting worker, one per recently served user), so both
the SQLite file and the Postgres row hold them under the row's own lock.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
AGED = 60.0  # seconds a reservation may be passed over before it goes first
FADE = 60.0  # seconds: the time constant of "granted lately"
GRACE = 10.0  # seconds a waiting reservation is kept after it was due to ask again


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a job's requests stand in the line; the lease order writes it
    (queues/order.py `LeaseOrder.place`). The default: a normal job of no
    user, first come, first served."""

    level: int = 1
    user: str = ""
    weight: float = 1.0
    vstart: float = 0.0


@dataclasses.dataclass
class Waiting:
    """A reservation in the line: nothing taken from the bucket yet."""

    ticket: str
    tokens: int
    place: Place
    since: float  # when it first asked (epoch seconds)
    expires: float  # when it lapses unless it asks again


def new_ticket() -> str:
    return secrets.token_hex(8)


class Line:
    """The waiting reservations and each user's tokens granted lately, as
    of `at`; loaded from and saved to the budget row's `line` field."""

    def __init__(self, waiting: list[Waiting] | None = None, granted: dict[str, float] | None = None,
                 at: float = 0.0):
        self.waiting = waiting or []
        self.granted = granted or {}
        self.at = at

    @classmethod
    def load(cls, text: str | None, now: float) -> "Line":
        """The line as of `now`: lapsed places dropped, the counts faded."""
        data = json.loads(text) if text else {}
        waiting = [
            Waiting(w["ticket"], w["tokens"], Place(**w["place"]), w["since"], w["expires"])
            for w in data.get("waiting", ())
        ]
        line = cls([w for w in waiting if w.expires > now], data.get("granted", {}), data.get("at", now))
        line._fade(now)
        return line

    def dump(self) -> str:
        if not self.waiting and not self.granted:
            return ""
        return json.dumps({
            "at": self.at,
            "granted": self.granted,
            "waiting": [dataclasses.asdict(w) for w in self.waiting],
        }, separators=(",", ":"))

    def _fade(self, now: float) -> None:
        factor = math.exp(-max(0.0, now - self.at) / FADE)
        self.granted = {user: n * factor for user, n in self.granted.items() if n * factor >= 1.0}
        self.at = now

    def _key(self, entry: Waiting, now: float) -> tuple:
        if now - entry.since > AGED:
            return (0, 0, 0.0, 0.0, entry.since, entry.ticket)
        place = entry.place
        share = self.granted.get(place.user, 0.0) / (place.weight or 1.0)
        return (1, place.level, share, place.vstart, entry.since, entry.ticket)

    def ahead_of(self, entry: Waiting, now: float) -> list[Waiting]:
        """The other waiting reservations that are granted before `entry`."""
        mine = self._key(entry, now)
        return [w for w in self.waiting if w.ticket != entry.ticket and self._key(w, now) < mine]

    def join(self, entry: Waiting) -> None:
        """Take (or keep) `entry`'s place, with its new expiry."""
        self.leave(entry.ticket)
        self.waiting.append(entry)

    def leave(self, ticket: str | None) -> None:
        self.waiting = [w for w in self.waiting if w.ticket != ticket]

    def count(self, place: Place | None, tokens: float) -> None:
        """`tokens` granted to (or, negative, given back by) the place's user."""
        if place is None:
            return
        self.granted[place.user] = max(0.0, self.granted.get(place.user, 0.0) + tokens)

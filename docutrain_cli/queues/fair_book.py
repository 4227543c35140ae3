"""The lease order's book (queues/order.py `Book`) as two small tables in
the queue's own database, used inside the caller's transaction:

    docutrain_fair_clock (queue, level, virtual_now)           a row per priority level
    docutrain_fair_user  (queue, level, user_key, last_finish) a row per user and level

The local file keeps them beside persist-queue's table (its BEGIN IMMEDIATE
serializes writers; `queue` is always "local"); pgmq keeps them in the same
Postgres (`public.`, one pair for every queue, keyed by the queue name),
where `clock` locks the level's row so two producers cannot hand out the
same virtual start.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

_COLUMNS = """
CREATE TABLE IF NOT EXISTS {schema}docutrain_fair_clock (
    queue text NOT NULL, level smallint NOT NULL, virtual_now double precision NOT NULL,
    PRIMARY KEY (queue, level));
CREATE TABLE IF NOT EXISTS {schema}docutrain_fair_user (
    queue text NOT NULL, level smallint NOT NULL, user_key text NOT NULL,
    last_finish double precision NOT NULL, PRIMARY KEY (queue, level, user_key));
"""
SQLITE_SCHEMA = _COLUMNS.format(schema="")
POSTGRES_SCHEMA = _COLUMNS.format(schema="public.")
_NAMED = re.compile(r":(\w+)")


class SqlBook:
    """`cursor` runs statements in the caller's transaction. SQLite and
    Postgres differ here only in placeholders, row locks and max()."""

    def __init__(self, cursor: Any, queue: str = "local", *, postgres: bool = False):
        self.cursor = cursor
        self.queue = queue
        self.postgres = postgres
        schema = "public." if postgres else ""
        self.clocks, self.users = f"{schema}docutrain_fair_clock", f"{schema}docutrain_fair_user"

    def _sql(self, statement: str) -> str:
        return _NAMED.sub(r"%(\1)s", statement) if self.postgres else statement

    def _run(self, statement: str, **params: Any):
        return self.cursor.execute(self._sql(statement), {"queue": self.queue, **params})

    def clock(self, level: int) -> float:
        self._run(f"INSERT INTO {self.clocks} (queue, level, virtual_now) VALUES (:queue, :level, 0)"
                  " ON CONFLICT DO NOTHING", level=level)
        lock = " FOR UPDATE" if self.postgres else ""
        (now,) = self._run(f"SELECT virtual_now FROM {self.clocks} WHERE queue = :queue AND level = :level{lock}",
                           level=level).fetchone()
        return now

    def finishes(self, level: int, users: set[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        wanted = sorted(users)
        for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
            part = {f"u{i}": user for i, user in enumerate(wanted[start:start + 500])}
            rows = self._run(
                f"SELECT user_key, last_finish FROM {self.users} WHERE queue = :queue AND level = :level"
                f" AND user_key IN ({', '.join(':' + name for name in part)})",
                level=level, **part,
            )
            found.update(rows.fetchall())
        return found

    def save(self, level: int, finishes: Mapping[str, float]) -> None:
        self.cursor.executemany(
            self._sql(f"INSERT INTO {self.users} (queue, level, user_key, last_finish)"
                      " VALUES (:queue, :level, :user, :finish) ON CONFLICT (queue, level, user_key)"
                      " DO UPDATE SET last_finish = excluded.last_finish"),
            [{"queue": self.queue, "level": level, "user": user, "finish": finish} for user, finish in finishes.items()],
        )

    def advance(self, latest: Mapping[int, float]) -> None:
        values = ", ".join(f"(:queue, {int(level)}, :v{int(level)})" for level in latest)
        self._run(advance_from(f"VALUES {values}", postgres=self.postgres),
                  **{f"v{int(level)}": vstart for level, vstart in latest.items()})

    def correct(self, level: int, user: str, delta: float) -> None:
        self._run(f"UPDATE {self.users} SET last_finish = last_finish + :delta"
                  " WHERE queue = :queue AND level = :level AND user_key = :user",
                  level=level, user=user, delta=delta)


def advance_from(rows: str, *, postgres: bool = True) -> str:
    """The statement that moves level clocks up (never down) to the (queue,
    level, vstart) `rows` (a VALUES list or a SELECT); pgmq's lease runs it
    as part of its own statement (queues/pgmq_order.py)."""
    schema, greatest = ("public.", "greatest") if postgres else ("", "max")
    return (
        f"INSERT INTO {schema}docutrain_fair_clock AS c (queue, level, virtual_now) {rows}"
        f" ON CONFLICT (queue, level) DO UPDATE SET virtual_now = {greatest}(c.virtual_now, excluded.virtual_now)"
    )

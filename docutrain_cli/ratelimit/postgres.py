"""The rate budget's row in the pgmq Postgres: one limit for every machine.

Runners on several machines that drain one pgmq queue use one API key, so
they must share one budget; the database they already share holds it. Each
change is one short transaction that locks the row (`SELECT ... FOR
UPDATE`), so the arithmetic in `budget.RateBudget` stays in one place.
Time comes from the database clock, so machines with skewed clocks still
agree on when the bucket was last refilled.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, TypeVar

from docutrain_cli.config import redact_url
from docutrain_cli.errors import TransientError
from docutrain_cli.ratelimit.row import FIELDS, BudgetRow

TABLE = "public.docutrain_rate_budget"
T = TypeVar("T")

def _column(field: dataclasses.Field) -> str:
    if field.name == "key":
        return "key text PRIMARY KEY"
    kind = str(field.type).split("|")[0].strip()
    sql = {"int": "bigint", "float": "double precision", "str": "text"}[kind]
    return f"{field.name} {sql}"


CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} ({', '.join(_column(f) for f in dataclasses.fields(BudgetRow))})"


def _ensure_table(conn) -> None:
    import psycopg

    if not conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0]:
        try:
            conn.execute(CREATE)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
            pass  # workers of two runners raced to create it: it is there now
    present = {r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (TABLE,),
    )}
    for field in dataclasses.fields(BudgetRow):
        if field.name not in present:  # a table from an older docutrain
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {_column(field)}")


class PostgresBudgetStore:
    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self._conn = self._connect()
        if create:
            self._run(_ensure_table)

    def _connect(self):
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, prepare_threshold=None, connect_timeout=10)
        except psycopg.OperationalError:
            raise TransientError(f"cannot reach the rate budget's database {redact_url(self.url)}") from None

    def _run(self, work: Callable[..., T]) -> T:
        """Once more on a fresh connection if the old one dropped."""
        import psycopg

        try:
            return work(self._conn)
        except psycopg.OperationalError:
            if not self._conn.closed and not self._conn.broken:
                raise
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = self._connect()
        try:
            return work(self._conn)
        except psycopg.OperationalError:
            raise TransientError(f"lost the rate budget's database {redact_url(self.url)}") from None

    def transact(self, key: str, work: Callable[[BudgetRow, float], T]) -> T:
        def run(conn) -> T:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(f"INSERT INTO {TABLE} (key) VALUES (%s) ON CONFLICT (key) DO NOTHING", (key,))
                found = cur.execute(
                    f"SELECT {', '.join(FIELDS)}, extract(epoch FROM clock_timestamp())::float8"
                    f" FROM {TABLE} WHERE key = %s FOR UPDATE",
                    (key,),
                ).fetchone()
                *values, now = found
                defaults = BudgetRow(key)
                row = BudgetRow(*[getattr(defaults, name) if v is None else v for name, v in zip(FIELDS, values)])
                before = dataclasses.astuple(row)
                result = work(row, now)
                if dataclasses.astuple(row) != before:
                    row.updated_at = now
                    assignments = ", ".join(f"{name} = %s" for name in FIELDS if name != "key")
                    cur.execute(
                        f"UPDATE {TABLE} SET {assignments} WHERE key = %s",
                        [getattr(row, name) for name in FIELDS if name != "key"] + [key],
                    )
                return result

        return self._run(run)

    def rows(self) -> list[BudgetRow]:
        def run(conn) -> list[BudgetRow]:
            exists = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0]
            if not exists:
                return []
            defaults = BudgetRow("")
            return [
                BudgetRow(*[getattr(defaults, n) if v is None else v for n, v in zip(FIELDS, r)])
                for r in conn.execute(f"SELECT {', '.join(FIELDS)} FROM {TABLE} ORDER BY updated_at DESC")
            ]

        return self._run(run)

    def close(self) -> None:
        self._conn.close()

"""PostgreSQL for tests: the real server on 127.0.0.1:5432 (trust auth).

One fresh database per test session (`docutrain_test_<random>`), dropped at
the end, with pgmq installed from the SQL the `pgmq` package bundles. Tests
that need it skip with a reason when no server answers, and fail instead
when the CI environment variable is set.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Iterator

import pytest

HOST = os.environ.get("DOCUTRAIN_TEST_PGHOST", "127.0.0.1")
PORT = int(os.environ.get("DOCUTRAIN_TEST_PGPORT", "5432"))
USERS = ("postgres", "root")
ADMIN_DATABASES = ("postgres", "test")


def url(user: str, database: str, password: str | None = None) -> str:
    auth = f"{user}:{password}" if password else user
    return f"postgresql://{auth}@{HOST}:{PORT}/{database}"


def unavailable(reason: str) -> None:
    """Skip, or fail when CI is set: CI must never pass by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required when CI is set: {reason}", pytrace=False)
    pytest.skip(reason)


def find_admin() -> tuple[str, str]:
    """(admin URL, user) of a role that may create databases; raises LookupError."""
    try:
        import psycopg
    except ImportError as exc:
        raise LookupError(f"psycopg is not installed ({exc}); pip install -e '.[postgres]'")
    errors = []
    for user in USERS:
        for database in ADMIN_DATABASES:
            candidate = url(user, database)
            try:
                with psycopg.connect(candidate, connect_timeout=3, autocommit=True) as conn:
                    (may,) = conn.execute(
                        "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
                    ).fetchone()
                    if may:
                        return candidate, user
                    errors.append(f"{user}@{database}: may not create databases")
            except psycopg.Error as exc:
                errors.append(f"{user}@{database}: {' '.join(str(exc).split())[:120]}")
    raise LookupError(f"no PostgreSQL on {HOST}:{PORT} to test against ({'; '.join(errors)})")


def admin_execute(admin_url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@contextlib.contextmanager
def fresh_database(admin_url: str, user: str, prefix: str = "docutrain_test") -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (even when tests fail)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield url(user, name)
    finally:
        # FORCE: runner subprocesses killed by a test may still hold sessions.
        admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_queue(db_url: str, queue_name: str) -> None:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        for name in (queue_name, queue_name + "_dead"):
            if conn.execute("SELECT to_regclass(%s)", (f"pgmq.q_{name}",)).fetchone()[0]:
                conn.execute("SELECT pgmq.drop_queue(%s)", (name,))


def new_queue_name() -> str:
    return f"t_{secrets.token_hex(5)}"

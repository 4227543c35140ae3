"""Connecting to the pgmq queue database, and `docutrain queue init`, which
makes a database ready for PgmqQueue (pgmq installed or enabled, the queue
and its dead-letter queue created, the job_id indexes made, the lease
order's tables and the queue's lease function made: queues/pgmq_order.py).

Apart from the queue itself (queues/pgmq.py) because it runs once per
database, by hand, while the queue runs all the time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from pathlib import Path

from docutrain_cli.config import redact_url, url_passwords
from docutrain_cli.errors import ConfigError, DocutrainError, ServiceUnavailableError
from docutrain_cli.queues import pgmq_order
from docutrain_cli.queues.tally import create_sql

CONNECT_TIMEOUT = 10  # seconds
DEAD_SUFFIX = "_dead"
# pgmq caps names at 47 characters; leave room for the dead-letter suffix.
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,%d}$" % (46 - len(DEAD_SUFFIX)))

ENABLE_HINT = (
    "enable pgmq: on Supabase open Dashboard -> Integrations -> Queues and enable it "
    "(or run `create extension pgmq;` in the SQL editor); on your own Postgres install "
    "the pgmq extension, or run `docutrain queue init` as a role that may create schemas"
)


def psycopg_module():
    # Imported here, not at module level: only postgres URLs need it.
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError(
            "a postgresql:// queue needs psycopg: pip install 'docutrain[postgres]'"
        ) from None
    return psycopg


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def check_name(queue_name: str) -> str:
    if not _NAME.match(queue_name or ""):
        raise ConfigError(
            f"queue_name: expected lowercase letters, digits and _ (at most "
            f"{46 - len(DEAD_SUFFIX) + 1} characters), got {queue_name!r}"
        )
    return queue_name


def connect(url: str):
    psycopg = psycopg_module()
    try:
        # prepare_threshold=None: no server-side prepared statements, so the
        # Supabase transaction pooler (port 6543) works as well as a direct
        # connection or the session pooler.
        return psycopg.connect(
            url, autocommit=True, prepare_threshold=None, connect_timeout=CONNECT_TIMEOUT
        )
    except psycopg.OperationalError as exc:
        raise ServiceUnavailableError(
            f"cannot reach the queue database {redact_url(url)}: {scrub(one_line(exc), url)}"
        ) from None
    except psycopg.ProgrammingError as exc:  # a malformed URL
        raise ConfigError(f"queue: not a usable postgresql:// URL {redact_url(url)}: "
                          f"{scrub(one_line(exc), url)}") from None


def scrub(text: str, url: str) -> str:
    """libpq does not echo passwords, but make sure of it."""
    for secret in url_passwords(url):
        text = text.replace(secret, "…")
    return text


def looks_like_supabase(url: str) -> bool:
    """Supabase hosts: db.<ref>.supabase.co and <region>.pooler.supabase.com."""
    host = re.sub(r"^[a-z]+://(?:[^@/]*@)?", "", url).split("/", 1)[0].split("?", 1)[0]
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.endswith((".supabase.co", ".supabase.com"))


def bundled_sql() -> tuple[Path, str]:
    """The SQL-only pgmq install shipped in the `pgmq` PyPI package, and its version.

    Found without importing the package (its __init__ pulls in a client we
    do not use)."""
    spec = importlib.util.find_spec("pgmq")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "pgmq is not installed in this database and the `pgmq` Python package that "
            f"bundles its SQL is missing: pip install 'docutrain[postgres]', or {ENABLE_HINT}"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "sql"
    path = folder / "pgmq.sql"
    if not path.is_file():
        raise ConfigError(f"{path}: missing from the pgmq package; {ENABLE_HINT}")
    version = "unknown"
    with contextlib.suppress(OSError):
        lines = [l.strip() for l in (folder / "VERSION").read_text().splitlines()]
        version = next((l for l in lines if l and not l.startswith("#")), version)
    return path, version


def _pgmq_version(conn) -> str | None:
    """The installed pgmq's version, '' for a SQL-only install, None when absent."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgmq'").fetchone()
    if row:
        return row[0]
    (present,) = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'read'"
        " AND pronamespace = to_regnamespace('pgmq'))"
    ).fetchone()
    return "" if present else None


def tally_table(queue_name: str) -> str:
    """Counts of the queue's finished records that left it (queues/tally.py)."""
    return f"pgmq.docutrain_tally_{queue_name}"


def init_queue(url: str, queue_name: str = "docutrain") -> str:
    """Make `url` ready for PgmqQueue: pgmq present, queue and dead-letter
    queue created. Safe to run again. Returns a short summary of what it did."""
    psycopg = psycopg_module()
    name = check_name(queue_name)
    where = redact_url(url)
    done: list[str] = []
    with contextlib.closing(connect(url)) as conn:
        version = _pgmq_version(conn)
        if version is None:
            (available,) = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq')"
            ).fetchone()
            try:
                if available:  # Supabase, or a Postgres with the extension packaged
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pgmq")
                    version = _pgmq_version(conn) or "?"
                    done.append(f"enabled the pgmq extension {version}")
                elif looks_like_supabase(url):
                    raise DocutrainError(f"pgmq is not enabled in {where}: {ENABLE_HINT}")
                else:
                    path, version = bundled_sql()
                    with conn.transaction():
                        conn.execute(path.read_text(encoding="utf-8"))
                    done.append(f"installed pgmq {version} (SQL-only, from the pgmq package)")
            except psycopg.Error as exc:
                raise DocutrainError(
                    f"could not install pgmq in {where}: {scrub(one_line(exc), url)}; {ENABLE_HINT}"
                ) from None
        else:
            done.append(f"pgmq {version or '(SQL-only install)'} already present")
        try:
            fresh_main = False
            for queue in (name, name + DEAD_SUFFIX):
                existed = conn.execute("SELECT to_regclass(%s)", (f"pgmq.q_{queue}",)).fetchone()[0]
                fresh_main = fresh_main or (queue == name and not existed)
                conn.execute("SELECT pgmq.create(%s)", (queue,))
                # job(id) looks messages up by job_id, enqueue_unique and
                # document_jobs by document_id; keep those index scans.
                for prefix in ("q", "a"):
                    conn.execute(
                        f"CREATE INDEX IF NOT EXISTS {prefix}_{queue}_job_id"
                        f" ON pgmq.{prefix}_{queue} (((message->>'job_id')::bigint))"
                    )
                    conn.execute(
                        f"CREATE INDEX IF NOT EXISTS {prefix}_{queue}_document_id"
                        f" ON pgmq.{prefix}_{queue} ((message->>'document_id'))"
                    )
                done.append(f"queue {queue} {'already there' if existed else 'created'}")
            conn.execute(create_sql(tally_table(name)))
            if fresh_main:  # made afresh, perhaps under an old queue's name: forget that one's order
                pgmq_order.forget_if_present(conn, name)
            pgmq_order.ensure_tables(conn, f"pgmq.q_{name}", name)
            done.append("lease order tables ready")
        except psycopg.Error as exc:
            raise DocutrainError(
                f"could not create queue {name!r} in {where}: {scrub(one_line(exc), url)}"
            ) from None
    return f"{where}: " + "; ".join(done)

"""Shared fixtures: a `docutrain` command running in real subprocesses
against real SQLite files in a temporary folder."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness import child_env, wait_for


class Docutrain:
    """Runs `python -m docutrain_cli` with an isolated queue, store and env.

    `own_session`: every started process leads its own process group, so
    `kill_machine` takes the runner and its workers at once, the way a
    machine dies."""

    own_session = False

    def __init__(self, workdir: Path, **env: str):
        self.workdir = workdir
        self.queue = workdir / "queue.db"
        self.store = workdir / "docutrain.db"
        self.output = workdir / "output.db"
        self.env = child_env(
            DOCUTRAIN_QUEUE=str(self.queue),
            DOCUTRAIN_STORE=str(self.store),
            DOCUTRAIN_TEST_OUTPUT=str(self.output),
            DOCUTRAIN_RETRY_BASE_DELAY="0.05",
            DOCUTRAIN_RETRY_MAX_DELAY="0.2",
            DOCUTRAIN_POLL_INTERVAL="0.1",
        )
        self.env.update(env)
        self.started: list[subprocess.Popen] = []

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "docutrain_cli", *args]

    def __call__(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args),
            cwd=self.workdir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            self.argv(*args),
            cwd=self.workdir,
            env={**self.env, **env},
            start_new_session=self.own_session,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def kill_machine(self, proc: subprocess.Popen) -> None:
        """SIGKILL a started process with all of its group (own_session)."""
        if self.own_session:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        """Kill what a test started and left running (a failed test's runners)."""
        for proc in self.started:
            if proc.poll() is None:
                self.kill_machine(proc)

    def status(self) -> dict:
        result = self("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition"):
        return wait_for(predicate, timeout, what)

    def output_rows(self) -> list[tuple]:
        return self.recorded("SELECT document, job FROM output ORDER BY job")

    def runs(self) -> list[tuple]:
        return self.recorded("SELECT job, attempt FROM runs ORDER BY at")

    def worker_pids(self) -> set[int]:
        """The processes that ran jobs so far."""
        return {pid for (pid,) in self.recorded("SELECT DISTINCT pid FROM runs")}

    def recorded(self, sql: str) -> list[tuple]:
        """What tests/processors.py recorded; nothing before a worker made the file."""
        if not self.output.exists():
            return []
        with sqlite3.connect(self.output) as conn:
            try:
                return conn.execute(sql).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                return []  # a worker is creating the tables right now


# The files that take longest (minutes of real runs, kill -9 and waits,
# measured with --durations), longest first. scripts/test hands whole files
# to its parallel workers in collection order (--no-loadscope-reorder:
# xdist would otherwise start the files with the most tests first, which
# are quick unit tests, and leave these to the end, one worker running
# them long after the others finish). Starting them first is the usual
# longest-first schedule; a file missing here just runs in its place.
LONGEST_FIRST = (  # seconds on 2 busy cores, 2026-12-03
    "test_batch.py",  # 239
    "test_fair_share_runs.py",  # 170
    "test_chaos.py",  # 128
    "test_cli.py",  # 94
    "test_rate_budget_runs.py",  # 78
    "test_cli_newcomer.py",  # 77
    "test_runner.py",  # 76
    "test_ocr.py",  # 73
    "test_queue_contract.py",  # 60
    "test_pool.py",  # 57
    "test_periodic.py",  # 57
    "test_end_to_end.py",  # 57
    "test_dashboard_browser.py",  # 54
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _no_forkserver_outlives_its_test():
    """A test that starts multiprocessing's forkserver in this (pytest's)
    process leaves it running, with the environment of that moment; a later
    test's workers in the same process were forked from it, without the
    DOCUTRAIN_TEST_* variables that test set (test_periodic's job ended at
    once after test_store's forkserver). Stopped after each test that made one."""
    yield
    from docutrain_cli.run.forkserver import stop_unused_forkserver

    stop_unused_forkserver()  # nothing to do when the test started none


@pytest.fixture
def docutrain(tmp_path: Path):
    made = Docutrain(tmp_path)
    yield made
    made.stop_all()


def make_files(folder: Path, names: list[str], content: str = "hello {name}") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.write_text(content.format(name=name))
        paths.append(path)
    return paths


# --- document pipeline fixtures (tests/test_{extract,chunk,embed,store,process}.py) ---


@pytest.fixture
def openai_standin():
    """A real OpenAI-compatible embeddings server on 127.0.0.1 (see tests/openai_standin.py)."""
    from openai_standin import Server

    with Server() as state:
        yield state


# --- end of document pipeline fixtures ---


# --- Supabase fixtures (tests/test_supabase_*.py, tests/test_outbox.py) ---


@pytest.fixture
def supabase_standin():
    """A real PostgREST + Storage speaking server on 127.0.0.1 (see tests/supabase_standin.py)."""
    from supabase_standin import StandIn

    server = StandIn()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def supabase_settings(supabase_standin, tmp_path):
    """Settings pointing at the stand-in, with a store in tmp_path."""
    from docutrain_cli.config import Settings

    return Settings(
        supabase_url=supabase_standin.url,
        supabase_service_role_key=supabase_standin.key,
        store=str(tmp_path / "docutrain.db"),
        queue=str(tmp_path / "queue.db"),
        embedder="offline",
    )


# --- end of Supabase fixtures ---


# --- PostgreSQL / pgmq fixtures (tests/test_queue_contract.py, tests/test_pgmq_*.py; helpers in tests/pg.py) ---


@pytest.fixture(scope="session")
def pg_admin():
    """(admin URL, user) for the PostgreSQL on 127.0.0.1:5432; skips (fails when CI is set) without one."""
    import pg

    try:
        return pg.find_admin()
    except LookupError as exc:
        pg.unavailable(str(exc))


@pytest.fixture(scope="session")
def pg_url(pg_admin):
    """A fresh database for this test session with pgmq installed from the bundled SQL."""
    import pg

    from docutrain_cli.queues.pgmq_setup import bundled_sql

    with pg.fresh_database(*pg_admin) as db_url:
        path, _ = bundled_sql()
        pg.admin_execute(db_url, path.read_text(encoding="utf-8"))
        yield db_url


@pytest.fixture
def pgmq_queue_name(pg_url):
    """A new, empty pgmq queue (and its dead-letter queue) in the session database."""
    import pg

    from docutrain_cli.queues.pgmq_setup import init_queue

    name = pg.new_queue_name()
    init_queue(pg_url, name)
    yield name
    pg.drop_queue(pg_url, name)


# --- end of PostgreSQL / pgmq fixtures ---


@pytest.fixture
def tesseract():
    """Tesseract with English data and orientation detection (osd); skips
    (fails when CI is set) without them."""
    from docutrain_cli.config import environ_flag
    from docutrain_cli.pipeline.ocr import find_support
    from docutrain_cli.pipeline.tesseract import orientation_available

    support = find_support(None)
    problem = support.problem("eng")
    if not problem and not orientation_available(support.tessdata):
        problem = f"no osd.traineddata in {support.tessdata} (apt-get install tesseract-ocr-osd)"
    if problem:
        message = f"OCR tests need Tesseract: {problem}"
        if environ_flag("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def cloudflare():
    """A running stand-in for Cloudflare Queues' REST API (tests/cloudflare_standin.py)."""
    from cloudflare_standin import CloudflareStandin

    standin = CloudflareStandin().start()
    yield standin
    standin.stop()

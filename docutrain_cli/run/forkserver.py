"""The workers' forkserver: what it imports, and starting it early.

forkserver, not fork: workers never inherit the runner's clients, threads
or locks. The server imports the worker code once, so each worker (and
each replacement of a crashed one) starts with it loaded instead of
importing PyMuPDF on its own; for a service, also the client libraries its
workers use (`client_modules`). It holds no clients: none are made at
import. Its children die with it (forkserver_child).

Its imports (PyMuPDF and numpy: about 0.2 s of CPU) are the biggest part of
a run's start. `docutrain run` starts it before loading the CLI
(docutrain_cli.console), so it imports on another core while this process
imports typer and opens the queue; the pool then finds it ready
(docs/benchmarks.md, row 1: a one-page drain went from 0.29 s to 0.12 s).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

from docutrain_cli.config import Settings


def worker_modules(spec: str, settings: Settings | None = None) -> list[str]:
    """Modules for the forkserver to import once: forkserver_child (its
    children die with it), worker_threads (one BLAS thread each, before
    numpy loads), then what a worker for this processor needs: the
    worker module, the processor's, the heavy modules that one imports
    lazily and names in `WORKER_PRELOAD` (worker_preload, in the forkserver:
    this process need not import the processor first), and the client
    libraries these settings use (`client_modules`)."""
    module_name = spec.partition(":")[0]
    clients = client_modules(settings) if settings is not None else []
    return list(dict.fromkeys([
        "docutrain_cli.run.forkserver_child", "docutrain_cli.run.worker_threads", "docutrain_cli.run.worker", module_name,
        "docutrain_cli.run.worker_preload", *clients,
    ]))


def client_modules(settings: Settings) -> list[str]:
    """The client libraries a worker imports on its first job with these
    settings. Imported in the forkserver instead, no worker's first upload
    waits for them (measured here: openai 0.35 s, supabase 0.15 s more, of a
    0.34 s upload). Importing makes no client: each worker still makes its own."""
    modules = []
    if settings.embedder_kind == "openai":
        modules.append("openai")
    if settings.supabase_enabled:
        modules.append("supabase")
    return modules


def forkserver_context(processor: str, settings: Settings | None = None):
    """multiprocessing's forkserver context, its preload set for workers of
    this processor (and with `settings`, the client libraries they use).
    The preload counts only for a forkserver not yet running."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(worker_modules(processor, settings))
    return context


def start_forkserver(settings: Settings, *, preload_clients: bool) -> None:
    """Start the forkserver for these settings now, without waiting for its
    imports: the first worker's start waits for them instead."""
    forkserver_context(settings.processor, settings if preload_clients else None)
    ensure_running()


def ensure_running() -> None:
    """Start multiprocessing's forkserver (if not running) deaf to Ctrl-C.
    Ctrl-C goes to the whole process group; a forkserver that gets it while
    it imports PyMuPDF dies with a traceback. exec resets handlers but keeps
    an ignored signal ignored, so ignore SIGINT just while it is spawned,
    with SIGINT blocked here so a Ctrl-C meanwhile waits for the runner."""
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()  # only the main thread may set handlers
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def forkserver_pid() -> int | None:
    # multiprocessing keeps one forkserver per process and starts a new one
    # when it finds the old one dead; its pid is only kept privately.
    from multiprocessing import forkserver

    return getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)


def stop_unused_forkserver() -> None:
    """Stop the forkserver `docutrain run` started early, when the run needs
    no workers after all (an empty drain). Killed rather than told: it
    notices its runner has gone only once its imports are done, and until
    then it holds the command's stdout and stderr, so cron (or a script
    reading them) waited those 0.2 s for the end of an empty run."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    pid = forkserver_pid()
    if pid is None or server is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    stop = getattr(server, "_stop", None)  # closes our end, reaps it, forgets it (CPython's own)
    if stop is not None:
        stop()

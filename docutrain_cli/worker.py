"""What runs inside each worker process.

Workers are started by the runner's process pool (forkserver, so they never
inherit the parent's network clients or threads). Each one loads the
configured processor once and then runs one job at a time.
"""

from __future__ import annotations

import ctypes
import importlib
import signal
import sys
from typing import Any, Callable

from docutrain_cli.config import Settings
from docutrain_cli.errors import ConfigError
from docutrain_cli.jobs import Job
from docutrain_cli.progress_channel import ProgressSender

Processor = Callable[[Job, Settings], dict]

_settings: Settings | None = None
_processor: Processor | None = None
_progress = ProgressSender(None)
_current_job_id: int | None = None

PR_SET_PDEATHSIG = 1


def load_processor(spec: str) -> Processor:
    """'package.module:function' -> the function."""
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"processor: cannot load {spec!r}: {exc}") from None


def worker_modules(spec: str) -> list[str]:
    """Modules a worker for this processor needs, for the forkserver to import
    once: this module, the processor's, and whatever heavy modules that one
    imports lazily and names in `WORKER_PRELOAD` (so the runner stays light)."""
    module_name = spec.partition(":")[0]
    declared = getattr(importlib.import_module(module_name), "WORKER_PRELOAD", ())
    return list(dict.fromkeys([__name__, module_name, *declared]))


def _die_with_parent() -> None:
    # If the runner is killed (even kill -9) its workers must not linger and
    # keep writing: ask Linux to SIGKILL us when our parent goes away.
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass


def init_worker(settings: Settings, progress_address: str | None = None) -> None:
    """Pool initializer: Ctrl-C is the runner's business, not the workers'."""
    global _settings, _processor, _progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _settings = settings
    _processor = load_processor(settings.processor)
    _progress = ProgressSender(progress_address)


def run_job(job: Job) -> dict[str, Any]:
    global _current_job_id
    assert _processor is not None and _settings is not None, "init_worker not called"
    _current_job_id = job.id
    try:
        return _processor(job, _settings) or {}
    finally:
        _current_job_id = None


def report_progress(message: str) -> None:
    """Tell the runner what the current job is doing ("OCR page 3/40"), for
    its display. Best effort: never blocks, never fails the job; a no-op
    outside a worker."""
    if _current_job_id is not None:
        _progress.send(_current_job_id, message)


def noop(job: Job, settings: Settings) -> dict[str, Any]:
    """A processor that does nothing: measures the dispatcher's own cost."""
    return {}

"""Every process the workers' forkserver forks dies with it.

Imported only inside the forkserver (the first module it preloads, see
forkserver.worker_modules): the runner and the tests never import it, so no
other fork is touched.

Why: a worker is forked first and only then reads its arguments, among them
its pool's channel locks, which it opens by name. When the forkserver is
killed (the OOM killer, the chaos test), multiprocessing reports each of its
children as exited with code 255, so pebble never stops them. A worker that
was still starting carried on, found the locks already removed by the
pool's stop and died with a FileNotFoundError traceback; a busy one carried
on with a job the runner had already given back. PR_SET_PDEATHSIG, set in
the child right after the fork and before anything else runs, has the
kernel kill it with its forkserver, as pebble already believes. (The
forkserver has one thread, so "its parent thread exits" means "the
forkserver exits".)
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1
_is_worker = False  # set in each child of the forkserver


def _setup() -> None:
    if not sys.platform.startswith("linux"):
        return  # elsewhere workers still die with the runner (worker.py)
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        return
    forkserver = os.getpid()

    def die_with_forkserver() -> None:
        global _is_worker
        if _is_worker:  # a worker's own fork: the hook came along, the rule does not
            return
        _is_worker = True
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != forkserver:  # it died before prctl: too late for the kernel
            os.kill(os.getpid(), signal.SIGKILL)

    os.register_at_fork(after_in_child=die_with_forkserver)


_setup()

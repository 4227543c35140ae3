"""multiprocessing's resource tracker, put back when something killed it.

The only named resources docutrain's runner holds are the two POSIX
semaphores (`/mp-...`) of pebble's worker channel: forkserver workers open
them by name, so they cannot be unlinked at once, and multiprocessing
registers them with its resource tracker, a helper process that unlinks
them should the runner die without doing it itself.

When the tracker is the process that dies (the OOM killer, the chaos test),
the next register or unregister relaunches it with a UserWarning on stderr,
and the new tracker, which never heard of the channel's semaphores, prints
a `KeyError: '/mp-...'` traceback for each one the pool's stop unregisters.

`restore` runs before a pool is made and before it is stopped (the only
times the runner registers or unregisters): a dead tracker is relaunched
there, the warning becomes one log line, and the live semaphores are
registered with the new tracker, so it still cleans them up after a crash
and their unregistering is no news to it.
"""

from __future__ import annotations

import logging
import warnings
from multiprocessing import resource_tracker
from typing import Iterable

log = logging.getLogger("docutrain.pool")

_RELAUNCH = "resource_tracker: process died unexpectedly"


def restore(semaphores: Iterable[str]) -> bool:
    """Relaunch the tracker if it died and tell it about `semaphores`
    (their names); True when it had died."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resource_tracker.ensure_running()
    relaunched = any(_RELAUNCH in str(w.message) for w in caught)
    for w in caught:  # anything else is not ours to swallow
        if _RELAUNCH not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if relaunched:
        names = list(semaphores)
        for name in names:
            resource_tracker.register(name, "semaphore")
        log.warning("multiprocessing's resource tracker had died; started a new one (%d semaphores handed over)",
                    len(names))
    return relaunched

"""multiprocessing's resource tracker, put back when something killed it.

The only named resources docutrain's runner holds are the two POSIX
semaphores (`/mp-...`) of pebble's worker channel: forkserver workers open
them by name, so they cannot be unlinked at once, and multiprocessing
registers them with its resource tracker, a helper process that unlinks
them should the runner die without doing it itself.

When the tracker is the process that dies (the OOM killer, the chaos test),
whatever next needs it relaunches it (pebble starting a replacement worker,
a new pool, the pool's stop) with a UserWarning on stderr, and the new
tracker, which never heard of the channel's semaphores, prints a
`KeyError: '/mp-...'` traceback for each one the pool's stop unregisters.

So: that warning is kept out of the output (the relaunch is expected and
harmless here), and `restore` runs before a pool is made and before it is
stopped: it relaunches a dead tracker and registers the live semaphores
with whichever tracker runs now (registering twice is a no-op for it), so
their unregistering is no news to it and a crash still gets them unlinked.
"""

from __future__ import annotations

import logging
import warnings
from multiprocessing import resource_tracker
from typing import Iterable

log = logging.getLogger("docutrain.pool")

_RELAUNCH = "resource_tracker: process died unexpectedly"
warnings.filterwarnings("ignore", message=_RELAUNCH, category=UserWarning)


def restore(semaphores: Iterable[str]) -> None:
    """Make sure a tracker runs and knows `semaphores` (their names)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        resource_tracker.ensure_running()
    for w in caught:
        if _RELAUNCH in str(w.message):
            log.warning("multiprocessing's resource tracker had died; started a new one")
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for name in semaphores:
        resource_tracker.register(name, "semaphore")

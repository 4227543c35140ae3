"""Imported by the workers' forkserver when a processor names it in
WORKER_PRELOAD (tests/declared_preload.py): it remembers which process."""

import os

IMPORTED_BY = os.getpid()

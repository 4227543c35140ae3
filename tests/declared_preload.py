"""A processor that, like docutrain's own (run/process.py), names a module
its workers need in WORKER_PRELOAD, and notes where that module was
imported: DOCUTRAIN_TEST_OUTPUT + '.preload' gets "<pid that imported it>
<pid of the worker>" a job."""

from __future__ import annotations

import os
import sys

from tests.processors import _record

WORKER_PRELOAD = ("tests.preloaded_marker",)


def where_imported(job, context):
    marker = sys.modules.get("tests.preloaded_marker")
    imported_by = marker.IMPORTED_BY if marker else None
    with open(os.environ["DOCUTRAIN_TEST_OUTPUT"] + ".preload", "a") as notes:
        notes.write(f"{imported_by} {os.getpid()}\n")
    return _record(job)

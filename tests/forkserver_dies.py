"""A processor whose module kills the forkserver that preloads it, so the
runner's workers cannot start: a broken pool, on demand.

DOCUTRAIN_TEST_FORKSERVER_DEATHS: how many forkservers die at start (a
count kept next to DOCUTRAIN_TEST_OUTPUT), or `all`. The work itself is
tests.processors:record.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.processors import record  # noqa: F401 - the processor


def _in_forkserver() -> bool:
    # The forkserver runs `python -c "from multiprocessing.forkserver import main; ..."`.
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules


if _in_forkserver():
    _deaths = os.environ.get("DOCUTRAIN_TEST_FORKSERVER_DEATHS", "all")
    _tally = Path(os.environ["DOCUTRAIN_TEST_OUTPUT"] + ".forkservers")
    with _tally.open("a+") as fh:
        fh.seek(0)
        started = len(fh.read().splitlines())
        fh.write(f"{os.getpid()}\n")
    if _deaths == "all" or started < int(_deaths):
        os._exit(1)

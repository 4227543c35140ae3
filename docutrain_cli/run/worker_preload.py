"""Imported by the workers' forkserver after the processor's module (see
run/forkserver.py): the heavy modules that processor modules name in
`WORKER_PRELOAD` (run/process.py: PyMuPDF's, numpy's).

A processor imports them lazily, so the runner, which imports it only to
check it, stays light, and its workers find them loaded. They are read
here, in the forkserver, not by the runner: `docutrain run` starts the
forkserver before it has imported anything it can avoid (console.py).
"""

from __future__ import annotations

import importlib
import sys


def declared_modules() -> list[str]:
    """What the modules imported so far name in WORKER_PRELOAD, in order.
    (The module's own dict, not getattr: its __getattr__ is not asked.)"""
    modules = list(sys.modules.values())
    names = (name for module in modules for name in getattr(module, "__dict__", {}).get("WORKER_PRELOAD", ()))
    return list(dict.fromkeys(names))


for _name in declared_modules():
    importlib.import_module(_name)

"""Process-tree helpers for tests that kill parts of a running `docutrain
run` (Linux /proc): its children, its workers, its forkserver, its
resource tracker."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[1])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[1] == pid and stat[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def forkserver_of(runner_pid: int) -> int | None:
    for child in children(runner_pid):
        if "multiprocessing.forkserver" in cmdline(child):
            return child
    return None


def tracker_of(runner_pid: int) -> int | None:
    """multiprocessing's resource tracker (a child of the runner)."""
    for child in children(runner_pid):
        if "multiprocessing.resource_tracker" in cmdline(child):
            return child
    return None


def workers_of(runner_pid: int) -> list[int]:
    """The pool's workers: the forkserver's children."""
    server = forkserver_of(runner_pid)
    return children(server) if server else []


def ignores(pid: int, signum: int) -> bool:
    """Is `signum` set to SIG_IGN in that process?"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def sigkill(pid: int) -> None:
    """kill -9, when the process is still there."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

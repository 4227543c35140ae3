"""What tests/test_pool.py's pebble pools run in their workers: arguments
that hold a worker in its start, for the tests of a pool stopped while a
worker is still starting, and a task that forks.

A forkserver worker is forked first and then unpickles its arguments: the
pool's initargs, then its channel, whose locks it opens by name. An initarg
that takes seconds to unpickle holds it between the two.
"""

from __future__ import annotations

import signal
import time


class SlowToUnpickle:
    """Unpickles after `delays[i]` seconds for the i-th worker started
    (pebble pickles the arguments again for each worker; the last delay
    holds for the rest), as True for the first `deaf` workers (see
    `deaf_to_sigterm`), False for the others."""

    def __init__(self, *delays: float, deaf: int = 0):
        self.delays, self.deaf, self.started = delays, deaf, 0

    def __reduce__(self):
        delay = self.delays[min(self.started, len(self.delays) - 1)]
        self.started += 1
        return (_held, (delay, self.started <= self.deaf))


def _held(delay: float, value: bool) -> bool:
    time.sleep(delay)
    return value


def deaf_to_sigterm(deaf: bool) -> None:
    """Initializer: a worker busy in C code does not act on SIGTERM either,
    so pebble's stop waits for it (3 s) before it kills it."""
    if deaf:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_code_of_a_fork(code: int) -> int:
    """A task: fork a child that exits with `code`; what it exited with
    (-signal when killed)."""
    import os

    pid = os.fork()
    if pid == 0:
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

"""The jobs the runner holds leased, as the pool's tasks, and how many to hold.

A *task* is what the pool hands one worker: one job or, when jobs are short
(a worker finishes one in a few milliseconds), several run one after another.
The pool's round trip (a pipe message each way, pickling, a thread hand-off,
the runner's pass) then costs once a task, not once a job: measured with
no-op jobs, a pool of 2 workers ran 10,000 a second one to a task and
27,000-36,000 at 16-64 to a task.

How much to hold is measured in time, not counted: the workers' tasks plus a
few waiting (`slots`: workers + workers/2, so a worker that finishes one
finds the next without waiting for the runner), each task as many jobs as a
worker finishes in about TASK_SECONDS, from the tasks that came back. Real
documents take seconds, so they stay one to a task and the runner holds a
handful, as it always did; no-op jobs go up to MAX_JOBS_PER_TASK to a task.
A pass leases only what the finished tasks made room for: small batches.

A task of several that fails as a whole (its worker crashed or hung) is run
again one job a task, uncharged: only a job that fails on its own is
charged, so a dying worker still costs one attempt of one job.

Finished tasks are collected by the futures' callbacks (pebble's result
thread): the runner's wait wakes at the first one, and its pass settles all
that arrived meanwhile without looking at every future.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading

from docutrain_cli.jobs import Job

TASK_SECONDS = 0.02  # a task this long amortizes its round trip; a waiting one covers a pass
MAX_JOBS_PER_TASK = 100  # and the lease that fills it stays small
SMOOTHING = 0.3  # weight of the newest task in the time per job (a slow one counts at once)
# A task of several jobs is expected to last TASK_SECONDS; one that runs this
# long holds a job that hangs or is far slower than the rest: its jobs run
# again one a task, each with the full job timeout.
SPLIT_AFTER = 30.0

Task = list[Job]


class Backlog:
    def __init__(self, workers: int):
        self.slots = workers + max(1, workers // 2)  # tasks in the pool: running and waiting
        self.job_seconds: float | None = None  # a worker's time per job, smoothed; None until measured
        self._tasks: dict[concurrent.futures.Future, Task] = {}  # in the order they were scheduled
        self._seen_running: set[concurrent.futures.Future] = set()
        self._finished: collections.deque[concurrent.futures.Future] = collections.deque()
        self._arrived = threading.Event()

    # -- sizing ----------------------------------------------------------------
    def measured(self, jobs: int, seconds: float) -> None:
        """A task of `jobs` jobs took a worker `seconds`."""
        per_job = max(seconds / jobs, 1e-6)
        old = self.job_seconds
        self.job_seconds = per_job if old is None else old + SMOOTHING * (per_job - old)

    def jobs_per_task(self) -> int:
        if self.job_seconds is None:
            return 1  # nothing measured yet: as if jobs were slow
        return max(1, min(MAX_JOBS_PER_TASK, int(TASK_SECONDS / self.job_seconds)))

    def wanted(self) -> int:
        """Jobs to lease now: what the free task slots hold."""
        return max(0, self.slots - len(self._tasks)) * self.jobs_per_task()

    def tasks_for(self, jobs: list[Job]) -> list[Task]:
        """Leased `jobs` as tasks, spread evenly over the free slots (four
        jobs and two idle workers make two tasks, not one)."""
        if not jobs:
            return []
        count = min(max(1, self.slots - len(self._tasks)), len(jobs))
        size = -(-len(jobs) // count)
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    @staticmethod
    def timeout(task: Task, job_timeout: float) -> float:
        return job_timeout if len(task) == 1 else min(job_timeout, SPLIT_AFTER)

    # -- the tasks in the pool ---------------------------------------------------
    def add(self, future: concurrent.futures.Future, task: Task) -> None:
        self._tasks[future] = task
        future.add_done_callback(self._done)  # at once if it is done already (in-process runs)

    def _done(self, future: concurrent.futures.Future) -> None:
        # pebble's result thread: hand it over and wake the runner, nothing more
        self._finished.append(future)
        self._arrived.set()

    def wait(self, timeout: float) -> None:
        """Until a task finishes, or `timeout` seconds."""
        if not self._finished:
            self._arrived.wait(timeout)
        self._arrived.clear()  # a task finishing meanwhile is in _finished: the next pass takes it

    def finished(self) -> list[tuple[concurrent.futures.Future, Task]]:
        """Tasks that finished since the last call, in the order they did,
        now out of the backlog (a task already popped, e.g. cancelled, is skipped)."""
        done = []
        while self._finished:
            future = self._finished.popleft()
            task = self.pop(future)
            if task is not None:
                done.append((future, task))
        return done

    def done_now(self) -> list[tuple[concurrent.futures.Future, Task]]:
        """Every task that is done, callback or not (the pool is being stopped)."""
        done = self.finished()
        for future in [f for f in self._tasks if f.done() and not f.cancelled()]:
            done.append((future, self.pop(future)))
        return done

    def started(self) -> list[Task]:
        """Tasks a worker took since the last call (each once)."""
        taken = [f for f in self._tasks if f not in self._seen_running and f.running()]
        self._seen_running.update(taken)
        return [self._tasks[f] for f in taken]

    def pop(self, future: concurrent.futures.Future) -> Task | None:
        self._seen_running.discard(future)
        return self._tasks.pop(future, None)

    def items(self) -> list[tuple[concurrent.futures.Future, Task]]:
        return list(self._tasks.items())

    @property
    def jobs(self) -> list[Job]:
        return [job for task in list(self._tasks.values()) for job in task]

    @property
    def running(self) -> list[Job]:
        """Jobs of the tasks a worker took (as of the last pass)."""
        return [job for future, task in list(self._tasks.items()) if future in self._seen_running for job in task]

    def __len__(self) -> int:
        return len(self._tasks)

"""Fair share between users, by embedding tokens: start-time fair queuing.

Within each priority level (queues/order.py), every user has a *last
finish* on the level's virtual clock. A new job of user u gets

    vstart = max(virtual now, u's last finish)
    u's last finish := vstart + cost / weight(u)

and jobs are leased in order of vstart; leasing a job moves the level's
virtual now up to its vstart (the backends do, see queues/order.py). So a user who has received little service
lately starts at virtual now, ahead of the backlog of a user whose queued
jobs reach far into the virtual future: one job from a newcomer is leased
next, within about one job's time, however many another user has queued.
A user of weight 2 advances half as fast, so gets twice the tokens while
both have work queued. Jobs without a user id are one user ("").

`cost` is the job's estimated embedding tokens (pipeline/cost.py, or the
remote_job_tokens setting for files in Storage). When a job is done, its
user's last finish is moved by (actual - estimated) / weight, so a wrong
estimate is paid back by the user's next jobs.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from docutrain_cli.jobs import Job
from docutrain_cli.queues.order import Book, LeaseOrder, level_of
from docutrain_cli.ratelimit.order import Place


def user_key(job: Job) -> str:
    return job.user_id or ""


class FairShare(LeaseOrder):
    name = "fair"
    uses_book = True

    def __init__(self, *, estimate: Callable[[Job], int], weights: Mapping[str, float] | None = None,
                 max_wait: float = 900.0):
        super().__init__(max_wait)
        self.estimate = estimate  # job -> estimated embedding tokens
        self.weights = dict(weights or {})

    @classmethod
    def from_settings(cls, settings) -> "FairShare":
        return cls(estimate=token_estimator(settings), weights=settings.user_weights,
                   max_wait=settings.priority_max_wait)

    def weight(self, job: Job) -> float:
        return self.weights.get(job.user_id or "", 1.0)

    def prepare(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job.cost is None:
                job.cost = self.estimate(job)

    def tag(self, jobs: Sequence[Job], book: Book | None) -> None:
        self.prepare(jobs)  # a no-op when the caller prepared them
        for level in sorted({level_of(job) for job in jobs}):
            mine = [job for job in jobs if level_of(job) == level]
            now = book.clock(level)
            finishes = book.finishes(level, {user_key(job) for job in mine})
            for job in mine:
                job.vstart = max(now, finishes.get(user_key(job), now))
                finishes[user_key(job)] = job.vstart + job.cost / self.weight(job)
            book.save(level, finishes)

    def finished(self, job: Job, book: Book | None) -> None:
        if job.vstart is None or job.cost is None or job.result is None:
            return
        actual = job.result.tokens_embedded + job.result.batch_tokens  # cached tokens cost nothing
        if actual != job.cost:
            book.correct(level_of(job), user_key(job), (actual - job.cost) / self.weight(job))

    def place(self, job: Job) -> Place:
        """In the rate budget's line, users share by tokens too (ratelimit/order.py)."""
        return Place(level=level_of(job), user=user_key(job), weight=self.weight(job), vstart=job.vstart or 0.0)


def order_for(settings) -> LeaseOrder:
    """The lease order the settings name (lease_order, priority_max_wait, user_weights)."""
    if settings.lease_order == "fifo":
        return LeaseOrder(settings.priority_max_wait)
    return FairShare.from_settings(settings)


def token_estimator(settings) -> Callable[[Job], int]:
    """job -> its estimated embedding tokens: measured from the file when it
    is on this machine, else the remote_job_tokens setting."""

    def estimate(job: Job) -> int:
        # Imported here: every process that opens a queue makes this estimator,
        # only producers use it (a runner's start-up would pay for the tokenizer).
        from docutrain_cli.pipeline.cost import estimate_tokens
        from docutrain_cli.pipeline.load import REMOTE_PREFIX

        if job.source.startswith(REMOTE_PREFIX):
            return settings.remote_job_tokens
        measured = estimate_tokens(job.source, model=settings.embedding_model,
                                   chunk_tokens=settings.chunk_tokens, chunk_overlap=settings.chunk_overlap)
        return settings.remote_job_tokens if measured is None else measured

    return estimate

"""The Batch API step inside a run (embedding_mode 'batch', see batch/step.py).

At the start it resumes and polls the batches of earlier runs; on its timer
it sends what the workers parked (an idle queue everything, a busy one only
full files) and applies what came back; at the end it sends the rest, unless
the run was interrupted or the account cannot pay.
"""

from __future__ import annotations

from typing import Any, Callable

from docutrain_cli.errors import AccountError
from docutrain_cli.run.summary import RunSummary


class BatchMode:
    def __init__(
        self, settings, status: Any, queue: Any, summary: RunSummary, *,
        account_problem: Callable[[AccountError], None], flush_status: Callable[[], None], drain: bool,
    ):
        from docutrain_cli.batch.step import BatchStep, StepReport

        self.step = BatchStep(settings, status, queue=queue)
        self.report = StepReport()
        self.summary = summary
        self._account_problem = account_problem
        self._flush_status = flush_status
        self._drain = drain

    def run_step(self, *, flush: bool) -> None:
        try:
            report = self.step.step(flush=flush)
            self.report.add(report)
            if report.documents_ready or report.documents_dead:
                self._flush_status()  # an idle service would otherwise sit on these statuses
        except AccountError as exc:  # nothing can be sent: every job and parked chunk stays
            self._account_problem(exc)
            if self._drain:
                self.summary.stop_reason = "account"  # also when met after the loop (the last pass)

    def finish(self, *, send: bool) -> None:
        """Send what the workers parked (`send`), apply what is back, finish documents."""
        if send:
            self.run_step(flush=True)
        self.step.close()
        self.summary.batch = self.report.to_dict()
        if self.summary.cost_usd is not None:
            cost = self.report.cost_usd
            self.summary.cost_usd = None if cost is None else self.summary.cost_usd + cost

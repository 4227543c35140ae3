"""What the live display and the run's summary show of the embedding rate
budget: its own figures (tokens/min against the limit, waits) plus this
run's share. Read-only; the budget is opened on first use."""

from __future__ import annotations

from docutrain_cli.run.summary import RunSummary


class BudgetView:
    def __init__(self, settings):
        self.settings = settings
        self._budget = None

    def read(self, summary: RunSummary, elapsed: float) -> dict | None:
        """The figures, or None with the offline embedder or before any request was made."""
        if self.settings.embedder_kind != "openai":
            return None
        try:
            if self._budget is None:
                from docutrain_cli.ratelimit.budget import open_budget

                self._budget = open_budget(self.settings)
            view = self._budget.snapshot()
        except Exception:  # noqa: BLE001 - the display must never stop the run
            return None
        view["run_tokens_per_minute"] = round(summary.totals["tokens_embedded"] * 60.0 / max(elapsed, 1e-9))
        view["run_wait_seconds"] = round(summary.rate_wait_seconds, 1)
        view["run_rate_limited"] = summary.totals["rate_limited"]
        return view

    def close(self) -> None:
        if self._budget is not None:
            self._budget.store.close()

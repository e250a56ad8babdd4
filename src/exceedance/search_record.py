"""What a search records in MLflow: its parent run, a nested run per trial, its Pareto front.

Runs in the recording process (see `recorder`), never in the training process: it imports
MLflow and matplotlib, which the training process does without.
"""

from __future__ import annotations

import numpy as np

from exceedance import pareto, plots
from exceedance.config import Config
from exceedance.tracking import Tracker

# The parent's front (table and tags) is refreshed every this many finished trials, so a long
# search shows it as it goes, and once more when the search ends (with its figure).
FRONT_EVERY = 10


class SearchRecord:
    """One search in MLflow: its parent run, a nested run per trial, its Pareto front.

    Args:
        uri: the tracking URI (already checked by `tracking.connect`).
        config: the search's configuration.
        search_key: the search's stable name; an earlier parent run with it is resumed.
        tags: extra tags for a new parent run.
    """

    def __init__(self, uri: str, config: Config, search_key: str, tags: dict[str, str]):
        self.config = config
        self.tracker = Tracker(uri, config.name)
        self.parent_id = self.tracker.start_search(search_key, config, tags, fresh=config.search.overwrite)
        self.tracker.close_orphans(self.parent_id)
        self._runs: dict[str, str] = {}  # trial id -> its run, until the trial is recorded in full
        self._on_front: dict[str, bool] = {}
        self._finished = 0
        self._ended = False

    def start_trial(self, trial_id: str) -> None:
        self._runs[trial_id] = self.tracker.start_trial(self.parent_id, trial_id)

    def log(
        self, trial_id: str, metrics: list[tuple[str, float, int]], params: dict, tags: dict[str, str] | None = None
    ) -> None:
        """Metrics `(key, value, step)`, params and tags of a trial, in one batch."""
        self.tracker.log_batch(self._runs[trial_id], metrics, params, tags)

    def end_trial(self, trial_id: str, status: str, metrics: list, params: dict, tags: dict[str, str]) -> None:
        """The trial's last batch and its end status; every `FRONT_EVERY` finished trials, the front."""
        self.log(trial_id, metrics, params, tags)
        self.tracker.end_run(self._runs[trial_id], status)
        if status != "FINISHED":
            del self._runs[trial_id]
            return
        self._finished += 1
        if self._finished % FRONT_EVERY == 0:
            self.publish_front(plot=False)

    def log_histogram(self, trial_id: str, predictions: np.ndarray, threshold: float) -> None:
        """The picture a finished trial gets (its loss curves need none: MLflow charts metrics)."""
        figure = plots.prediction_histogram(predictions, self.config.data.limit, threshold)
        self.tracker.log_figure(self._runs.pop(trial_id), figure, "predictions.png")

    def publish_front(self, plot: bool = True) -> list[dict]:
        """Recompute the Pareto front over finished trials; refresh its table, tags and (with
        `plot`) its figure."""
        records = self.tracker.trial_records(self.parent_id)
        if not records:
            return []
        quality = np.array([r.quality for r in records])
        exceedance = np.array([r.exceedance_rate for r in records])
        mask = pareto.front_mask(quality, exceedance, self.config.quality_direction)
        rows = pareto.table(records, mask)
        self.tracker.log_table(self.parent_id, rows, "pareto.csv")
        if plot:
            forms = [r.params["penalty"] for r in records]
            figure = plots.pareto_front(quality, exceedance, forms, mask, self.config.data.quality)
            self.tracker.log_figure(self.parent_id, figure, "pareto.png")
        changed = {
            r.run_id: {"pareto": str(m).lower()}
            for r, m in zip(records, mask, strict=True)
            if self._on_front.get(r.run_id) != m
        }
        self.tracker.set_tags(changed)
        self._on_front.update({r.run_id: bool(m) for r, m in zip(records, mask, strict=True)})
        return rows

    def finish(self, status: str) -> tuple[list[dict], int, str]:
        """End the search: its final front (with the figure) when it finished, then its status,
        which a trial cut short (Ctrl-C) shares. Returns the front's rows, the number of
        finished trials and how to browse them."""
        rows = self.publish_front() if status == "FINISHED" else []
        finished = len(self.tracker.trial_records(self.parent_id))
        if status == "FINISHED" and finished == 0:
            status = "FAILED"  # a search in which no trial finished has no front to show
        self._end(status)
        return rows, finished, self.tracker.ui_command()

    def abandon(self) -> None:
        """The training process is gone without ending the search: close what is open as KILLED."""
        if not self._ended:
            self._end("KILLED")

    def _end(self, status: str) -> None:
        for run_id in self._runs.values():
            self.tracker.end_run(run_id, status)
        self._runs.clear()
        self.tracker.end_run(self.parent_id, status)
        self._ended = True

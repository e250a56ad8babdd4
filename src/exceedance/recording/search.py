"""The recording side of one search: turns the trial loop's events into MLflow runs.

Owns everything MLflow-shaped about a search: its parent run, trial id -> run id, when a
trial's curves are sent (batching), and the Pareto front on the parent. Runs in the recording
process (see `process`), never in the training process: it imports MLflow and matplotlib, which
the training process does without. Testable without TensorFlow: feed it events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from exceedance import names, pareto, plots
from exceedance.recording.events import (
    FINISHED,
    KILLED,
    EpochEnded,
    Event,
    SearchEnded,
    SearchStarted,
    SearchSummary,
    TrialEnded,
    TrialPredictions,
    TrialStarted,
)
from exceedance.recording.experiment import Experiment

# The parent's front (table and tags) is refreshed every this many finished trials, so a long
# search shows it as it goes, and once more when the search ends (with its figure).
FRONT_EVERY = 10
# A trial's curves go to MLflow in one batch when it ends, or sooner once this many seconds have
# passed since its last batch: few transactions per short trial, live curves for long ones.
SEND_EVERY_S = 5.0


@dataclass
class _Unsent:
    """A trial's metrics not yet sent to MLflow."""

    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)


class SearchRecording:
    """One search in MLflow: its parent run, a nested run per trial, its Pareto front.

    Args:
        started: the search's start (URI, config, key, tags); an earlier parent run with the same
            key is resumed, and its trial runs left RUNNING by a killed process are marked KILLED.
    """

    def __init__(self, started: SearchStarted):
        self.config = started.config
        self.experiment = Experiment(started.uri, started.config.name)
        self.parent_id = self.experiment.start_search(
            started.search_key, started.config, started.tags, fresh=started.config.search.overwrite
        )
        self.experiment.close_orphans(self.parent_id)
        self._runs: dict[str, str] = {}  # trial id -> its run, while the run is open
        self._to_draw: dict[str, str] = {}  # trial id -> the run of a finished trial, until its picture
        self._unsent: dict[str, _Unsent] = {}
        self._on_front: dict[str, bool] = {}
        self._finished = 0
        self._ended = False

    def handle(self, event: Event) -> SearchSummary | None:
        """Record one event; a `SearchEnded` is answered with the search's summary."""
        match event:
            case TrialStarted(trial_id, params):
                self._runs[trial_id] = self.experiment.start_trial(self.parent_id, trial_id, params)
                self._unsent[trial_id] = _Unsent()
            case EpochEnded(trial_id, step, metrics):
                unsent = self._unsent[trial_id]
                unsent.metrics += [(k, v, step) for k, v in metrics.items()]
                if time.monotonic() - unsent.since >= SEND_EVERY_S:
                    self._send(trial_id)
            case TrialEnded():
                self._end_trial(event)
            case TrialPredictions(trial_id, predictions, threshold):
                figure = plots.prediction_histogram(predictions, self.config.data.limit, threshold)
                self.experiment.log_figure(self._to_draw.pop(trial_id), figure, names.HISTOGRAM)
            case SearchEnded(status):
                return self._end_search(status)
            case _:
                raise TypeError(f"not an event of a running search: {event!r}")
        return None

    def _send(self, trial_id: str, tags: dict[str, str] | None = None) -> None:
        unsent = self._unsent[trial_id]
        if unsent.metrics or tags:
            self.experiment.log_batch(self._runs[trial_id], unsent.metrics, tags=tags)
        self._unsent[trial_id] = _Unsent()

    def _end_trial(self, ended: TrialEnded) -> None:
        """The trial's last batch and its end status; every `FRONT_EVERY` finished trials, the front."""
        trial_id = ended.trial_id
        self._unsent[trial_id].metrics += [(k, v, ended.step) for k, v in ended.metrics.items()]
        self._send(trial_id, {names.FAILURE_REASON: ended.reason} if ended.reason else None)
        del self._unsent[trial_id]
        run_id = self._runs.pop(trial_id)
        self.experiment.end_run(run_id, ended.status)
        if ended.status != FINISHED:
            return
        self._to_draw[trial_id] = run_id
        self._finished += 1
        if self._finished % FRONT_EVERY == 0:
            self.publish_front(plot=False)

    def publish_front(self, plot: bool = True) -> list[dict]:
        """Recompute the Pareto front over finished trials; refresh its table, tags and (with
        `plot`) its figure. Returns every finished trial as a table row, front first."""
        trials = self.experiment.finished_trials(self.parent_id)
        if not trials:
            return []
        quality = np.array([t.quality for t in trials])
        exceedance = np.array([t.exceedance_rate for t in trials])
        direction = self.config.quality_direction
        mask = pareto.front_mask(quality, exceedance, direction)
        rows = pareto.table(trials, mask, names.SEARCHED, direction)
        self.experiment.log_table(self.parent_id, rows, names.FRONT_TABLE)
        if plot:
            forms = [t.params.get(names.FORM, "") for t in trials]
            figure = plots.pareto_front(quality, exceedance, forms, mask, self.config.data.quality)
            self.experiment.log_figure(self.parent_id, figure, names.FRONT_FIGURE)
        changed = {
            t.run_id: {names.ON_FRONT: str(m).lower()}
            for t, m in zip(trials, mask, strict=True)
            if self._on_front.get(t.run_id) != m
        }
        self.experiment.set_tags(changed)
        self._on_front.update({t.run_id: bool(m) for t, m in zip(trials, mask, strict=True)})
        return rows

    def _end_search(self, status: str) -> SearchSummary:
        """End the search: its final front (with the figure) when it finished, then its status,
        which a trial cut short (Ctrl-C) shares."""
        rows = self.publish_front() if status == FINISHED else []
        finished = len(self.experiment.finished_trials(self.parent_id))
        if status == FINISHED and finished == 0:
            status = "FAILED"  # a search in which no trial finished has no front to show
        self._end(status)
        return SearchSummary(rows, finished, self.experiment.ui_command())

    def abandon(self) -> None:
        """The training process is gone without ending the search: close what is open as KILLED."""
        if not self._ended:
            self._end(KILLED)

    def _end(self, status: str) -> None:
        for run_id in self._runs.values():
            self.experiment.end_run(run_id, status)
        self._runs.clear()
        self.experiment.end_run(self.parent_id, status)
        self._ended = True

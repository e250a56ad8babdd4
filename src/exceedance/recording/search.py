"""The recording side of one search: turns the trial loop's events into MLflow runs.

Owns everything MLflow-shaped about a search: its parent run, trial id -> run id, when a
trial's curves are sent (batching), and the fronts: the search's own (its table, figure and
hypervolume on the parent) and the experiment's joint front over the comparable trials of every
search in the experiment (the `pareto` tags, and its hypervolume). Runs in the recording
process (see `process`), never in the training process: it imports MLflow and matplotlib, which
the training process does without. Testable without TensorFlow: feed it events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from exceedance import names, pareto, plots
from exceedance.recording import front
from exceedance.recording.client import store_lock
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
    TrialsScored,
    TrialStarted,
    WorkerLost,
)
from exceedance.recording.experiment import Experiment, running_search

# The fronts (the parent's table, the joint front's tags) are refreshed every this many finished
# trials, so a long search shows them as it goes, and once more when the search ends (with the
# figure). The search's own hypervolume is logged after every finished trial.
FRONT_EVERY = 10
# A trial's curves go to MLflow in one batch when it ends, or sooner once this many seconds have
# passed since its last batch: few transactions per short trial, live curves for long ones.
SEND_EVERY_S = 5.0
# The per-epoch metrics `curves.png` draws, training and validation together. Drawn when the search
# ends, for the trials on its front (about 50 ms a figure: for every trial, that much more
# recording per trial, which bounds a stacked search's trials per minute).
CURVES = ("loss", names.EXCEEDANCE_RATE)


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
            A worker's (`started.worker`) records its trials under the search's running parent
            run, and leaves that run and the other workers' trials to the search's chief.
    """

    def __init__(self, started: SearchStarted):
        self.config = started.config
        self.experiment = Experiment(started.uri, started.config.name)
        self._worker = started.worker
        self._ended_at = None
        if self._worker:
            experiment = self.experiment
            self.parent_id = running_search(experiment.client, experiment.name, experiment.uri, started.search_key)
        else:
            self.parent_id, self._ended_at = self.experiment.start_search(
                started.search_key,
                started.config,
                started.tags,
                fresh=started.config.search.overwrite,
                run_name=started.run_name or started.config.name,
            )
            self.experiment.close_orphans(self.parent_id)
        self._job = started.tags.get(names.JOB_NUM, "")
        self._started = 0  # trials this run of the search started
        self._curves: dict[str, dict[str, list[tuple[int, float]]]] = {}  # trial id -> key -> (epoch, value)
        self._finished_curves: dict[str, dict[str, list[tuple[int, float]]]] = {}  # run id -> its curves
        self._runs: dict[str, str] = {}  # trial id -> its run, while the run is open
        self._to_draw: dict[str, str] = {}  # trial id -> the run of a finished trial, until its picture
        self._unsent: dict[str, _Unsent] = {}
        # Every finished trial of this search (a resumed one's too): run id -> (quality, exceedance rate).
        self._scores = {
            t.run_id: (t.quality, t.exceedance_rate) for t, _ in self.experiment.finished_trials(self.parent_id)
        }
        self._last_val: dict[str, tuple[float, float]] = {}  # trial id -> its latest validation scores
        data = self.config.data
        self._keys = (names.val_quality(data.quality), names.VAL_EXCEEDANCE_RATE)
        self._lost: dict[str, set[str]] = {}  # a dead worker's name -> the trials taken back from it
        self._comparable = {names.DATA: data.name, names.QUALITY: data.quality, names.LIMIT: data.limit}
        self._ended = False

    def handle(self, event: Event) -> SearchSummary | None:
        """Record one event; a `SearchEnded` is answered with the search's summary."""
        match event:
            case TrialStarted(trial_id, params):
                self._runs[trial_id] = self.experiment.start_trial(
                    self.parent_id, trial_id, params, self._job, self._worker
                )
                self._unsent[trial_id] = _Unsent()
                self._curves[trial_id] = {}
                self._started += 1
            case EpochEnded(trial_id, step, metrics):
                curves = self._curves[trial_id]
                for key in CURVES:
                    for name in (key, f"val_{key}"):
                        if name in metrics:
                            curves.setdefault(name, []).append((step, metrics[name]))
                if self._keys[0] in metrics:
                    self._last_val[trial_id] = (metrics[self._keys[0]], metrics.get(self._keys[1], float("nan")))
                unsent = self._unsent[trial_id]
                unsent.metrics += [(k, v, step) for k, v in metrics.items()]
                if time.monotonic() - unsent.since >= SEND_EVERY_S:
                    self._send(trial_id)
            case TrialEnded():
                self._end_trial(event)
            case TrialPredictions(trial_id, predictions, threshold):
                run_id = self._to_draw.pop(trial_id)
                figure = plots.prediction_histogram(predictions, self.config.data.limit, threshold)
                self.experiment.log_figure(run_id, figure, names.HISTOGRAM)
            case TrialsScored(scores):  # the workers' newly finished trials, from the chief
                for trial_id, pair in scores.items():
                    self._scores[trial_id] = pair
                    self._log_progress()
            case WorkerLost(worker, trial_ids):
                self._lost.setdefault(worker, set()).update(trial_ids)
                self.experiment.kill_worker_runs(self.parent_id, worker, trial_ids)
            case SearchEnded(status, started):
                self._started += started
                return self._end_search(status, read=started > 0)
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
        tags = {k: f"{v:.6g}" for k, v in ended.metrics.items()}  # its test figures (see `names.TEST`)
        self._send(trial_id, {**tags, names.FAILURE_REASON: ended.reason} if ended.reason else tags)
        del self._unsent[trial_id]
        run_id = self._runs.pop(trial_id)
        self.experiment.end_run(run_id, ended.status)
        scores = self._last_val.pop(trial_id, None)
        curves = self._curves.pop(trial_id, {})
        if ended.status != FINISHED:
            return
        self._to_draw[trial_id] = run_id
        self._finished_curves[run_id] = curves
        self._scores[run_id] = scores or (float("nan"), float("nan"))
        if not self._worker:  # a search with workers has its summary from its chief (`TrialsScored`)
            self._log_progress()

    def _log_progress(self) -> None:
        self.experiment.log_metrics(self.parent_id, self._progress(), step=len(self._scores))
        if len(self._scores) % FRONT_EVERY == 0:
            self.publish_front(plot=False)

    def _read_scores(self) -> None:
        self._scores = {
            t.run_id: (t.quality, t.exceedance_rate) for t, _ in self.experiment.finished_trials(self.parent_id)
        }

    def _progress(self) -> dict[str, float]:
        """The parent run's summary so far: finished trials, front size, best quality, least
        exceedance rate, hypervolume (each logged with the number of finished trials as its step)."""
        direction = self.config.quality_direction
        quality, exceedance = (np.array(v, dtype=float) for v in zip(*self._scores.values(), strict=True))
        scored = np.isfinite(quality) & np.isfinite(exceedance)
        progress = {
            names.FINISHED_TRIALS: len(quality),
            names.FRONT_SIZE: int(pareto.front_mask(quality, exceedance, direction).sum()),
            names.HYPERVOLUME: pareto.front_hypervolume(quality, exceedance, direction, self.config.reference_quality),
        }
        if scored.any():
            best = np.max if direction == "max" else np.min
            progress[names.best_quality(self.config.data.quality)] = float(best(quality[scored]))
            progress[names.LEAST_EXCEEDANCE_RATE] = float(np.min(exceedance[scored]))
        return progress

    def publish_front(self, plot: bool = True) -> list[dict]:
        """Refresh the search's front (its table and, with `plot`, its figure on the parent) and the
        experiment's joint front (the `pareto` tags and its hypervolume). Returns every finished
        trial of the search as a table row, its own front first."""
        direction = self.config.quality_direction
        with store_lock(self.experiment.uri):  # one search at a time moves the joint front's tags
            everything = self.experiment.finished_trials()
            joint = [(t, tags) for t, tags in everything if self._is_comparable(t)]
            if joint:
                quality = np.array([t.quality for t, _ in joint])
                exceedance = np.array([t.exceedance_rate for t, _ in joint])
                mask = pareto.front_mask(quality, exceedance, direction)
                changed = {
                    t.run_id: {names.ON_FRONT: str(m).lower()}
                    for (t, tags), m in zip(joint, mask, strict=True)
                    if tags.get(names.ON_FRONT) != str(m).lower()
                }
                self.experiment.set_tags(changed)
                area = pareto.front_hypervolume(quality, exceedance, direction, self.config.reference_quality)
                self.experiment.log_metrics(self.parent_id, {names.JOINT_HYPERVOLUME: area}, step=len(joint))
        trials = [t for t, tags in everything if tags.get(names.PARENT) == self.parent_id]
        if not trials:
            return []
        quality = np.array([t.quality for t in trials])
        exceedance = np.array([t.exceedance_rate for t in trials])
        mask = pareto.front_mask(quality, exceedance, direction)
        rows = pareto.table(trials, mask, names.SEARCHED, direction)
        self.experiment.log_table(self.parent_id, rows, names.FRONT_TABLE)
        if plot:
            forms = [t.params.get(names.FORM, "") for t in trials]
            data = self.config.data
            figure = plots.pareto_front(
                quality,
                exceedance,
                forms,
                mask,
                data.quality,
                title=f"{self.experiment.name}: {len(trials)} trials, limit {data.limit:g}",
                labels=[front.trial_label(self._job, t.trial_id) for t in trials],
            )
            self.experiment.log_figure(self.parent_id, figure, names.FRONT_FIGURE)
        return rows

    def _is_comparable(self, trial: pareto.FinishedTrial) -> bool:
        """Whether a trial of the experiment was measured like this search's: same data set, quality
        metric and limit (a sweep over limits or data sets puts incomparable trials in one experiment)."""
        params = trial.params
        try:
            same_limit = float(params.get(names.LIMIT, "nan")) == self._comparable[names.LIMIT]
        except ValueError:
            return False
        return same_limit and all(params.get(k) == self._comparable[k] for k in (names.DATA, names.QUALITY))

    def _end_search(self, status: str, read: bool = False) -> SearchSummary:
        """End the search: its final front (with the figure) when it finished, then its status,
        which a trial cut short (Ctrl-C) shares. A worker ends only its own part: the curves
        of its trials on the front so far. `read`: trials were recorded by other processes."""
        for worker, trial_ids in self._lost.items():  # in case one recorded an end after it was given up on
            self.experiment.kill_worker_runs(self.parent_id, worker, trial_ids)
        if read:
            self._read_scores()
        rows = self.publish_front(plot=not self._worker) if status == FINISHED else []
        joint = front.publish_locked(self.experiment) if rows and not self._worker else []
        for row in rows:  # the trials a user opens: those on the search's front
            curves = self._finished_curves.get(row["run_id"]) if row["pareto"] else None
            if curves:
                self.experiment.log_figure(row["run_id"], plots.learning_curves(curves, CURVES), names.CURVES)
        finished = len(self._scores)
        if status == FINISHED and finished == 0:
            status = "FAILED"  # a search in which no trial finished has no front to show
        self._end(status)
        return SearchSummary(rows, finished, self.experiment.ui_command(), self._started, joint)

    def abandon(self) -> None:
        """The training process is gone without ending the search: close what is open as KILLED."""
        if not self._ended:
            self._end(KILLED)

    def _end(self, status: str) -> None:
        for run_id in self._runs.values():
            self.experiment.end_run(run_id, status)
        self._runs.clear()
        self._ended = True
        if self._worker:
            return  # the search's chief ends the parent run
        # A rerun that started no trial keeps the search's earlier end: its duration stays the time it ran.
        self.experiment.end_run(self.parent_id, status, self._ended_at if self._started == 0 else None)

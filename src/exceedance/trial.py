"""The trial loop: a keras-tuner tuner that trains each trial and records it in MLflow.

Subclasses `BaseTuner` rather than `Tuner`: `Tuner.run_trial` wires TensorBoard callbacks and
imports `tensorboard`, which the CPU build of TensorFlow does not bring and we do not need.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import keras
import keras_tuner as kt
import numpy as np

from exceedance import pareto, plots
from exceedance.config import Config, ConfigError, SearchConfig
from exceedance.data import Dataset
from exceedance.metrics import evaluate_eagerly, training_metrics
from exceedance.search import ExceedanceHyperModel
from exceedance.sweep import SearchStopped
from exceedance.tracking import Tracker

FAILURE_REASON = "exceedance.failure_reason"
# The parent's front (table and tags) is refreshed every this many finished trials, so a long
# search shows it as it goes, and once more when the search ends (with its figure).
FRONT_EVERY = 10
# A trial's metrics go to MLflow in one batch when it ends, or sooner once this many seconds
# have passed since its last batch: one transaction per short trial, live curves for long ones.
SEND_EVERY_S = 5.0
# keras-tuner prints the traceback of every failed trial by default; we record the reason as a
# run tag and in the progress line instead.
kt.src.config.DEBUG = False


def _last_line(message: str | None) -> str:
    # keras-tuner keeps the whole traceback; its last line is "Type: message".
    last = (message or "unknown error").strip().splitlines()[-1]
    return last.split("FailedTrialError: ", 1)[-1][:500]


def use_threads(search: SearchConfig) -> None:
    """Size TensorFlow's thread pools from the config; must run before TensorFlow runs an op."""
    import tensorflow as tf

    try:
        if search.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(search.intra_op_threads)
        if search.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(search.inter_op_threads)
    except RuntimeError:
        raise ConfigError(
            "search.intra_op_threads / search.inter_op_threads: TensorFlow already runs in this process "
            "with other thread settings; set them before the first search of the process"
        ) from None


def divergence(final: dict[str, float]) -> str | None:
    """Why training must count as failed (a non-finite final metric), or None if it did not."""
    if all(math.isfinite(v) for v in final.values()):
        return None
    return f"training diverged: loss={final.get('loss')}"


@dataclass
class Unsent:
    """What a trial has recorded but not yet sent to MLflow."""

    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    params: dict[str, object] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    since: float = field(default_factory=time.perf_counter)


class EpochLogger(keras.callbacks.Callback):
    """Hands every epoch's metrics to `log(metrics, step)`."""

    def __init__(self, log: Callable[[dict[str, float], int], None]):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        self.log(dict(logs or {}), epoch + 1)


class FitTimer(keras.callbacks.Callback):
    """Wall time of `fit` (graph tracing and XLA compilation included), to tell the framework's
    own cost per trial apart from training."""

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.started


class TrackedTuner(kt.engine.base_tuner.BaseTuner):
    """Runs trials on a fixed `Dataset` and mirrors each one as a nested MLflow run.

    Args:
        oracle: the keras-tuner oracle.
        hypermodel: the search space.
        config: the search's configuration.
        tracker: the MLflow side.
        parent_id: the search's parent run.
        directory, project_name, overwrite: keras-tuner's project location and reuse policy.
        report: called with one progress line per finished trial.
    """

    def __init__(
        self,
        oracle: kt.Oracle,
        hypermodel: ExceedanceHyperModel,
        config: Config,
        tracker: Tracker,
        parent_id: str,
        directory: str,
        project_name: str,
        overwrite: bool,
        report: Callable[[str], None] = print,
    ):
        super().__init__(oracle, hypermodel, directory=directory, project_name=project_name, overwrite=overwrite)
        self.config, self.tracker, self.parent_id, self.report = config, tracker, parent_id, report
        self.oracle.verbose = 0  # our own progress line replaces keras-tuner's tables
        self._runs: dict[str, Future] = {}  # trial id -> its MLflow run id, once created
        self._plot_inputs: dict[str, tuple] = {}
        self._unsent: dict[str, Unsent] = {}
        self._started: dict[str, float] = {}
        self._on_front: dict[str, bool] = {}
        self._failures_in_a_row = 0
        self._finished = 0
        self._fit_timers: dict[str, FitTimer] = {}
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exceedance-tracking")
        self._pending: list[Future] = []
        # Per finished or failed trial: wall time from its start to the end of its bookkeeping,
        # and the part of it spent in `fit`. Read by benchmarks/trial_overhead.py.
        self.timings: list[dict[str, float]] = []
        self.background_s = 0.0  # total time of the tracking work done off the training thread

    def _populate_initial_space(self):
        # keras-tuner's default builds a whole model per conditional branch just to discover the
        # space (keras-tuner marks this hook for overriding). Our space needs no model: declaring
        # it directly is cheaper, and a model builder that raises fails its own trial, not the search.
        hp = self.oracle.get_space()
        for form in self.hypermodel.config.penalty.forms:
            hp.values["penalty"] = form
            hp.ensure_active_values()
            self.hypermodel.penalty_params(hp)
        self.oracle.update_space(hp)

    def on_trial_begin(self, trial):
        self._started[trial.trial_id] = time.perf_counter()
        params = self.hypermodel.penalty_params(trial.hyperparameters.copy())
        data = self.config.data
        params.update(
            limit=data.limit,
            quality=data.quality,
            base_loss=self.config.penalty.base_loss,
            epochs=self._epochs(trial),
            batch_size=self.config.search.batch_size,
        )
        self._runs[trial.trial_id] = self._later(self.tracker.start_trial, self.parent_id, trial.trial_id)
        self._unsent[trial.trial_id] = Unsent(params=params)

    def _record(
        self, trial_id: str, metrics: dict[str, float], step: int, tags: dict[str, str] | None = None, last=False
    ) -> None:
        """Add to what the trial has to send; send it all in one batch when `last`, or when the
        previous batch is over `SEND_EVERY_S` old (so a long trial's curves stay live)."""
        unsent = self._unsent[trial_id]
        unsent.metrics += [(k, v, step) for k, v in metrics.items()]
        unsent.tags.update(tags or {})
        if last or time.perf_counter() - unsent.since >= SEND_EVERY_S:
            self._log_to_trial(trial_id, self.tracker.log_batch, unsent.metrics, unsent.params, unsent.tags)
            self._unsent[trial_id] = Unsent()

    def _log_to_trial(self, trial_id: str, method: Callable, *args) -> Future:
        """Queue `method(run_id, *args)` for the trial's run. The run is created by the first
        task queued for the trial, so by the time this one runs its id is known."""
        run = self._runs[trial_id]
        return self._later(lambda: method(run.result(), *args))

    def _epochs(self, trial) -> int:
        # Hyperband sets a per-bracket epoch budget; other oracles train for search.epochs.
        return int(trial.hyperparameters.values.get("tuner/epochs", self.config.search.epochs))

    def run_trial(self, trial, dataset: Dataset) -> dict[str, float]:
        trial_id = trial.trial_id
        keras.utils.set_random_seed(self.config.search.seed + int(trial_id))
        model = self.hypermodel.build(trial.hyperparameters)
        timer = self._fit_timers[trial_id] = FitTimer()
        history = model.fit(
            dataset.x_train,
            dataset.y_train,
            validation_data=(dataset.x_val, dataset.y_val),
            epochs=self._epochs(trial),
            batch_size=self.config.search.batch_size,
            verbose=0,
            callbacks=[
                EpochLogger(lambda logs, step: self._record(trial_id, logs, step)),
                keras.callbacks.TerminateOnNaN(),
                timer,
            ],
        )
        final = {k: v[-1] for k, v in history.history.items()}
        problem = divergence(final)
        if problem:
            raise kt.errors.FailedTrialError(problem)
        self._test(trial, model, history.history, dataset)
        return {k: v for k, v in final.items() if k.startswith("val_")}

    def _test(self, trial, model: keras.Model, history: dict, dataset: Dataset) -> None:
        """Score the test rows and keep what the trial's plots need."""
        # Eager forward passes: predict/evaluate would trace and compile new graphs per model.
        test_predictions = model(dataset.x_test, training=False)
        data = self.config.data
        metrics = training_metrics(model.loss, data.limit, data.quality, data.tolerance)
        test = evaluate_eagerly(model.loss, metrics, dataset.y_test, test_predictions)
        steps = len(history["loss"])
        self._record(trial.trial_id, {f"test_{k}": v for k, v in test.items()}, steps)
        predictions = keras.ops.convert_to_numpy(model(dataset.x_val, training=False))
        threshold = float(trial.hyperparameters.values["threshold"])
        self._plot_inputs[trial.trial_id] = (predictions, threshold)

    def _log_plots(self, run_id: str, predictions: np.ndarray, threshold: float) -> None:
        # Loss curves need no picture: MLflow charts the per-epoch metrics of every run itself.
        self.tracker.log_figure(
            run_id, plots.prediction_histogram(predictions, self.config.data.limit, threshold), "predictions.png"
        )

    def _later(self, work: Callable, *args) -> Future:
        """Queue MLflow work (runs, metrics, plots, the front) for the one tracking thread, which
        does it in order while the training thread goes on."""

        def timed():
            started = time.perf_counter()
            try:
                return work(*args)
            finally:
                self.background_s += time.perf_counter() - started

        future = self._background.submit(timed)
        self._pending.append(future)
        return future

    def flush(self, raise_errors: bool = True) -> None:
        """Wait for the tracking work queued so far; re-raise the first error it met, unless the
        search is already failing for another reason."""
        self._collect(wait=True, raise_errors=raise_errors)

    def _collect(self, wait: bool, raise_errors: bool = True) -> None:
        """Forget finished tracking work (all of it, with `wait`) and re-raise its first error."""
        if wait:
            futures.wait(self._pending)
        done = [future for future in self._pending if future.done()]
        self._pending = [future for future in self._pending if not future.done()]
        errors = [future.exception() for future in done if future.exception() is not None]
        if errors and raise_errors:
            raise errors[0]

    def on_trial_end(self, trial):
        trial_id = trial.trial_id
        done = trial.status == kt.engine.trial.TrialStatus.COMPLETED
        reason = {} if done else {FAILURE_REASON: _last_line(trial.message)}
        self._record(trial_id, {}, 0, reason, last=True)
        # Wait until MLflow has the trial's end (and all sent before it) before keras-tuner
        # saves the trial as done: a search resumed after a crash relies on that order.
        self._log_to_trial(trial_id, self.tracker.end_run, "FINISHED" if done else "FAILED").result()
        del self._unsent[trial_id]
        super().on_trial_end(trial)
        plot_inputs = self._plot_inputs.pop(trial_id, None)
        if plot_inputs is not None:
            self._log_to_trial(trial_id, self._log_plots, *plot_inputs)
        self._runs.pop(trial_id)
        if done:
            self._finished += 1
            if self._finished % FRONT_EVERY == 0:
                self._later(self.publish_front, False)
        self._collect(wait=False)  # fail at the first tracking error, not at the search's end
        seconds = time.perf_counter() - self._started.pop(trial_id)
        timer = self._fit_timers.pop(trial_id, None)
        self.timings.append({"trial_s": seconds, "fit_s": getattr(timer, "seconds", 0.0)})
        self.report(self._progress_line(trial, done, reason, seconds))
        self._failures_in_a_row = 0 if done else self._failures_in_a_row + 1
        limit = self.config.search.max_consecutive_failures
        if self._failures_in_a_row >= limit:
            raise SearchStopped(
                f"search stopped: {limit} trials in a row failed (search.max_consecutive_failures={limit}); "
                f"last reason: {reason[FAILURE_REASON]}. Narrow penalty.lam or search.learning_rate."
            )

    def _progress_line(self, trial, done: bool, reason: dict[str, str], seconds: float) -> str:
        values = trial.hyperparameters.values
        text = (
            f"trial {trial.trial_id}: {values['penalty']:<13} threshold={values['threshold']:.3g} "
            f"lam={values['lam']:.3g}"
        )
        if values["penalty"] == "sigmoid_count":
            text += f" temperature={values['temperature']:.3g}"
        if not done:
            return f"{text}  FAILED ({reason[FAILURE_REASON]})  {seconds:.1f}s"
        quality = self.config.data.quality
        metrics = trial.metrics
        return (
            f"{text}  val {quality}={metrics.get_last_value('val_' + quality):.3f} "
            f"exceedance_rate={metrics.get_last_value('val_exceedance_rate'):.3f}  {seconds:.1f}s"
        )

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
            figure = plots.pareto_front(
                quality, exceedance, [r.params["penalty"] for r in records], mask, self.config.data.quality
            )
            self.tracker.log_figure(self.parent_id, figure, "pareto.png")
        changed = {
            r.run_id: {"pareto": str(m).lower()}
            for r, m in zip(records, mask, strict=True)
            if self._on_front.get(r.run_id) != m
        }
        self.tracker.set_tags(changed)
        self._on_front.update({r.run_id: bool(m) for r, m in zip(records, mask, strict=True)})
        return rows

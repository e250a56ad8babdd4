"""The trial loop: a keras-tuner tuner that trains each trial and records it in MLflow.

Subclasses `BaseTuner` rather than `Tuner`: `Tuner.run_trial` wires TensorBoard callbacks and
imports `tensorboard`, which the CPU build of TensorFlow does not bring and we do not need.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field

import keras
import keras_tuner as kt

from exceedance.config import Config, ConfigError, SearchConfig
from exceedance.data import Dataset
from exceedance.errors import SearchStopped
from exceedance.metrics import evaluate_eagerly, training_metrics
from exceedance.recorder import Recorder
from exceedance.search import ExceedanceHyperModel

FAILURE_REASON = "exceedance.failure_reason"
# A trial's curves go to MLflow in one batch when its fit ends, or sooner once this many seconds
# have passed since its last batch: few transactions per short trial, live curves for long ones.
SEND_EVERY_S = 5.0
# keras-tuner prints the traceback of every failed trial by default; we record the reason as a
# run tag and in the progress line instead.
kt.src.config.DEBUG = False


def _save_json_whole(path: str, obj) -> str:
    """keras-tuner's `utils.save_json`, but all or nothing: the file is written beside its place
    and renamed over it. keras-tuner rewrites its state files in place, so a full disk or a kill
    mid-write left a truncated `oracle.json` or `trial.json` that no rerun could read."""
    text = json.dumps(obj)
    partial = f"{path}.partial"
    try:
        with open(partial, "w") as handle:
            handle.write(text)
    except OSError as err:  # raised by the closing flush, which names no file
        raise OSError(err.errno, err.strerror, partial) from None
    os.replace(partial, path)
    return text


kt.src.utils.save_json = _save_json_whole  # every state file goes through it (engine.stateful)


def _last_line(message: str | None) -> str:
    # keras-tuner keeps the whole traceback; its last line is "Type: message".
    last = (message or "unknown error").strip().splitlines()[-1]
    return last.split("FailedTrialError: ", 1)[-1][:500]


def failure_hint(reason: str | None) -> str:
    """What to change when trials keep failing for `reason`."""
    text = reason or ""
    if "diverged" in text:
        return "Narrow penalty.lam or lower search.learning_rate."
    if "memory" in text.lower() or "OOM" in text:
        return "Use a smaller model.hidden_units or search.batch_size."
    return "Fix the cause above (each failed trial's run has it in its exceedance.failure_reason tag)."


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
        recorder: the MLflow side, opened on the search's parent run.
        directory, project_name, overwrite: keras-tuner's project location and reuse policy.
        report: called with one progress line per finished trial.
    """

    def __init__(
        self,
        oracle: kt.Oracle,
        hypermodel: ExceedanceHyperModel,
        config: Config,
        recorder: Recorder,
        directory: str,
        project_name: str,
        overwrite: bool,
        report: Callable[[str], None] = print,
    ):
        super().__init__(oracle, hypermodel, directory=directory, project_name=project_name, overwrite=overwrite)
        self.config, self.recorder, self.report = config, recorder, report
        self.oracle.verbose = 0  # our own progress line replaces keras-tuner's tables
        self._plot_inputs: dict[str, tuple] = {}
        self._unsent: dict[str, Unsent] = {}
        self._started: dict[str, float] = {}
        self._failures_in_a_row = 0
        self.last_failure: str | None = None  # why the latest failed trial failed
        self._fit_timers: dict[str, FitTimer] = {}
        self._pending: list[Future] = []
        # Per finished or failed trial: wall time from its start to the end of its bookkeeping,
        # and the part of it spent in `fit`. Read by benchmarks/trial_overhead.py.
        self.timings: list[dict[str, float]] = []

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
        self._later("start_trial", trial.trial_id)
        self._unsent[trial.trial_id] = Unsent(params=params)

    def _record(self, trial_id: str, metrics: dict[str, float], step: int) -> None:
        """Add to what the trial has to send; send it if the previous batch is over
        `SEND_EVERY_S` old (so a long trial's curves stay live)."""
        unsent = self._unsent[trial_id]
        unsent.metrics += [(k, v, step) for k, v in metrics.items()]
        if time.perf_counter() - unsent.since >= SEND_EVERY_S:
            self._send(trial_id)

    def _send(self, trial_id: str) -> None:
        unsent = self._unsent[trial_id]
        if unsent.metrics or unsent.params:
            self._later("log", trial_id, unsent.metrics, unsent.params)
            self._unsent[trial_id] = Unsent()

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
        self._send(trial_id)  # the curves go to MLflow while the test rows are scored
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
        hypermodel = self.hypermodel
        metrics = training_metrics(
            model.loss, hypermodel.model_limit, data.quality, data.tolerance, hypermodel.target.scale
        )
        test = evaluate_eagerly(model.loss, metrics, dataset.y_test, test_predictions)
        steps = len(history["loss"])
        self._record(trial.trial_id, {f"test_{k}": v for k, v in test.items()}, steps)
        predictions = hypermodel.target.to_user(keras.ops.convert_to_numpy(model(dataset.x_val, training=False)))
        threshold = hypermodel.threshold(float(trial.hyperparameters.values["threshold_offset"]))
        self._plot_inputs[trial.trial_id] = (predictions, threshold)

    def _later(self, method: str, *args) -> Future:
        """Queue MLflow work (runs, metrics, plots, the front) for the recording process, which
        does it in order while training goes on."""
        future = self.recorder.submit(method, *args)
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
        unsent = self._unsent.pop(trial_id)
        status = "FINISHED" if done else "FAILED"
        # Wait until MLflow has the trial's end (and all sent before it) before keras-tuner
        # saves the trial as done: a search resumed after a crash relies on that order.
        self._later("end_trial", trial_id, status, unsent.metrics, unsent.params, reason).result()
        super().on_trial_end(trial)
        plot_inputs = self._plot_inputs.pop(trial_id, None)
        if done and plot_inputs is not None:
            self._later("log_histogram", trial_id, *plot_inputs)
        self._collect(wait=False)  # fail at the first tracking error, not at the search's end
        seconds = time.perf_counter() - self._started.pop(trial_id)
        timer = self._fit_timers.pop(trial_id, None)
        self.timings.append({"trial_s": seconds, "fit_s": getattr(timer, "seconds", 0.0)})
        self.report(self._progress_line(trial, done, reason, seconds))
        self._failures_in_a_row = 0 if done else self._failures_in_a_row + 1
        if not done:
            self.last_failure = reason[FAILURE_REASON]
        limit = self.config.search.max_consecutive_failures
        if self._failures_in_a_row >= limit:
            raise SearchStopped(
                f"search stopped: {limit} trials in a row failed (search.max_consecutive_failures={limit}); "
                f"last reason: {self.last_failure}. {failure_hint(self.last_failure)}"
            )

    def _progress_line(self, trial, done: bool, reason: dict[str, str], seconds: float) -> str:
        values = trial.hyperparameters.values
        text = (
            f"trial {trial.trial_id}: {values['penalty']:<13} "
            f"threshold={self.hypermodel.threshold(values['threshold_offset']):.3g} "
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

"""The trial loop: a keras-tuner tuner that trains each trial and tells the recording side about it.

Only keras-tuner's hooks and loop live here: `on_trial_begin`, `run_trial` (one model per
trial) or `_run_stack` (K trials per step, `trial_stack`), and `on_trial_end` emit the
`recording.events` of a trial; what they mean in MLflow is the recording side's business.
Subclasses `BaseTuner` rather than `Tuner`: `Tuner.run_trial` wires TensorBoard callbacks and
imports `tensorboard`, which the CPU build of TensorFlow does not bring and we do not need.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future

import keras
import keras_tuner as kt

from exceedance import fitting, names
from exceedance.config import Config
from exceedance.data import Dataset
from exceedance.errors import SearchStopped
from exceedance.metrics import evaluate_eagerly, training_metrics
from exceedance.recording.events import FAILED, FINISHED, EpochEnded, Event, TrialEnded, TrialPredictions, TrialStarted
from exceedance.search import ExceedanceHyperModel
from exceedance.target_rate import hold_out, training_rows


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
    return f"Fix the cause above (each failed trial's run has it in its {names.FAILURE_REASON} tag)."


class Progress:
    """The line printed per trial, and the stop after `limit` failed trials in a row."""

    def __init__(self, config: Config, report: Callable[[str], None]):
        self.quality, self.limit, self.report = config.data.quality, config.search.max_consecutive_failures, report
        self.failures_in_a_row = 0
        self.last_failure: str | None = None  # why the latest failed trial failed
        self._started: dict[str, float] = {}
        self._shared = 1  # trials trained in the same step as the ones ending now

    def started(self, trial_id: str) -> None:
        self._started[trial_id] = time.perf_counter()

    def shared(self, trials: int) -> None:
        """The trials ending next were trained together, `trials` of them in one step."""
        self._shared = trials

    def ended(self, trial_id: str, params: dict, scores: dict[str, float] | None, reason: str | None) -> None:
        """Report a trial (`scores` when it finished, `reason` when it failed); raise
        `SearchStopped` at the `limit`-th failure in a row."""
        seconds = (time.perf_counter() - self._started.pop(trial_id)) / self._shared
        took = f"{seconds:.1f}s" if self._shared == 1 else f"{seconds:.2f}s (1/{self._shared} of a step)"
        shown = (*names.SEARCHED[1:-1], names.TARGET_RATE)  # all but the form and the learning rate
        text = f"trial {trial_id}: {params[names.FORM]:<13} " + " ".join(
            f"{name}={params[name]:.3g}" for name in shown if name in params
        )
        if scores is None:
            self.report(f"{text}  FAILED ({reason})  {took}")
            self.failures_in_a_row += 1
            self.last_failure = reason
        else:
            self.report(
                f"{text}  val {self.quality}={scores[names.val_quality(self.quality)]:.3f} "
                f"exceedance_rate={scores[names.VAL_EXCEEDANCE_RATE]:.3f}  {took}"
            )
            self.failures_in_a_row = 0
        if self.failures_in_a_row >= self.limit:
            raise SearchStopped(
                f"search stopped: {self.limit} trials in a row failed (search.max_consecutive_failures={self.limit}); "
                f"last reason: {self.last_failure}. {failure_hint(self.last_failure)}"
            )


class ExceedanceTuner(kt.engine.base_tuner.BaseTuner):
    """Runs trials on a fixed `Dataset`; each trial's events go to `recorder`.

    Args:
        oracle: the keras-tuner oracle.
        hypermodel: the search space.
        config: the search's configuration.
        recorder: where events go (`recording.process.Recorder`, opened on the search, or `Discard`).
        directory, project_name, overwrite: keras-tuner's project location and reuse policy.
        report: called with one progress line per finished trial.
        callbacks: Keras callbacks added to every trial's `fit` (e.g. a benchmark's timer).
    """

    def __init__(
        self,
        oracle: kt.Oracle,
        hypermodel: ExceedanceHyperModel,
        config: Config,
        recorder,
        directory: str,
        project_name: str,
        overwrite: bool,
        report: Callable[[str], None] = print,
        callbacks: list[keras.callbacks.Callback] = (),
    ):
        # keras-tuner prints the traceback of every failed trial by default (the reason goes to
        # the run's tags and the progress line instead), and saves its state files in place.
        kt.src.config.DEBUG = False
        kt.src.utils.save_json = _save_json_whole  # every state file goes through it (engine.stateful)
        # keras-tuner 1.4.8 prints a conditional hyperparameter's first value each time it sends the
        # space over gRPC (a leftover `print` in `Parent.to_proto`, in the chief and its workers).
        kt.src.engine.conditions.print = lambda *args, **kwargs: None
        super().__init__(oracle, hypermodel, directory=directory, project_name=project_name, overwrite=overwrite)
        self.config, self.recorder, self.callbacks = config, recorder, list(callbacks)
        self.oracle.verbose = 0  # our own progress line replaces keras-tuner's tables
        self.progress = Progress(config, report)
        self.slots = 1  # trials per step, set when the search starts
        self.val_rows = 0
        self._stack = None
        # A finished trial's end, and its predictions to draw once that end is recorded.
        self._finished: dict[str, TrialEnded] = {}
        self._scores: dict[str, dict[str, float]] = {}  # a finished trial's final validation scores
        self._predictions: dict[str, TrialPredictions] = {}
        self._pending: list[Future] = []

    def search(self, dataset: Dataset) -> None:
        """Run the search: one trial per model (`search.trials_per_step=1`, keras-tuner's own
        loop), or up to K trials per step, trained side by side in one compiled `TrialStack`."""
        self.val_rows = len(dataset.x_val)  # recorded per trial: its rate's confidence bound needs it
        rows = max(len(dataset.x_val), len(dataset.x_test), self.config.search.batch_size)
        self.slots = self.hypermodel.slots(self.oracle.max_trials, rows)
        if self.slots == 1:
            super().search(dataset)
            return
        while trials := self._next_trials():
            for trial in trials:
                self.on_trial_begin(trial)
            self._run_stack(trials, dataset)
            self._end_trials(trials)

    def _next_trials(self) -> list:
        """Up to K trials from the oracle, as many as it can propose before results come back
        (Hyperband's next round and the frontier's targets wait for the trials in flight)."""
        trials = []
        while len(trials) < self.slots:
            # One tuner id per slot: keras-tuner's oracles track trials in flight per tuner id.
            trial = self.oracle.create_trial(f"{self.tuner_id}-{len(trials)}")
            if trial.status == kt.engine.trial.TrialStatus.STOPPED:
                break
            if trial.status == kt.engine.trial.TrialStatus.IDLE:
                if trials:
                    break
                time.sleep(0.05)  # the oracle waits on trials in flight (another worker's): ask again soon
                continue
            trials.append(trial)
        return trials

    def _run_stack(self, trials: list, dataset: Dataset) -> None:
        """Train `trials` together; each trial completes, or fails alone with its reason."""
        search, penalty = self.config.search, self.config.penalty
        self.progress.shared(len(trials))
        slots = [
            self.hypermodel.slot_trial(trial.hyperparameters, search.seed + int(trial.trial_id), self._epochs(trial))
            for trial in trials
        ]
        x, y, held_out = dataset.x_train, dataset.y_train, None
        if any(slot.target_rate is not None for slot in slots):  # every trial's, or none's
            x, y, held_out = hold_out(x, y, penalty.dual_rows)
        slots += [None] * (self.slots - len(slots))  # empty slots stay idle
        try:
            if self._stack is None:  # built once per search; a model builder that raises fails this step
                keras.utils.set_random_seed(search.seed)  # dropout's draws, the same for the same command
                self._stack = self.hypermodel.stack(self.slots)
            stack = self._stack
            stack.load(slots)
            results = stack.fit(
                x,
                y,
                (dataset.x_val, dataset.y_val),
                batch_size=search.batch_size,
                shuffle_seed=search.seed,
                dual_lr=penalty.dual_lr,
                held_out=held_out,
                dual_seed=self.config.data.seed,
                on_epoch=lambda k, metrics, step: self._send(EpochEnded(trials[k].trial_id, step, metrics)),
            )
            _, test = stack.evaluate(dataset.x_test, dataset.y_test)
            val_predictions, _ = stack.evaluate(dataset.x_val, dataset.y_val)
        except Exception as err:  # the whole step failed (e.g. out of memory): each trial fails with it
            if isinstance(err, kt.errors.FatalError):
                raise
            for trial in trials:
                trial.status, trial.message = kt.engine.trial.TrialStatus.FAILED, f"{type(err).__name__}: {err}"
            return
        for k, trial in enumerate(trials):
            if results[k].diverged:
                trial.status, trial.message = kt.engine.trial.TrialStatus.FAILED, results[k].diverged
                continue
            final = {name: value for name, value in results[k].final.items() if name.startswith("val_")}
            self.oracle.update_trial(trial.trial_id, final)
            trial.status = kt.engine.trial.TrialStatus.COMPLETED
            self._finish(trial, test[k], val_predictions[k], results[k].epochs, final)

    def _populate_initial_space(self):
        # keras-tuner's default builds a whole model per conditional branch just to discover the
        # space (keras-tuner marks this hook for overriding). Our space needs no model: declaring
        # it directly is cheaper, and a model builder that raises fails its own trial, not the search.
        self.oracle.update_space(self.hypermodel.declare(self.oracle.get_space()))

    def _params(self, trial) -> dict:
        return self.hypermodel.trial_params(trial.hyperparameters.copy())

    def _epochs(self, trial) -> int:
        # Hyperband sets a per-bracket epoch budget; other oracles train for search.epochs.
        return int(trial.hyperparameters.values.get("tuner/epochs", self.config.search.epochs))

    def _send(self, event: Event) -> Future:
        """Queue an event for the recording side, which records it while training goes on."""
        future = self.recorder.send(event)
        self._pending.append(future)
        return future

    def on_trial_begin(self, trial):
        self.progress.started(trial.trial_id)
        data, search = self.config.data, self.config.search
        measured = {
            names.DATA: data.name,
            names.LIMIT: data.limit,
            names.QUALITY: data.quality,
            names.VAL_ROWS: self.val_rows,
            "base_loss": self.config.penalty.base_loss,
            "epochs": self._epochs(trial),
            "batch_size": search.batch_size,
        }
        self._send(TrialStarted(trial.trial_id, {**self._params(trial), **measured}))

    def run_trial(self, trial, dataset: Dataset) -> dict[str, float]:
        trial_id = trial.trial_id
        keras.utils.set_random_seed(self.config.search.seed + int(trial_id))
        model = self.hypermodel.build(trial.hyperparameters)
        x, y, control = training_rows(model, dataset.x_train, dataset.y_train, self.config.penalty.dual_rows)
        fitted = fitting.fit(
            model,
            x,
            y,
            validation=(dataset.x_val, dataset.y_val),
            epochs=self._epochs(trial),
            batch_size=self.config.search.batch_size,
            on_epoch=lambda metrics, step: self._send(EpochEnded(trial_id, step, metrics)),
            callbacks=[*control, *self.callbacks],
        )
        if fitted.diverged:
            raise kt.errors.FailedTrialError(fitted.diverged)
        final = {k: v for k, v in fitted.final.items() if k.startswith("val_")}
        self._test(trial, model, dataset, fitted.epochs, final)
        return final

    def _test(self, trial, model: keras.Model, dataset: Dataset, step: int, scores: dict[str, float]) -> None:
        """Score the test rows; keep the validation predictions for the trial's picture."""
        # Eager forward passes: predict/evaluate would trace and compile new graphs per model.
        data, hypermodel = self.config.data, self.hypermodel
        metrics = training_metrics(
            model.loss, hypermodel.model_limit, data.quality, data.tolerance, hypermodel.target.scale
        )
        test = evaluate_eagerly(model.loss, metrics, dataset.y_test, model(dataset.x_test, training=False))
        self._finish(trial, test, keras.ops.convert_to_numpy(model(dataset.x_val, training=False)), step, scores)

    def _finish(self, trial, test: dict[str, float], val_predictions, step: int, scores: dict[str, float]) -> None:
        """Keep a finished trial's end (its test scores), its validation scores for its line, and its
        validation predictions, to record once keras-tuner has its result. (A worker's trial objects
        never get the scores: the oracle keeps them in the chief.)"""
        hypermodel = self.hypermodel
        self._scores[trial.trial_id] = scores
        self._finished[trial.trial_id] = TrialEnded(
            trial.trial_id, FINISHED, step, {f"{names.TEST}{k}": float(v) for k, v in test.items()}
        )
        predictions = hypermodel.target.to_user(val_predictions)
        threshold = hypermodel.threshold(float(trial.hyperparameters.values[names.THRESHOLD_OFFSET]))
        self._predictions[trial.trial_id] = TrialPredictions(trial.trial_id, predictions, threshold)

    def on_trial_end(self, trial):
        self._end_trials([trial])

    def _end_trials(self, trials: list) -> None:
        """Record the trials' ends, then let keras-tuner save each as done and draw it."""
        ends = [self._ended(trial) for trial in trials]
        # Wait until MLflow has the trials' ends (and all sent before them) before keras-tuner
        # saves them as done: a search resumed after a crash relies on that order.
        for future in [self._send(ended) for ended in ends]:
            future.result()
        for trial, ended in zip(trials, ends, strict=True):
            super().on_trial_end(trial)
            predictions = self._predictions.pop(trial.trial_id, None)
            if predictions is not None:  # drawn while the next trials train
                self._send(predictions)
            self._collect(wait=False)  # fail at the first tracking error, not at the search's end
            done = ended.status == FINISHED
            scores = self._scores.pop(trial.trial_id, None) if done else None
            self.progress.ended(trial.trial_id, self._params(trial), scores, ended.reason)

    def _ended(self, trial) -> TrialEnded:
        if trial.status == kt.engine.trial.TrialStatus.COMPLETED:
            return self._finished.pop(trial.trial_id)
        self._predictions.pop(trial.trial_id, None)
        self._scores.pop(trial.trial_id, None)
        return TrialEnded(trial.trial_id, FAILED, reason=_last_line(trial.message))

    def flush(self, raise_errors: bool = True) -> None:
        """Wait for the events sent so far to be recorded; re-raise the first error met, unless
        the search is already failing for another reason."""
        self._collect(wait=True, raise_errors=raise_errors)

    def _collect(self, wait: bool, raise_errors: bool = True) -> None:
        """Forget recorded events (all of them, with `wait`) and re-raise the first error."""
        if wait:
            futures.wait(self._pending)
        done = [future for future in self._pending if future.done()]
        self._pending = [future for future in self._pending if not future.done()]
        errors = [future.exception() for future in done if future.exception() is not None]
        if errors and raise_errors:
            raise errors[0]

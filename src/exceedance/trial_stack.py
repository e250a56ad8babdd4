"""K trials trained side by side in one compiled step.

Every trial hyperparameter (penalty form, training threshold, lambda, the form's own
hyperparameters such as temperature, learning rate, target rate) is a slot of a variable the
compiled functions read, so a search traces its train, validation and test functions once and
then only assigns values: a new trial in a slot costs new weights, not a new graph.

- The loss is the sum of the K trials' losses; each trial's weights get its own gradient.
- Adam runs per slot with the slot's learning rate (written here rather than Keras's `Adam`,
  whose one learning rate and step counter serve all its variables): the same update as
  `keras.optimizers.Adam`, tested against it.
- The metrics of all K trials (loss parts, exceedance count and rate on the limit, quality)
  come from one fused pass: running sums per slot, read once per epoch.
- A slot whose loss turns NaN or inf stops updating and is reported as diverged; the others
  train on. A slot whose trial has fewer epochs (Hyperband's brackets) stops at its last one.

Imports TensorFlow and Keras: only the commands that train load this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from exceedance.config import PENALTY_FORMS
from exceedance.losses import FORMS
from exceedance.metrics import QUALITY_VALUES

# Running sums per slot, one row each, in this order.
SUMS = ("loss", "base_loss", "penalty", "exceedance_count", "quality", "rows")
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam's defaults
DUAL_ROWS_PER_STEP = 128  # held-out rows per target-rate estimate, as `target_rate.DualAscent`


@dataclass
class SlotTrial:
    """One trial's hyperparameters, in the units the model trains in.

    `extras` holds the form's own hyperparameters; `target_rate` is None unless lambda is
    learned (it then starts at `lam`, 0)."""

    form: str
    threshold: float
    lam: float
    learning_rate: float
    epochs: int
    seed: int
    extras: dict[str, float] = field(default_factory=dict)
    target_rate: float | None = None


@dataclass
class SlotResult:
    """What one slot's trial left: its last epoch's metrics, epochs run, why it failed if it did."""

    final: dict[str, float]
    epochs: int
    diverged: str | None


def _slot_shape(values, rank: int):
    """A per-slot vector shaped to broadcast over a stacked tensor of `rank` dimensions."""
    return tf.reshape(values, (-1,) + (1,) * (rank - 1))


class TrialStack:
    """K slots of one network, trained together on the same batches.

    Args:
        network: a `stacking.StackedMLP` or `stacking.Copies` of K slots.
        base_loss: the Keras loss the penalty is added to.
        limit: the evaluation limit in the model's units.
        quality: the quality metric's name (`metrics.QUALITY_VALUES`).
        tolerance: the quality's tolerance (`within_tolerance`).
        scale: turns errors in the model's units into the user's (`mae`, `mse`).
        jit_compile: compile the step with XLA.
    """

    def __init__(
        self, network, base_loss: str, limit: float, quality: str, tolerance: float, scale: float, jit_compile: bool
    ):
        self.network, self.slots = network, network.slots
        self.trials: list[SlotTrial | None] = [None] * network.slots  # what `load` put in the slots
        self.limit, self.tolerance, self.scale, self.quality = float(limit), float(tolerance), float(scale), quality
        self._base = keras.losses.get(base_loss)
        k = self.slots
        self.forms = list(FORMS)
        self.form = tf.Variable(tf.zeros(k, tf.int32), name="form")
        self.threshold, self.lam, self.learning_rate, self.target = (
            tf.Variable(tf.zeros(k), name=name) for name in ("threshold", "lam", "learning_rate", "target")
        )
        self.extras = {name: tf.Variable(tf.ones(k), name=name) for forms in PENALTY_FORMS.values() for name in forms}
        self.dual_step = tf.Variable(tf.zeros(k), name="dual_step")  # 0 for a slot whose lambda is fixed
        self.batch_rate = tf.Variable(True, name="batch_rate")  # dual updates on the training batch
        self.training = tf.Variable(tf.zeros(k, tf.bool), name="training")  # trains this epoch
        self.alive = tf.Variable(tf.ones(k, tf.bool), name="alive")  # has not diverged
        self.iterations = tf.Variable(0.0, name="iterations")
        self.moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in network.variables]
        self.sums = tf.Variable(tf.zeros((len(SUMS), k), tf.float64), name="sums")
        # No autograph: the functions have no tensor-dependent Python control flow, and converting
        # them cost a second per search.
        compile_ = tf.function(jit_compile=jit_compile, reduce_retracing=True, autograph=False)
        self._train_step = compile_(self._step)
        self._dual_step = compile_(self._held_out_dual)
        self._evaluate = compile_(self._measure)

    # -- the compiled parts ------------------------------------------------------------------
    def _parts(self, x, y, training: bool):
        """Predictions `(K, B, O)`, per-row loss parts `(K, B)`, and per-slot sums `(len(SUMS), K)`."""
        pred = self.network(x, training=training)
        y = tf.broadcast_to(tf.cast(y, pred.dtype), tf.shape(pred))
        base = self._base(y, pred)
        excess = pred - _slot_shape(self.threshold, 3)
        values = tf.zeros_like(pred)
        for index, form in enumerate(self.forms):
            extras = {name: _slot_shape(self.extras[name], 3) for name in PENALTY_FORMS[form]}
            values = tf.where(_slot_shape(self.form, 3) == index, FORMS[form](excess, **extras), values)
        penalty = tf.reduce_mean(values, axis=-1)
        rows = base + _slot_shape(self.lam, 2) * penalty
        above = tf.cast((pred > self.limit) | ~tf.math.is_finite(pred), tf.float64)  # NaN, inf: above
        quality = tf.cast(QUALITY_VALUES[self.quality](y, pred, self.tolerance, self.scale), tf.float64)
        regularization = self.network.regularization()
        loss = tf.reduce_mean(rows, axis=1) + regularization
        n = tf.cast(tf.shape(rows)[1], tf.float64)
        sums = tf.stack(
            [
                tf.cast(loss, tf.float64) * n,
                tf.reduce_sum(tf.cast(base, tf.float64), axis=1),
                tf.reduce_sum(tf.cast(penalty, tf.float64), axis=1),
                tf.reduce_sum(above, axis=[1, 2]),
                tf.reduce_sum(quality, axis=[1, 2]),
                tf.fill([self.slots], n),
            ]
        )
        return pred, loss, sums

    def _step(self, x, y):
        variables = self.network.variables
        with tf.GradientTape() as tape:
            tape.watch(variables)
            pred, loss, sums = self._parts(x, y, training=True)
            alive = self.alive & (tf.math.is_finite(loss) | ~self.training)
            updating = self.training & alive
            total = tf.reduce_sum(tf.where(updating, loss, 0.0))
        self._adam(tape.gradient(total, variables), updating)
        self.alive.assign(alive)
        self.sums.assign_add(sums)
        # target-rate slots: lambda follows the batch's exceedance rate (target_rate.DualAscent)
        rate = tf.cast(sums[3] / (sums[5] * tf.cast(tf.shape(pred)[2], tf.float64)), tf.float32)
        self._dual_update(rate, updating & self.batch_rate)

    def _held_out_dual(self, x):
        """The dual update from held-out rows, after the step (`penalty.dual_rows`)."""
        pred = self.network(x, training=False)
        rate = tf.reduce_mean(tf.cast((pred > self.limit) | ~tf.math.is_finite(pred), tf.float32), axis=[1, 2])
        self._dual_update(rate, self.training & self.alive)

    def _dual_update(self, rate, updating):
        lam = tf.maximum(0.0, self.lam + self.dual_step * (rate - self.target))
        self.lam.assign(tf.where(updating & (self.dual_step > 0), lam, self.lam))

    def _adam(self, gradients, updating) -> None:
        step = self.iterations + 1.0
        correction = tf.sqrt(1.0 - BETA_2**step) / (1.0 - BETA_1**step)
        for variable, gradient, (m, v) in zip(self.network.variables, gradients, self.moments, strict=True):
            slot = self.network.slot_of(variable)
            if slot is None:
                ok, rate = (
                    _slot_shape(updating, variable.shape.rank),
                    _slot_shape(self.learning_rate, variable.shape.rank),
                )
            else:
                ok, rate = updating[slot], self.learning_rate[slot]
            gradient = tf.where(ok, gradient, 0.0)
            m_new = m + (gradient - m) * (1.0 - BETA_1)
            v_new = v + (tf.square(gradient) - v) * (1.0 - BETA_2)
            m.assign(tf.where(ok, m_new, m))
            v.assign(tf.where(ok, v_new, v))
            variable.assign(
                tf.where(ok, variable - (m_new * (rate * correction)) / (tf.sqrt(v_new) + EPSILON), variable)
            )
        self.iterations.assign(step)

    def _measure(self, x, y):
        pred, _, sums = self._parts(x, y, training=False)
        return pred, sums

    # -- the Python side ---------------------------------------------------------------------
    def load(self, trials: list[SlotTrial | None]) -> None:
        """Put trials in the slots (None: an empty slot) with new weights and optimizer state."""
        self.trials = list(trials)

        def column(value_of, default=0.0):
            return [default if t is None else value_of(t) for t in trials]

        self.form.assign(column(lambda t: self.forms.index(t.form), 0))
        self.threshold.assign(column(lambda t: t.threshold))
        self.lam.assign(column(lambda t: t.lam))
        self.learning_rate.assign(column(lambda t: t.learning_rate))
        self.target.assign(column(lambda t: t.target_rate or 0.0))
        for name, variable in self.extras.items():  # 1.0 where unused: finite in every form
            variable.assign([1.0 if t is None else t.extras.get(name, 1.0) for t in trials])
        self.alive.assign(tf.ones(self.slots, tf.bool))
        self.iterations.assign(0.0)
        for m, v in self.moments:
            m.assign(tf.zeros_like(m))
            v.assign(tf.zeros_like(v))
        for slot, trial in enumerate(trials):
            if trial is not None:
                self.network.initialize(slot, trial.seed)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list[dict[str, float]]]:
        """Predictions `(K, rows, outputs)` and each slot's loss parts, exceedance and quality."""
        pred, sums = self._evaluate(tf.constant(x, tf.float32), tf.constant(y, tf.float32))
        return pred.numpy(), self._summaries(sums.numpy(), int(pred.shape[2]))

    def _summaries(self, sums: np.ndarray, outputs: int) -> list[dict[str, float]]:
        loss, base, penalty, count, quality, rows = sums
        elements = rows * outputs
        with np.errstate(invalid="ignore", divide="ignore"):
            return [
                {
                    "loss": loss[k] / rows[k],
                    "base_loss": base[k] / rows[k],
                    "penalty": penalty[k] / rows[k],
                    "exceedance_count": count[k],
                    "exceedance_rate": count[k] / elements[k],
                    self.quality: quality[k] / elements[k],
                }
                for k in range(self.slots)
            ]

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        validation: tuple[np.ndarray, np.ndarray],
        *,
        batch_size: int,
        shuffle_seed: int,
        dual_lr: float,
        held_out: np.ndarray | None,
        on_epoch: Callable[[int, dict[str, float], int], None],
        dual_seed: int = 0,
        shuffle: bool = True,
    ) -> list[SlotResult | None]:
        """Train the `load`ed trials on the same batches, handing each trial's epoch
        metrics to `on_epoch(slot, metrics, step)`.

        Batches are shuffled per epoch from `shuffle_seed` and the epoch alone, so a trial sees
        the same batches whichever trials share its stack. A target-rate trial's lambda moves
        after every batch by `dual_lr` (shrinking to a quarter over its epochs), on the batch's
        rate or, with `held_out` rows, on a draw of them (from `dual_seed`).
        """
        x, y, trials = np.asarray(x, np.float32), np.asarray(y, np.float32), self.trials
        epochs = [0 if t is None else t.epochs for t in trials]
        ended: dict[int, SlotResult] = {}
        last: dict[int, dict[str, float]] = {}
        draws = np.random.default_rng(dual_seed)  # held-out rows, as DualAscent draws them
        self.batch_rate.assign(held_out is None)
        x_val, y_val = validation
        for epoch in range(max(epochs)):
            running = [k for k in range(self.slots) if epoch < epochs[k] and k not in ended]
            if not running:
                break
            self.training.assign([k in running for k in range(self.slots)])
            self.dual_step.assign(
                [
                    dual_lr / (1.0 + 3.0 * epoch / epochs[k])
                    if k in running and trials[k].target_rate is not None
                    else 0.0
                    for k in range(self.slots)
                ]
            )
            self.sums.assign(tf.zeros_like(self.sums))
            order = np.random.default_rng([shuffle_seed, epoch]).permutation(len(x)) if shuffle else np.arange(len(x))
            for start in range(0, len(x), batch_size):
                rows = order[start : start + batch_size]
                self._train_step(tf.constant(x[rows]), tf.constant(y[rows]))
                if held_out is not None:
                    drawn = draws.integers(0, len(held_out), min(DUAL_ROWS_PER_STEP, len(held_out)))
                    self._dual_step(tf.constant(held_out[drawn], tf.float32))
            train = self._summaries(self.sums.numpy(), y.shape[1])
            _, val = self.evaluate(x_val, y_val)
            alive, lam = self.alive.numpy(), self.lam.numpy()
            for k in running:
                metrics = {**train[k], **{f"val_{name}": value for name, value in val[k].items()}}
                if trials[k].target_rate is not None:
                    metrics["lam"] = float(lam[k])
                    metrics["exceedance_rate_gap"] = metrics["val_exceedance_rate"] - metrics["exceedance_rate"]
                metrics = {name: float(value) for name, value in metrics.items()}
                on_epoch(k, metrics, epoch + 1)
                last[k] = metrics
                if not alive[k] or not all(np.isfinite(v) for v in metrics.values()):
                    ended[k] = SlotResult(metrics, epoch + 1, f"training diverged: loss={metrics['loss']}")
        return [
            None if t is None else ended.get(k) or SlotResult(last.get(k, {}), epochs[k], None)
            for k, t in enumerate(trials)
        ]

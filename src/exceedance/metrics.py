"""Streaming metrics: exceedance against the evaluation limit, loss parts, and quality.

The exceedance metrics keep running totals across every batch of an epoch, so the epoch value
is the count (or share) over the whole epoch, not a sum or mean of per-batch values.
"""

from __future__ import annotations

import keras
from keras import ops

from exceedance.losses import PACKAGE, PenalizedLoss, penalty


def _within(y_true, y_pred, tolerance: float, scale: float):
    return ops.cast(ops.abs(ops.convert_to_tensor(y_true) - y_pred) <= tolerance, "float32")


def _error(y_true, y_pred, scale: float, power: int):
    return (ops.abs(ops.convert_to_tensor(y_true) - y_pred) * scale) ** power


def _binary_hit(y_true, y_pred, tolerance: float, scale: float):
    # keras.metrics.BinaryAccuracy's rule: a prediction above 0.5 means 1
    return ops.cast(ops.equal(ops.convert_to_tensor(y_true), ops.cast(y_pred > 0.5, "float32")), "float32")


class _Exceedance(keras.metrics.Metric):
    def __init__(self, limit: float, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        self.limit = float(limit)
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        # An output that is not a finite number (NaN, inf) is never below the limit: it counts above.
        above = ops.cast(ops.logical_or(y_pred > self.limit, ops.logical_not(ops.isfinite(y_pred))), "float64")
        self.count.assign_add(ops.sum(above))
        self.total.assign_add(ops.cast(ops.size(above), "float64"))

    def reset_state(self):
        self.count.assign(0.0)
        self.total.assign(0.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "limit": self.limit}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ExceedanceCount(_Exceedance):
    """Number of predicted elements above `limit` seen so far in the epoch."""

    def __init__(self, limit: float, name: str = "exceedance_count", **kwargs):
        super().__init__(limit, name=name, **kwargs)

    def result(self):
        # A copy: the variable itself would be read later, after validation reset it (Keras
        # then logged the validation count as the training one).
        return ops.copy(self.count)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ExceedanceRate(_Exceedance):
    """Share of predicted elements above `limit` seen so far in the epoch."""

    def __init__(self, limit: float, name: str = "exceedance_rate", **kwargs):
        super().__init__(limit, name=name, **kwargs)

    def result(self):
        return ops.divide_no_nan(self.count, self.total)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BaseLossPart(keras.metrics.Mean):
    """The base loss alone, so loss curves can show it apart from the penalty."""

    def __init__(self, base: str = "mse", name: str = "base_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.base = base
        self._fn = keras.losses.get(base)

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(self._fn(y_true, y_pred), sample_weight=sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "base": self.base}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PenaltyPart(keras.metrics.Mean):
    """The unweighted penalty term, so loss = base_loss + lam * penalty can be read off."""

    def __init__(
        self, form: str = "l2", threshold: float = 1.0, extras: dict | None = None, name: str = "penalty", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.form, self.threshold = form, float(threshold)
        self.extras = {k: float(v) for k, v in (extras or {}).items()}

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = penalty(y_pred, self.threshold, self.form, **self.extras)
        super().update_state(values, sample_weight=sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "form": self.form, "threshold": self.threshold, "extras": dict(self.extras)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WithinTolerance(keras.metrics.Mean):
    """Share of predicted elements within `tolerance` of the target: accuracy for regression."""

    def __init__(self, tolerance: float = 0.25, name: str = "within_tolerance", **kwargs):
        super().__init__(name=name, **kwargs)
        self.tolerance = float(tolerance)

    def update_state(self, y_true, y_pred, sample_weight=None):
        hit = _within(y_true, y_pred, self.tolerance, 1.0)
        super().update_state(ops.cast(hit, self.dtype), sample_weight=sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "tolerance": self.tolerance}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledError(keras.metrics.Mean):
    """Mean absolute (`power=1`) or squared (`power=2`) error in the user's units, of a model that
    predicts targets divided by `scale`."""

    def __init__(self, power: int = 1, scale: float = 1.0, name: str = "mae", **kwargs):
        super().__init__(name=name, **kwargs)
        self.power, self.scale = int(power), float(scale)

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(_error(y_true, y_pred, self.scale, self.power), sample_weight=sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "power": self.power, "scale": self.scale}


# Quality name -> its Keras metric, given the tolerance and the target scale (see
# `quality_metric`). `config.QUALITY_DIRECTIONS` holds the same names with the direction in which
# each improves, for the commands that do not import Keras. "within_tolerance" is the regression
# stand-in for accuracy: the share of predictions within `tolerance` of the target.
QUALITIES = {
    "within_tolerance": lambda tolerance, scale: WithinTolerance(tolerance),
    "accuracy": lambda tolerance, scale: keras.metrics.BinaryAccuracy(name="accuracy"),
    "mae": lambda tolerance, scale: ScaledError(1, scale, name="mae"),
    "mse": lambda tolerance, scale: ScaledError(2, scale, name="mse"),
}


# Quality name -> (y_true, y_pred, tolerance, scale) -> per-element values whose mean is the
# quality, for the stacked trials' fused metrics (`trial_stack`). Same names as `QUALITIES`.
QUALITY_VALUES = {
    "within_tolerance": _within,
    "accuracy": _binary_hit,
    "mae": lambda y_true, y_pred, tolerance, scale: _error(y_true, y_pred, scale, 1),
    "mse": lambda y_true, y_pred, tolerance, scale: _error(y_true, y_pred, scale, 2),
}


def quality_metric(name: str, tolerance: float, scale: float = 1.0) -> keras.metrics.Metric:
    """The Keras metric behind a quality name in `QUALITIES`; `mae` and `mse` in the user's units
    when the model predicts targets divided by `scale`."""
    if name not in QUALITIES:
        raise ValueError(f"unknown quality metric {name!r}; allowed: {', '.join(QUALITIES)}")
    return QUALITIES[name](tolerance, scale)


def training_metrics(loss: PenalizedLoss, limit: float, quality: str, tolerance: float, scale: float = 1.0) -> list:
    """Everything a trial reports per epoch: loss parts, exceedance on the limit, quality.

    `limit` and `tolerance` are in the units the model predicts in; `scale` turns its errors into
    the user's units (`mae`, `mse`)."""
    return [
        BaseLossPart(loss.base),
        PenaltyPart(loss.form, loss.threshold, loss.extras),
        ExceedanceCount(limit),
        ExceedanceRate(limit),
        quality_metric(quality, tolerance, scale),
    ]


def evaluate_eagerly(loss: PenalizedLoss, metrics: list, y_true, y_pred) -> dict[str, float]:
    """Loss and metrics of one set of predictions, computed eagerly.

    `model.evaluate` with a new batch size traces and XLA-compiles a fresh graph, about 0.5 s
    per model; a trial evaluates its test rows once, so plain eager ops are far cheaper.
    """
    results = {"loss": float(loss(y_true, y_pred))}
    for metric in metrics:
        metric.reset_state()
        metric.update_state(y_true, y_pred)
        results[metric.name] = float(metric.result())
    return results

"""The penalized loss: a base Keras loss plus a weighted penalty on predictions above a threshold.

Written with `keras.ops` only, so it runs on any Keras backend and compiles under XLA.

Why there is no "count" form: the hard count `sum(y_pred > threshold)` is a step function, so its
gradient is zero almost everywhere and undefined at the threshold; added to a loss it changes the
reported value but never moves a weight. `sigmoid_count` is its smooth surrogate: the sigmoid of
`excess / temperature` tends to the step as the temperature goes to 0 while keeping a gradient
near the threshold. The hard count is measured, never trained on (see `metrics.py`).
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "exceedance"


def _l1(excess):
    return ops.relu(excess)


def _l2(excess):
    return ops.square(ops.relu(excess))


def _sigmoid_count(excess, temperature: float):
    return ops.sigmoid(excess * (1.0 / temperature))  # a multiply is cheaper than a divide


# Penalty form -> its per-element function of the excess over the threshold. A keyword argument
# is a hyperparameter of the form's own, searched from the `PenaltyConfig` range of that name
# (`config.PENALTY_FORMS` lists the same names for the commands that do not import Keras).
FORMS = {"l1": _l1, "l2": _l2, "sigmoid_count": _sigmoid_count}


def penalty(y_pred, threshold: float, form: str, **extras: float):
    """Per-sample penalty on the part of `y_pred` above `threshold`, averaged over outputs.

    Args:
        y_pred: predictions, shape `(batch, outputs)` or `(batch,)`.
        threshold: where the penalty starts.
        form: a name in `FORMS`: `l1` (mean relu(excess)), `l2` (mean relu(excess)^2) or
            `sigmoid_count` (mean sigmoid(excess / temperature), a smooth share of elements above
            the threshold).
        extras: the form's own hyperparameters, e.g. `temperature=0.1` for `sigmoid_count`.

    Returns:
        A tensor of shape `(batch,)`.

    Example:
        `penalty([[0.8, 2.5, 0.2, 1.2, 3.5]], 1.0, "l1")` is `[0.84]` (= 4.2 / 5).
    """
    if form not in FORMS:
        raise ValueError(f"unknown penalty form {form!r}; allowed: {', '.join(FORMS)}")
    values = FORMS[form](ops.convert_to_tensor(y_pred) - threshold, **extras)
    if len(values.shape) < 2:
        return values
    return ops.mean(values, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PenalizedLoss(keras.losses.Loss):
    """`base(y_true, y_pred) + lam * penalty(y_pred - threshold)`, serializable with the model.

    Args:
        base: any Keras loss name (`mse`, `binary_crossentropy`, ...).
        form: penalty form, see `penalty`.
        threshold: where the penalty starts (the *training* threshold, not the evaluation limit).
        lam: penalty weight, >= 0.
        extras: the form's own hyperparameters (see `penalty`).
    """

    def __init__(
        self,
        base: str = "mse",
        form: str = "l2",
        threshold: float = 1.0,
        lam: float = 1.0,
        extras: dict[str, float] | None = None,
        name: str = "penalized_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.base = base
        self.form = form
        self.threshold = float(threshold)
        # A variable the compiled step reads: changing it (target-rate training, see
        # `target_rate.DualAscent`) needs no new trace.
        self.lam = keras.Variable(float(lam), trainable=False, name="lam", dtype="float32")
        self.extras = {k: float(v) for k, v in (extras or {}).items()}
        self._base_fn = keras.losses.get(base)

    def call(self, y_true, y_pred):
        base = self._base_fn(y_true, y_pred)
        return base + self.lam * penalty(y_pred, self.threshold, self.form, **self.extras)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "base": self.base,
            "form": self.form,
            "threshold": self.threshold,
            "lam": float(keras.ops.convert_to_numpy(self.lam)),
            "extras": dict(self.extras),
        }

"""Target-rate training: lambda learned during training so the exceedance rate meets a target.

With `penalty.target_rate=E`, lambda is not searched but a Lagrange multiplier, updated after
every training batch by projected dual ascent (Cotter et al., "Optimization with
non-differentiable constraints", JMLR 2019; TensorFlow Constrained Optimization):

    lam <- max(0, lam + dual_lr * (rate - E))

where `rate` is the hard exceedance rate on the limit of the batch just trained on, or, with
`penalty.dual_rows`, of a batch drawn from rows held out of training for the purpose: a rate
met on the rows a model trains on tends to be exceeded on new rows, and an estimate on held-out
rows narrows that gap. The penalty form (any of them) stays the differentiable proxy that lam
weighs. `lam` is a variable the compiled step reads, so it changes without a new trace.
"""

from __future__ import annotations

import keras
import numpy as np


class DualAscent(keras.callbacks.Callback):
    """Projected dual ascent on the loss's `lam` after every training batch; `lam` joins the
    epoch's logs.

    Args:
        lam: the loss's lambda variable (`PenalizedLoss.lam`).
        rate_metric: the compiled `ExceedanceRate` metric, whose running count and total give
            each batch's rate.
        target: the target exceedance rate E.
        dual_lr: the step of the dual update.
        limit: the evaluation limit in the model's units (for the held-out estimate).
        held_out: features of rows held out of training to estimate the rate on, or None to
            use each training batch.
        batch_size: rows per held-out estimate.
        seed: which held-out rows are drawn.
    """

    def __init__(
        self,
        lam: keras.Variable,
        rate_metric,
        target: float,
        dual_lr: float,
        limit: float,
        held_out: np.ndarray | None = None,
        batch_size: int = 128,
        seed: int = 0,
    ):
        super().__init__()
        self.lam, self.rate_metric, self.target, self.dual_lr = lam, rate_metric, target, dual_lr
        self.limit, self.held_out, self.batch_size = limit, held_out, batch_size
        self._rng = np.random.default_rng(seed)
        self._seen = (0.0, 0.0)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._seen = (0.0, 0.0)  # the metric restarts its counts every epoch
        self._epoch = epoch

    def _batch_rate(self) -> float:
        if self.held_out is not None:
            rows = self._rng.integers(0, len(self.held_out), min(self.batch_size, len(self.held_out)))
            pred = np.asarray(self.model.predict_on_batch(self.held_out[rows]))
            return float(np.mean((pred > self.limit) | ~np.isfinite(pred)))  # NaN, inf: above
        count, total = float(self.rate_metric.count.value.numpy()), float(self.rate_metric.total.value.numpy())
        (seen_count, seen_total), self._seen = self._seen, (count, total)
        return (count - seen_count) / (total - seen_total) if total > seen_total else 0.0

    def on_train_batch_end(self, batch, logs=None):
        # Steps shrink to a quarter over the training, so lam settles instead of swinging about
        # its value at the end (the last iterate is what is kept).
        progress = self._epoch / max(1, self.params.get("epochs", 1))
        step = self.dual_lr / (1.0 + 3.0 * progress)
        lam = float(self.lam.value.numpy()) + step * (self._batch_rate() - self.target)
        self.lam.assign(max(0.0, lam))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["lam"] = float(self.lam.value.numpy())
        if "val_exceedance_rate" in logs:
            # The rate met in training, missed on new rows: what held-out rows (dual_rows) narrow.
            logs["exceedance_rate_gap"] = logs["val_exceedance_rate"] - logs["exceedance_rate"]


def training_rows(model, x: np.ndarray, y: np.ndarray, dual_rows: float) -> tuple[np.ndarray, np.ndarray, list]:
    """The rows `model` trains on and the callbacks its training needs: for a target-rate model
    (one `search.ExceedanceHyperModel` built with a target), its `DualAscent`, with the last
    `dual_rows` share of the rows held out for it when that share is set."""
    control = getattr(model, "dual_ascent", None)
    if control is None:
        return x, y, []
    x, y, control.held_out = hold_out(x, y, dual_rows)
    return x, y, [control]


def hold_out(x: np.ndarray, y: np.ndarray, dual_rows: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The rows to train on, and the last `dual_rows` share of them held out to estimate the
    exceedance rate on (None when the share is 0)."""
    if dual_rows <= 0:
        return x, y, None
    held = max(1, round(len(x) * dual_rows))
    return x[:-held], y[:-held], x[-held:]

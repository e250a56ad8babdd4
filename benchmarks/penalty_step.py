"""Train-step time with the penalized loss against plain MSE, same model and data.

A 64-64 MLP on 16,000 synthetic rows (batch 128, XLA on), compiled once per loss. Epoch times
are taken after a warm-up epoch, variants interleaved round by round so drift hits all alike;
each figure is the median epoch time of a variant divided by MSE's (target <= 1.03). The last
row adds the metrics every trial also computes (exceedance count/rate, loss parts, quality).

    python benchmarks/penalty_step.py [--rounds 5] [--epochs 3]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from exceedance.data import split, synthetic
from exceedance.losses import PenalizedLoss
from exceedance.metrics import training_metrics
from exceedance.models import build_mlp

LIMIT = 1.0


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def variants() -> dict[str, tuple[object, bool]]:
    """Name -> (loss, with the trial's metrics)."""
    found: dict[str, tuple[object, bool]] = {"mse": ("mse", False)}
    for form in ("l1", "l2", "sigmoid_count"):
        found[form] = (PenalizedLoss("mse", form, threshold=0.8, lam=1.0, temperature=0.1), False)
    found["l2 + trial metrics"] = (PenalizedLoss("mse", "l2", threshold=0.8, lam=1.0), True)
    return found


def compiled(loss, with_metrics: bool, n_features: int, n_outputs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_mlp(n_features, n_outputs, hidden_units=[64, 64])
    metrics = training_metrics(loss, LIMIT, "within_tolerance", 0.25) if with_metrics else None
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics, jit_compile=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    x, y = synthetic(20_000, 8, 4, LIMIT, 0.3, seed=0)
    data = split(x, y, 0.1, 0.1, seed=0)
    models = {
        name: compiled(loss, with_metrics, data.n_features, data.n_outputs)
        for name, (loss, with_metrics) in variants().items()
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():  # warm-up: tracing and XLA compilation
        model.fit(data.x_train, data.y_train, batch_size=128, epochs=1, verbose=0)
    for _ in range(args.rounds):
        for name, model in models.items():
            timer = EpochTimes()
            model.fit(data.x_train, data.y_train, batch_size=128, epochs=args.epochs, verbose=0, callbacks=[timer])
            times[name] += timer.seconds
    base = statistics.median(times["mse"])
    ratios = {name: statistics.median(t) / base for name, t in times.items()}
    print(f"{'loss':<22} {'epoch (median)':>15} {'ratio to mse':>13}   ({len(data.x_train)} rows, batch 128)")
    for name, t in times.items():
        print(f"{name:<22} {statistics.median(t) * 1000:>12.1f} ms {ratios[name]:>13.3f}")
    print(json.dumps({"mse_epoch_s": round(base, 4), **{f"ratio_{k}": round(v, 4) for k, v in ratios.items()}}))


if __name__ == "__main__":
    main()

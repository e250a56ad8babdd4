"""Train-step time with the penalized loss against plain MSE, same model and data.

A 64-64 MLP on 16,000 synthetic rows (batch 128), compiled once per loss, without XLA (the
default, `search.jit_compile=false`) and with it. Epoch times are taken after a warm-up epoch,
variants interleaved round by round; a figure is the median over rounds of a variant's epoch
time divided by MSE's in the same round and mode (target <= 1.03 for each penalty form). The
"+ trial metrics" rows add what every trial also computes per step (exceedance count and
rate, loss parts, quality).

    python benchmarks/penalty_step.py [--rounds 9] [--epochs 3]

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

from exceedance.config import PENALTY_FORMS
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
    for form, extras in PENALTY_FORMS.items():
        loss = PenalizedLoss("mse", form, threshold=0.8, lam=1.0, extras=dict.fromkeys(extras, 0.1))
        found[form] = (loss, False)
    found["l2 + trial metrics"] = (PenalizedLoss("mse", "l2", threshold=0.8, lam=1.0), True)
    return found


def compiled(loss, with_metrics: bool, jit: bool, n_features: int, n_outputs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_mlp(n_features, n_outputs, hidden_units=[64, 64])
    metrics = training_metrics(loss, LIMIT, "within_tolerance", 0.25) if with_metrics else None
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics, jit_compile=jit)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    x, y = synthetic(20_000, 8, 4, LIMIT, 0.3, seed=0)
    data = split(x, y, 0.1, 0.1, seed=0)
    models = {
        (name, jit): compiled(loss, with_metrics, jit, data.n_features, data.n_outputs)
        for jit in (False, True)
        for name, (loss, with_metrics) in variants().items()
    }
    for model in models.values():  # warm-up: tracing and XLA compilation
        model.fit(data.x_train, data.y_train, batch_size=128, epochs=1, verbose=0)
    epoch: dict[tuple[str, bool], list[float]] = {key: [] for key in models}
    ratios: dict[tuple[str, bool], list[float]] = {key: [] for key in models}
    for _ in range(args.rounds):
        this_round = {}
        for key, model in models.items():
            timer = EpochTimes()
            model.fit(data.x_train, data.y_train, batch_size=128, epochs=args.epochs, verbose=0, callbacks=[timer])
            this_round[key] = statistics.median(timer.seconds)
            epoch[key].append(this_round[key])
        for name, jit in models:
            ratios[(name, jit)].append(this_round[(name, jit)] / this_round[("mse", jit)])
    print(
        f"{'loss':<22} {'XLA':>4} {'epoch (median)':>15} {'ratio to mse':>13}   ({len(data.x_train)} rows, batch 128)"
    )
    for (name, jit), seconds in epoch.items():
        ratio = statistics.median(ratios[(name, jit)])
        print(f"{name:<22} {'on' if jit else 'off':>4} {statistics.median(seconds) * 1000:>12.1f} ms {ratio:>13.3f}")
    print(
        json.dumps(
            {
                f"{name}{' xla' if jit else ''}": {
                    "epoch_s": round(statistics.median(epoch[(name, jit)]), 4),
                    "ratio_to_mse": round(statistics.median(ratios[(name, jit)]), 4),
                }
                for name, jit in models
            }
        )
    )


if __name__ == "__main__":
    main()

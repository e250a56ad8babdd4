"""Trials per minute with one model per trial against K trials per compiled step.

Runs the default search (`exceedance-sweep`'s config: synthetic data, every penalty form, random
oracle, 8 epochs) at `--trials` trials with `search.trials_per_step=1` and with `auto`, one after
the other in one run, alternating which goes first, `--repeats` times (seed = repeat), each
search in a fresh process recording into a throw-away MLflow store, as a user's would. Prints,
per mode (medians over repeats):
- trials per minute while trials run: from the first trial's start until every trial's records
  are written (keras-tuner's loop and the final flush of the records);
- the whole search's seconds (`run_search.run`: validation, data, store, the recording process's
  start, the parent run, the front), which a command pays once however many trials it runs; the
  process's start and TensorFlow's import (~4 s) come on top in both modes;
- the hypervolume of the front (median and spread over seeds), and the peak resident memory.

Then the floor: a warm Keras `fit` of the same K models stacked in one plain Keras model, with
nothing else (one shared Adam, plain mse, no metrics, no per-trial anything), per trial, against
the stack's own warm `TrialStack.fit` per trial (per-trial learning rates, losses, fused metrics,
validation every epoch, NaN isolation) and against the search's time per trial.

The same, with `--model`, for a model given by `model._target_` (a small residual MLP with layer
normalization, defined here, which the stacked MLP cannot express: it trains as K copies).

    python benchmarks/trial_throughput.py [--trials 48] [--repeats 3]

About 10 minutes on 2 cores with the defaults. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

HERE = os.path.dirname(os.path.abspath(__file__))
USER_MODEL = "trial_throughput.residual_mlp"


def residual_mlp(n_features, n_outputs, hidden_units, activation="relu", output_activation="linear"):
    """A model the stacked MLP cannot express: residual blocks with layer normalization."""
    import keras

    inputs = keras.Input(shape=(n_features,))
    hidden = keras.layers.Dense(hidden_units[0], activation=activation)(inputs)
    for units in hidden_units:
        block = keras.layers.Dense(units, activation=activation)(keras.layers.LayerNormalization()(hidden))
        hidden = keras.layers.Add()([hidden, block]) if units == hidden.shape[-1] else block
    outputs = keras.layers.Dense(n_outputs, activation=output_activation)(hidden)
    return keras.Model(inputs, outputs)


def config_for(mode: str, seed: int, trials: int, model: str | None, directory: str):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from exceedance.config import Config, register_configs

    overrides = [
        f"search.max_trials={trials}",
        f"search.seed={seed}",
        f"search.trials_per_step={mode}",
        f"search.directory={directory}/tuner",
        f"tracking.uri=sqlite:///{directory}/mlruns/mlflow.db",
    ]
    if model:
        overrides.append(f"model._target_={model}")
    register_configs()
    with initialize_config_module(config_module="exceedance.conf", version_base=None):
        composed = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), composed))


def search(mode: str, seed: int, trials: int, model: str | None) -> dict:
    """One search in this (fresh) process: its times, front hypervolume and peak memory."""
    sys.path.insert(0, HERE)
    import tensorflow  # noqa: F401  (imported before the clock starts, as for every mode)

    from exceedance import pareto
    from exceedance.run_search import run
    from exceedance.trial import ExceedanceTuner

    trial_phase, training = [], []

    class Timed(ExceedanceTuner):  # times keras-tuner's loop, the final flush, and the stacks' training
        def _run_stack(self, *args):
            started = time.perf_counter()
            try:
                super()._run_stack(*args)
            finally:
                training.append(time.perf_counter() - started)

        def search(self, *args):
            started = time.perf_counter()
            try:
                super().search(*args)
            finally:
                trial_phase.append(time.perf_counter() - started)

        def flush(self, raise_errors: bool = True):
            started = time.perf_counter()
            try:
                super().flush(raise_errors)
            finally:
                trial_phase.append(time.perf_counter() - started)

    import exceedance.trial

    exceedance.trial.ExceedanceTuner = Timed  # what run_search builds
    with tempfile.TemporaryDirectory() as directory:
        config = config_for(mode, seed, trials, model, directory)
        started = time.perf_counter()
        result = run(config, report=lambda line: None)
        seconds = time.perf_counter() - started
    front = result.front
    volume = pareto.front_hypervolume(
        [row["quality"] for row in front],
        [row["exceedance_rate"] for row in front],
        config.quality_direction,
        config.reference_quality,
    )
    return {
        "mode": mode,
        "seed": seed,
        "seconds": seconds,
        "trial_seconds": sum(trial_phase),
        "training_seconds": sum(training),
        "trials": result.trials,
        "hypervolume": volume,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def plain_stack(slots: int, n_features: int, n_outputs: int, hidden_units: list[int], model: str | None):
    """The same K models in one plain Keras model: `(batch, features) -> (batch, K, outputs)`."""
    import keras
    from hydra.utils import get_method

    inputs = keras.Input(shape=(n_features,))
    if model:  # K copies side by side
        build = get_method(model)
        outputs = [build(n_features, n_outputs, hidden_units)(inputs) for _ in range(slots)]
        return keras.Model(inputs, keras.layers.Lambda(lambda o: keras.ops.stack(o, axis=1))(outputs))

    class StackedDense(keras.layers.Layer):
        def __init__(self, units, activation=None, first=False):
            super().__init__()
            self.units, self.activation, self.first = units, keras.activations.get(activation), first

        def build(self, shape):
            self.kernel = self.add_weight(shape=(slots, shape[-1], self.units), initializer="glorot_uniform")
            self.bias = self.add_weight(shape=(slots, 1, self.units), initializer="zeros")

        def call(self, x):
            x = keras.ops.einsum("bi,kio->kbo" if self.first else "kbi,kio->kbo", x, self.kernel)
            return self.activation(x + self.bias)

    hidden = inputs
    for i, units in enumerate(hidden_units):
        hidden = StackedDense(units, "relu", first=i == 0)(hidden)
    outputs = StackedDense(n_outputs)(hidden)
    return keras.Model(inputs, keras.ops.transpose(outputs, (1, 0, 2)))


def floor(trials: int, model: str | None) -> dict:
    """Seconds per trial of warm fits of K trials of the default search: the plain Keras floor,
    and `TrialStack.fit`."""
    sys.path.insert(0, HERE)
    import keras
    import keras_tuner as kt
    import numpy as np

    from exceedance import data as data_module
    from exceedance.search import ExceedanceHyperModel

    with tempfile.TemporaryDirectory() as directory:
        config = config_for("auto", 0, trials, model, directory)
    search = config.search
    dataset = data_module.load(config.data)
    hypermodel = ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs, dataset.target)
    rows = max(len(dataset.x_val), len(dataset.x_test), search.batch_size)
    slots = hypermodel.slots(search.max_trials, rows)
    space = hypermodel.declare(kt.HyperParameters())
    rng = np.random.default_rng(0)
    chosen = []
    for k in range(slots):
        hp = space.copy()
        hp.values = {h.name: h.random_sample(int(rng.integers(1 << 30))) for h in space.space}
        chosen.append(hypermodel.slot_trial(hp, k, search.epochs))

    def best_of(runs: int, once) -> float:
        times = []
        for _ in range(runs):  # the first traces the graph
            started = time.perf_counter()
            once()
            times.append(time.perf_counter() - started)
        return min(times[1:]) / slots

    plain = plain_stack(slots, dataset.n_features, dataset.n_outputs, list(config.model.hidden_units), model)
    plain.compile(optimizer=keras.optimizers.Adam(0.005), loss="mse")
    y_stacked = np.repeat(dataset.y_train[:, None, :], slots, axis=1)
    floor_s = best_of(
        3, lambda: plain.fit(dataset.x_train, y_stacked, epochs=search.epochs, batch_size=search.batch_size, verbose=0)
    )
    stack = hypermodel.stack(slots)

    def stacked_fit():
        stack.load(chosen)
        stack.fit(
            dataset.x_train,
            dataset.y_train,
            (dataset.x_val, dataset.y_val),
            batch_size=search.batch_size,
            shuffle_seed=0,
            dual_lr=config.penalty.dual_lr,
            held_out=None,
            on_epoch=lambda k, metrics, step: None,
        )

    return {"slots": slots, "floor_s": floor_s, "stack_s": best_of(3, stacked_fit)}


def fresh(function, *args):
    """`function(*args)` in a new process (TensorFlow's state and memory start clean)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def compare(trials: int, repeats: int, model: str | None) -> dict:
    runs = {"1": [], "auto": []}
    for seed in range(repeats):
        order = ("1", "auto") if seed % 2 == 0 else ("auto", "1")
        for mode in order:
            runs[mode].append(fresh(search, mode, seed, trials, model))
            done = runs[mode][-1]
            print(
                f"  seed {seed} trials_per_step={mode:<4} {done['seconds']:6.1f} s  "
                f"hypervolume {done['hypervolume']:.4f}",
                flush=True,
            )
    summary = {}
    for mode, done in runs.items():
        volumes = [d["hypervolume"] for d in done]
        summary[mode] = {
            "trials_per_minute": statistics.median(60 * d["trials"] / d["trial_seconds"] for d in done),
            "seconds_per_trial": statistics.median(d["trial_seconds"] / d["trials"] for d in done),
            "search_seconds": statistics.median(d["seconds"] for d in done),
            "training_per_trial": statistics.median(d["training_seconds"] / d["trials"] for d in done),
            "hypervolume_median": statistics.median(volumes),
            "hypervolume_spread": [min(volumes), max(volumes)],
            "peak_mib": max(d["peak_mib"] for d in done),
        }
    summary["ratio"] = summary["auto"]["trials_per_minute"] / summary["1"]["trials_per_minute"]
    summary["floor"] = fresh(floor, trials, model)
    floor_s = summary["floor"]["floor_s"]
    summary["stack_to_floor"] = summary["floor"]["stack_s"] / floor_s
    summary["search_to_floor"] = summary["auto"]["seconds_per_trial"] / floor_s
    summary["training_to_floor"] = summary["auto"]["training_per_trial"] / floor_s
    return summary


def show(title: str, summary: dict) -> None:
    print(f"\n{title}")
    print(
        f"{'trials_per_step':<16}{'trials/min':>11}{'s/trial':>9}{'search s':>10}{'hypervolume (spread)':>29}{'MiB':>7}"
    )
    for mode in ("1", "auto"):
        s = summary[mode]
        low, high = s["hypervolume_spread"]
        print(
            f"{mode:<16}{s['trials_per_minute']:>11.0f}{s['seconds_per_trial']:>9.3f}{s['search_seconds']:>10.1f}"
            f"{s['hypervolume_median']:>12.4f} ({low:.4f}-{high:.4f}){s['peak_mib']:>7.0f}"
        )
    f = summary["floor"]
    print(f"ratio auto / 1: {summary['ratio']:.1f}x trials per minute")
    print(
        f"per trial, K={f['slots']}: plain Keras floor (warm) {f['floor_s']:.3f} s; TrialStack.fit (warm) "
        f"{f['stack_s']:.3f} s ({summary['stack_to_floor']:.2f}x); training in the search (first trace "
        f"included) {summary['auto']['training_per_trial']:.3f} s ({summary['training_to_floor']:.2f}x); "
        f"whole trial phase {summary['auto']['seconds_per_trial']:.3f} s ({summary['search_to_floor']:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-model", action="store_true", help="only the default search")
    args = parser.parse_args()
    results = {"default": compare(args.trials, args.repeats, None)}
    show(f"default search, {args.trials} trials, {args.repeats} seeds", results["default"])
    if not args.skip_model:
        results["user_model"] = compare(args.trials, args.repeats, USER_MODEL)
        show(f"model._target_={USER_MODEL} (K copies), {args.trials} trials", results["user_model"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()

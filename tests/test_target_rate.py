"""Target-rate training: lambda learned by dual ascent meets the target rate on new rows."""

from __future__ import annotations

import math

import keras
import keras_tuner as kt
import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import compose_config, trial_runs
from exceedance import data as data_module
from exceedance.fitting import fit
from exceedance.run_search import run
from exceedance.search import ExceedanceHyperModel
from exceedance.target_rate import training_rows

pytestmark = pytest.mark.slow
SEEDS = range(5)


def train(seed: int, target: float | None, lam: float = 0.0) -> tuple[float, float]:
    """One l1 model on synthetic data (3,000 rows, 16 epochs): its final validation exceedance
    rate and lambda, with lambda learned for `target`, or fixed at `lam` when `target` is None."""
    overrides = ["data.n_samples=3000", f"data.seed={seed}", "penalty=l1", "search.epochs=16"]
    overrides += ["penalty.threshold_offset.low=-0.2", "penalty.threshold_offset.high=-0.2"]
    overrides += ["search.learning_rate.low=0.005", "search.learning_rate.high=0.005"]
    overrides += [f"penalty.target_rate={target}"] if target else [f"penalty.lam.low={lam}", f"penalty.lam.high={lam}"]
    config = compose_config(overrides)
    dataset = data_module.load(config.data)
    keras.utils.set_random_seed(seed)
    model = ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs, dataset.target).build(
        kt.HyperParameters()
    )
    x, y, control = training_rows(model, dataset.x_train, dataset.y_train, config.penalty.dual_rows)
    fitted = fit(
        model,
        x,
        y,
        epochs=16,
        batch_size=128,
        on_epoch=lambda *_: None,
        validation=(dataset.x_val, dataset.y_val),
        callbacks=control,
    )
    return fitted.final["val_exceedance_rate"], float(model.loss.get_config()["lam"])


def interval(target: float, elements: int) -> tuple[float, float]:
    """The binomial 95 % interval of the rate, or 1 percentage point, whichever is wider."""
    half = max(1.96 * math.sqrt(target * (1 - target) / elements), 0.01)
    return target - half, target + half


def test_a_learned_lambda_meets_each_target_where_a_fixed_one_meets_only_one():
    elements = 600 * 4  # validation rows x outputs
    learned = {}
    for target in (0.02, 0.10):
        low, high = interval(target, elements)
        results = [train(seed, target) for seed in SEEDS]
        rates = [rate for rate, _ in results]
        inside = sum(low <= rate <= high for rate in rates)
        assert inside >= 4, f"target {target}: rates {np.round(rates, 4)} outside [{low:.4f}, {high:.4f}]"
        assert low <= float(np.median(rates)) <= high
        learned[target] = float(np.median([lam for _, lam in results]))
    assert learned[0.02] > learned[0.10] > 0, "a lower target needs a heavier penalty"
    # Lambda tuned for one target, fixed from the start: it misses the other target.
    for tuned, other in ((0.10, 0.02), (0.02, 0.10)):
        low, high = interval(other, elements)
        rates = [train(seed, None, learned[tuned])[0] for seed in SEEDS[:3]]
        assert not any(low <= rate <= high for rate in rates), f"lam {learned[tuned]:.3g}: {rates}"


def test_a_target_rate_sweep_logs_lambda_per_epoch_and_the_target(tmp_path, tiny):
    result = run(compose_config([*tiny, "penalty.target_rate=0.05", "penalty.dual_rows=0.2"]), report=lambda _: None)
    assert result.trials == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for trial in trial_runs(client):
        assert trial.data.params["target_rate"] == "0.05" and "lam" not in trial.data.params
        lam = client.get_metric_history(trial.info.run_id, "lam")
        assert [m.step for m in lam] == [1, 2] and all(m.value >= 0 for m in lam)
        assert "exceedance_rate_gap" in trial.data.metrics

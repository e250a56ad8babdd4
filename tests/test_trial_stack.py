"""Trials per step: a trial trained in a stack is the same trial trained alone."""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import TINY, compose_config, trial_runs
from exceedance import data as data_module
from exceedance import names
from exceedance.names import FORM, THRESHOLD_OFFSET
from exceedance.run_search import run
from exceedance.search import ExceedanceHyperModel
from exceedance.target_rate import hold_out, training_rows

EPOCHS = 3
# One stack of four trials: every penalty form, each trial its own learning rate and threshold.
SLOTS = [("l1", 0.001, 0.0), ("l2", 0.003, -0.2), ("sigmoid_count", 0.01, -0.4), ("l2", 0.005, -0.6)]


def setup(overrides: list[str]):
    config = compose_config(["data.n_samples=500", "model.hidden_units=[16,8]", "search.batch_size=64", *overrides])
    dataset = data_module.load(config.data)
    return config, dataset, ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs, dataset.target)


def hyperparameters(hypermodel, form: str, learning_rate: float, offset: float, lam: float):
    hp = hypermodel.declare(kt.HyperParameters())
    hp.values.update({FORM: form, "learning_rate": learning_rate, THRESHOLD_OFFSET: offset, "temperature": 0.1})
    if "lam" in hp.values:
        hp.values["lam"] = lam
    return hp


def train_alone(config, dataset, model) -> dict[str, float]:
    """keras-tuner's one-model-per-trial path: `fit` of the compiled model, batches in order."""
    x, y, control = training_rows(model, dataset.x_train, dataset.y_train, config.penalty.dual_rows)
    history = model.fit(
        x,
        y,
        validation_data=(dataset.x_val, dataset.y_val),
        epochs=EPOCHS,
        batch_size=config.search.batch_size,
        shuffle=False,
        verbose=0,
        callbacks=control,
    )
    return {name: values[-1] for name, values in history.history.items()}


def fit(stack, trials, dataset, on_epoch=lambda *_: None, **options) -> list:
    """Load `trials` into `stack` and fit them on the data set's training rows, validated on its
    validation rows."""
    x, y = options.pop("rows", (dataset.x_train, dataset.y_train))
    weights = options.pop("weights", [])
    stack.load(trials)
    for slot, slot_weights in enumerate(weights):
        stack.network.set_weights(slot, slot_weights)
    settings = {"batch_size": 64, "shuffle_seed": 0, "dual_lr": 4.0, "held_out": None, **options}
    return stack.fit(x, y, (dataset.x_val, dataset.y_val), on_epoch=on_epoch, **settings)


def train_stacked(config, dataset, hypermodel, trials, weights) -> list:
    """The same trials in one stack, from the same initial weights, batches in the same order."""
    x, y, held_out = hold_out(dataset.x_train, dataset.y_train, config.penalty.dual_rows)
    epochs = {}
    results = fit(
        hypermodel.stack(len(trials)),
        trials,
        dataset,
        lambda slot, metrics, step: epochs.setdefault(slot, []).append(step),
        rows=(x, y),
        weights=weights,
        batch_size=config.search.batch_size,
        dual_lr=config.penalty.dual_lr,
        held_out=held_out,
        dual_seed=config.data.seed,
        shuffle=False,
    )
    assert all(steps == list(range(1, EPOCHS + 1)) for steps in epochs.values())
    return results


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # lambda searched: each trial its own
        ["penalty.target_rate=0.05"],  # lambda learned per trial, on the training batches
        ["penalty.target_rate=0.05", "penalty.dual_rows=0.2"],  # ... on held-out rows
        ["+model.options.kernel_regularizer=l2"],  # not stackable: copies of the model, with XLA
    ],
    ids=["lambda", "target-rate", "held-out-rate", "copies"],
)
def test_a_trial_in_a_stack_matches_the_same_trial_alone(overrides):
    config, dataset, hypermodel = setup(overrides)
    trials, weights, alone = [], [], []
    for slot, (form, learning_rate, offset) in enumerate(SLOTS):
        hp = hyperparameters(hypermodel, form, learning_rate, offset, lam=0.5 + slot)
        keras.utils.set_random_seed(slot)
        model = hypermodel.build(hp)
        weights.append(model.get_weights())
        trials.append(hypermodel.slot_trial(hp, seed=slot, epochs=EPOCHS))
        alone.append(train_alone(config, dataset, model))
    stacked = train_stacked(config, dataset, hypermodel, trials, weights)

    for slot, expected in enumerate(alone):
        got = stacked[slot].final
        assert stacked[slot].diverged is None and stacked[slot].epochs == EPOCHS
        assert set(got) == set(expected), slot
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=2e-4, abs=1e-5), (slot, name)
    # the trials differ from each other: the test compares four different trainings
    assert len({round(s.final["val_loss"], 6) for s in stacked}) == len(SLOTS)


def test_a_diverging_trial_fails_alone_and_its_neighbours_train_on():
    _, dataset, hypermodel = setup([])

    def stack_with(middle_lam: float, middle_rate: float):
        trials = [
            hypermodel.slot_trial(hyperparameters(hypermodel, "l2", 0.003, -0.2, lam=1.0), seed=0, epochs=EPOCHS),
            hypermodel.slot_trial(
                hyperparameters(hypermodel, "l2", middle_rate, -0.2, lam=middle_lam), seed=1, epochs=EPOCHS
            ),
            hypermodel.slot_trial(hyperparameters(hypermodel, "l1", 0.01, 0.0, lam=2.0), seed=2, epochs=EPOCHS),
        ]
        return fit(hypermodel.stack(len(trials)), trials, dataset)

    broken = stack_with(middle_lam=1e30, middle_rate=100.0)
    healthy = stack_with(middle_lam=1.0, middle_rate=0.003)
    assert broken[1].diverged and broken[1].diverged.startswith("training diverged: loss=")
    assert broken[1].epochs < EPOCHS or not np.isfinite(broken[1].final["loss"])
    for slot in (0, 2):
        assert broken[slot].diverged is None
        for name, value in healthy[slot].final.items():
            assert broken[slot].final[name] == pytest.approx(value, rel=1e-6), (slot, name)


def test_hyperband_trials_stop_at_their_own_epochs():
    _, dataset, hypermodel = setup([])
    budgets = [1, 3, 2]
    trials = [
        hypermodel.slot_trial(hyperparameters(hypermodel, "l1", 0.003, 0.0, lam=1.0), seed=k, epochs=epochs)
        for k, epochs in enumerate(budgets)
    ]
    stack = hypermodel.stack(4)  # one slot empty
    seen: dict[int, list[int]] = {}
    results = fit(stack, [*trials, None], dataset, lambda slot, metrics, step: seen.setdefault(slot, []).append(step))
    assert seen == {k: list(range(1, epochs + 1)) for k, epochs in enumerate(budgets)}
    assert [r.epochs for r in results[:3]] == budgets and results[3] is None


def stacked_search(tmp_path, mode: str, overrides: list[str]):
    """A tiny search of its own store with `search.trials_per_step=mode`: (client, trial runs, lines)."""
    uri = f"sqlite:///{tmp_path}/{mode}/mlruns/mlflow.db"
    lines: list[str] = []
    config = compose_config(
        [
            *TINY,
            *overrides,
            f"search.trials_per_step={mode}",
            f"tracking.uri={uri}",
            f"search.directory={tmp_path}/{mode}/tuner",
        ]
    )
    result = run(config, report=lines.append)
    client = MlflowClient(uri)
    return result, client, {t.data.tags[names.TRIAL_ID]: t for t in trial_runs(client)}, lines


@pytest.mark.slow
def test_a_stacked_search_records_each_trial_as_one_model_per_trial_does(tmp_path):
    overrides = ["search.max_trials=4", "search.epochs=3"]
    _, alone_client, alone, _ = stacked_search(tmp_path, "1", overrides)
    result, client, stacked, lines = stacked_search(tmp_path, "auto", overrides)

    assert sorted(stacked) == sorted(alone) and len(stacked) == 4
    assert all(line.endswith("(1/4 of a step)") for line in lines), lines
    for trial_id, run_ in stacked.items():
        other = alone[trial_id]
        assert run_.info.status == "FINISHED"
        assert run_.data.params == other.data.params  # the same proposals, recorded alike
        assert set(run_.data.metrics) == set(other.data.metrics)
        assert set(run_.data.tags) - {"mlflow.runName"} >= {names.PARENT, names.ON_FRONT, names.TRIAL_ID}
        for key in ("loss", "val_exceedance_rate", "val_within_tolerance"):
            assert [m.step for m in client.get_metric_history(run_.info.run_id, key)] == [1, 2, 3]
        for trial, store in ((run_, client), (other, alone_client)):  # curves for the front's trials
            front = {"curves.png"} if trial.data.tags[names.ON_FRONT] == "true" else set()
            assert {a.path for a in store.list_artifacts(trial.info.run_id)} == {"predictions.png", *front}
    assert [m.step for m in client.get_metric_history(result.parent_run_id, "hypervolume")] == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("oracle", ["random", "bayesian", "grid", "hyperband", "pareto", "frontier"])
def test_every_oracle_gives_several_trials_per_step_each_recorded_once(tmp_path, oracle):
    overrides = [f"search={oracle}", "search.max_trials=6", "search.epochs=3", "search.target_rates=[0.2,0.05]"]
    result, _, trials, lines = stacked_search(tmp_path, "3", overrides)

    assert len(trials) == result.trials == len(lines)  # one run per trial, every one finished
    assert any("of a step" in line and "(1/1 " not in line for line in lines), lines
    if oracle == "frontier":  # the forms' unpenalized trials first: their rates decide the targets
        assert all("(1/3 of a step)" in line and "target_rate=1" in line for line in lines[:3]), lines

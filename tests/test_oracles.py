"""The Pareto oracle through keras-tuner's oracle API, fed known scores (no model is trained)."""

from __future__ import annotations

import keras_tuner as kt
import pytest

from conftest import compose_config
from exceedance.oracles import CONSTRAINT, FrontierOracle, ParetoOracle, make_oracle
from exceedance.search import ExceedanceHyperModel

COMPLETED, FAILED = kt.engine.trial.TrialStatus.COMPLETED, kt.engine.trial.TrialStatus.FAILED


def scores(values: dict) -> tuple[float, float]:
    """A made-up trial result: more lambda (or a tighter target), less exceedance and less quality."""
    lam = values["lam"] if "lam" in values else 1 - values["target_rate"]
    return 0.9 - 0.05 * lam, 0.3 / (1 + lam)


def oracle_for(tmp_path, *overrides: str) -> ParetoOracle:
    config = compose_config(["search=pareto", "search.max_trials=12", *overrides])
    oracle = make_oracle(config)
    oracle._set_project_dir(str(tmp_path), "project")
    oracle.update_space(ExceedanceHyperModel(config, 4, 2).declare(oracle.get_space()))  # as the tuner does
    return oracle


def run_trials(oracle: ParetoOracle, n: int, fail: set[int] = frozenset()) -> list[dict]:
    proposed = []
    for i in range(n):
        trial = oracle.create_trial("tuner0")
        if trial.status != kt.engine.trial.TrialStatus.RUNNING:
            break
        values = dict(trial.hyperparameters.values)
        proposed.append(values)
        if i in fail:
            trial.status = FAILED
        else:
            quality, exceedance = scores(values)
            oracle.update_trial(trial.trial_id, {"val_within_tolerance": quality, "val_exceedance_rate": exceedance})
            trial.status = COMPLETED
        oracle.end_trial(trial)
        oracle.save()  # as the tuner does after every trial
    return proposed


def test_the_same_seed_gives_the_same_proposals_and_another_seed_others(tmp_path):
    first = run_trials(oracle_for(tmp_path / "a"), 12)
    again = run_trials(oracle_for(tmp_path / "b"), 12)
    other = run_trials(oracle_for(tmp_path / "c", "search.seed=1"), 12)
    assert first == again
    assert [v["lam"] for v in first] != [v["lam"] for v in other]


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_every_trial_is_told_to_optuna_failed_ones_as_failed(tmp_path, sampler):
    oracle = oracle_for(tmp_path, f"search.sampler={sampler}")
    proposed = run_trials(oracle, 12, fail={3, 7})
    study = oracle._study
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL" if i in (3, 7) else "COMPLETE" for i in range(12)]
    for values, told in zip(proposed, study.trials, strict=True):
        assert told.params == {k: v for k, v in values.items() if k in told.params}
        # The form's own hyperparameter is proposed only with its form.
        assert ("temperature" in values) == (values["form"] == "sigmoid_count")
        if told.state.name == "COMPLETE":
            assert told.values == pytest.approx(list(scores(values)))
    assert all(t.number not in (3, 7) for t in study.best_trials), "a failed trial is never on the front"


def test_a_cap_on_the_exceedance_rate_is_a_constraint(tmp_path):
    oracle = oracle_for(tmp_path, "search.max_exceedance=0.05")
    proposed = run_trials(oracle, 6)
    for values, told in zip(proposed, oracle._study.trials, strict=True):
        assert told.constraints == {CONSTRAINT: pytest.approx(scores(values)[1] - 0.05)}


def test_a_reloaded_oracle_continues_from_every_trial_that_ended(tmp_path):
    oracle = oracle_for(tmp_path)
    proposed = run_trials(oracle, 5, fail={1})
    reloaded = oracle_for(tmp_path)
    reloaded.reload()
    told = reloaded._study.trials
    assert [t.state.name for t in told] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert [t.params["lam"] for t in told] == [v["lam"] for v in proposed]
    more = run_trials(reloaded, 20)
    assert len(more) == 7, "the budget counts the trials before the restart"
    assert len(reloaded._study.trials) == 12


def test_the_frontier_measures_each_form_unpenalized_then_tries_each_target_below_it(tmp_path):
    oracle = oracle_for(tmp_path, "search=frontier", "search.target_rates=[0.3,0.1,0.02]", "penalty.forms=[l1,l2]")
    assert isinstance(oracle, FrontierOracle) and oracle.max_trials == 2 * 4
    planned = []
    while (trial := oracle.create_trial("tuner0")).status == kt.engine.trial.TrialStatus.RUNNING:
        values = trial.hyperparameters.values
        planned.append((values["form"], values["target_rate"]))
        assert values["threshold_offset"] <= 0, "a penalty starting above the limit cannot meet a target"
        assert "lam" not in values, "a target-rate trial learns its lambda"
        rate = 0.25 if values["target_rate"] == 1.0 else values["target_rate"]  # unpenalized: 0.25
        oracle.update_trial(trial.trial_id, {"val_within_tolerance": 0.5, "val_exceedance_rate": rate})
        trial.status = COMPLETED
        oracle.end_trial(trial)
    # 0.3 is above the unpenalized rate of 0.25: met for free, not trained.
    assert planned == [("l1", 1.0), ("l1", 0.1), ("l1", 0.02), ("l2", 1.0), ("l2", 0.1), ("l2", 0.02)]


def test_the_frontier_gives_the_same_plan_and_values_for_the_same_seed(tmp_path):
    def plan(folder: str, seed: int) -> list[dict]:
        oracle = oracle_for(tmp_path / folder, "search=frontier", f"search.seed={seed}")
        return run_trials(oracle, 30)

    first = plan("a", 0)
    assert first == plan("b", 0)
    assert [v["threshold_offset"] for v in first] != [v["threshold_offset"] for v in plan("c", 1)]

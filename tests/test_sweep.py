"""End-to-end searches into a temporary MLflow store: what a user finds in MLflow afterwards."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import compose_config
from exceedance.data import synthetic
from exceedance.run_search import run

pytestmark = pytest.mark.slow


def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def runs_by_role(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("exceedance.role") == "search"]
    trials = [r for r in runs if r.data.tags.get("exceedance.role") == "trial"]
    return parents, trials


def test_search_records_parent_trials_metrics_and_front(tmp_path, tiny):
    lines: list[str] = []
    result = run(compose_config([*tiny, "search.max_trials=3"]), report=lines.append)
    assert len(lines) == 3 and all(line.startswith("trial ") for line in lines)

    client = MlflowClient(store_uri(tmp_path))
    parents, trials = runs_by_role(client, "exceedance")
    assert len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.params["data.limit"] == "1.0"
    assert not any(key.startswith("tracking.") for key in parents[0].data.params), "URIs may hold secrets"
    assert len(trials) == 3
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert trial.info.status == "FINISHED"
        assert {"form", "threshold", "lam", "learning_rate", "limit"} <= set(trial.data.params)
        history = client.get_metric_history(trial.info.run_id, "val_exceedance_rate")
        assert [m.step for m in history] == [1, 2]
        for key in (
            "loss",
            "val_loss",
            "base_loss",
            "penalty",
            "exceedance_count",
            "within_tolerance",
        ):
            assert key in trial.data.metrics, key
        # Test figures are one value each: tags, not one-point metric charts.
        assert {"test/exceedance_rate", "test/within_tolerance"} <= set(trial.data.tags)
        assert not any(key.startswith("test") for key in trial.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(trial.info.run_id)}
        assert "predictions.png" in artifacts

    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"pareto.png", "pareto.csv", "config.yaml"} <= parent_artifacts
    path = client.download_artifacts(result.parent_run_id, "pareto.csv", str(tmp_path))
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 3
    points = np.array([[-float(r["quality"]), float(r["exceedance_rate"])] for r in rows])
    for row, p in zip(rows, points, strict=True):
        dominated = any(np.all(q <= p) and np.any(q < p) for q in points)
        assert (row["pareto"] == "True") == (not dominated)
        tag = next(t for t in trials if t.info.run_id == row["run_id"]).data.tags["pareto"]
        assert tag == str(not dominated).lower()
    assert {r["trial_id"] for r in result.front} == {r["trial_id"] for r in rows if r["pareto"] == "True"}
    # The front's hypervolume after every finished trial, reference (quality 0, rate 1).
    history = client.get_metric_history(result.parent_run_id, "hypervolume")
    assert [m.step for m in history] == [1, 2, 3]
    front = np.array([[-float(r["quality"]), float(r["exceedance_rate"])] for r in rows if r["pareto"] == "True"])
    front = front[np.argsort(front[:, 0])]
    area = np.sum(np.diff(np.append(front[:, 0], 0.0)) * (1.0 - front[:, 1]))
    assert history[-1].value == pytest.approx(area)


@pytest.mark.parametrize("oracle", ["pareto", "frontier"])
def test_the_front_searches_run_end_to_end(tmp_path, tiny, oracle):
    overrides = [*tiny, f"search={oracle}", "penalty=l1", "search.target_rates=[0.01]", "data.n_samples=600"]
    result = run(compose_config(overrides), report=lambda _: None)
    client = MlflowClient(store_uri(tmp_path))
    _, trials = runs_by_role(client, "exceedance")
    assert result.trials == len(trials) == 2
    assert [m.step for m in client.get_metric_history(result.parent_run_id, "hypervolume")] == [1, 2]
    if oracle == "frontier":  # an unpenalized trial, then the target below the rate it reached
        assert sorted(t.data.params["target_rate"] for t in trials) == ["0.01", "1.0"]
        for trial in trials:
            assert [m.step for m in client.get_metric_history(trial.info.run_id, "lam")] == [1, 2]


def test_rerun_of_a_finished_search_adds_nothing(tmp_path, tiny):
    first = run(compose_config(tiny), report=lambda _: None)
    second = run(compose_config(tiny), report=lambda _: None)
    assert second.parent_run_id == first.parent_run_id
    parents, trials = runs_by_role(MlflowClient(store_uri(tmp_path)), "exceedance")
    assert (len(parents), len(trials)) == (1, 2)


def test_overwrite_starts_afresh_and_keeps_the_earlier_runs(tmp_path, tiny):
    first = run(compose_config(tiny), report=lambda _: None)
    second = run(compose_config([*tiny, "search.overwrite=true"]), report=lambda _: None)
    assert second.parent_run_id != first.parent_run_id
    parents, trials = runs_by_role(MlflowClient(store_uri(tmp_path)), "exceedance")
    assert (len(parents), len(trials)) == (2, 4)
    third = run(compose_config(tiny), report=lambda _: None)
    assert third.parent_run_id == second.parent_run_id


@pytest.mark.parametrize(
    "option",
    [
        "data=diabetes",
        "data=breast_cancer",
        "search=bayesian",
        "search=grid",
        "search=hyperband",
        "penalty=sigmoid_count",
    ],
)
def test_other_data_and_oracles_run(tmp_path, tiny, option):
    result = run(compose_config([*tiny, option, "search.epochs=3"]), report=lambda _: None)
    assert result.trials >= 1 and result.front


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exceedance.cli.sweep", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_command_line_prints_front_and_ui_command(tmp_path):
    done = run_cli(["data.n_samples=200", "search.max_trials=2", "search.epochs=1", "model.hidden_units=[4]"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trial 0" in done.stdout
    assert "Pareto-optimal trials" in done.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlruns/mlflow.db" in done.stdout
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()


def test_a_search_in_other_units_is_the_same_search_reported_in_those_units(tmp_path):
    """The same data in sd units (limit 1) and in a user's units (40 * y + 100, limit 140):
    targets are standardized for training, so both searches train the same models; thresholds,
    predictions and errors come back in each one's units."""
    x, y = synthetic(400, 4, 2, 1.0, 0.3, seed=3)
    runs, hypervolumes = {}, {}
    for name, scale, shift in (("sd", 1.0, 0.0), ("kw", 40.0, 100.0)):
        path = tmp_path / f"{name}.csv"
        columns = [*(f"x{i}" for i in range(4)), "a", "b"]
        np.savetxt(path, np.hstack([x, y * scale + shift]), delimiter=",", header=",".join(columns), comments="")
        overrides = [
            f"name={name}",
            "data=file",
            f"data.path={path}",
            "data.targets=[a,b]",
            f"data.limit={1.0 * scale + shift}",
            "data.quality=mae",
            f"search.reference_quality={2 * scale}",
            "search.max_trials=2",
            "search.epochs=2",
            "model.hidden_units=[8]",
            f"tracking.uri={store_uri(tmp_path)}",
            f"search.directory={tmp_path}/tuner",
        ]
        run(compose_config(overrides), report=lambda _: None)
        parents, trials = runs_by_role(MlflowClient(store_uri(tmp_path)), name)
        runs[name] = {t.data.tags["exceedance.trial_id"]: t.data for t in trials}
        hypervolumes[name] = parents[0].data.metrics["hypervolume"]
    assert sorted(runs["sd"]) == sorted(runs["kw"]) == ["0", "1"]
    for trial_id, sd in runs["sd"].items():
        kw = runs["kw"][trial_id]
        assert kw.params["threshold_offset"] == sd.params["threshold_offset"]
        assert float(kw.params["threshold"]) == pytest.approx(40 * float(sd.params["threshold"]) + 100, rel=1e-4)
        assert kw.metrics["val_exceedance_rate"] == pytest.approx(sd.metrics["val_exceedance_rate"], abs=1e-6)
        assert kw.metrics["val_mae"] == pytest.approx(40 * sd.metrics["val_mae"], rel=1e-3)
    # The front's area: mae in user units (x 40) against the same rates, reference 2 sd.
    assert hypervolumes["sd"] > 0
    assert hypervolumes["kw"] == pytest.approx(40 * hypervolumes["sd"], rel=1e-3)

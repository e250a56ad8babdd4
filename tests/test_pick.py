"""`exceedance-pick` on a real MLflow store filled with trials of known metrics."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from conftest import compose_config, free_port
from exceedance.certify import upper_bound
from exceedance.cli.pick import main
from exceedance.cli.train import compose_file
from exceedance.config import TrackingConfig
from exceedance.pareto import FinishedTrial
from exceedance.pick import export_config
from exceedance.recording.experiment import Experiment
from exceedance.recording.reader import open_trial_store
from exceedance.stores import connect
from exceedance.train import require_fixed
from exceedance.validation import validate

QUALITY = np.array([0.90, 0.85, 0.80, 0.70, 0.60, 0.75, 0.50])
EXCEED = np.array([0.20, 0.08, 0.03, 0.01, 0.0, 0.05, 0.10])
TEST_EXCEED = EXCEED + 0.005
TEST_EXCEED[1] = 0.30  # a trial whose test rate falls far above its validation rate's bound
VAL_ROWS = 400


def fill(uri: str, name: str = "known", overrides: tuple[str, ...] = (), limit: float | None = None) -> None:
    """Experiment `name`: one search of seven finished trials and one failed trial (measured
    against `limit`, when given)."""
    experiment = Experiment(uri, name)
    parent, _ = experiment.start_search(f"known-key-{limit}", compose_config(list(overrides)), {})
    client = MlflowClient(uri)
    for i, (q, e) in enumerate(zip(QUALITY, EXCEED, strict=True)):
        run_id = experiment.start_trial(
            parent,
            str(i),
            {
                "form": "l2",
                "threshold": 0.5 + i / 10,
                "threshold_offset": -0.5 + i / 10,
                "lam": 1.0,
                "learning_rate": 0.003,
                "quality": "within_tolerance",
                "val_rows": VAL_ROWS,
                **({"limit": limit} if limit is not None else {}),
            },
        )
        metrics = [Metric("val_within_tolerance", q, 0, 1), Metric("val_exceedance_rate", e, 0, 1)]
        client.log_batch(run_id, metrics=metrics, tags=[RunTag("test/exceedance_rate", str(TEST_EXCEED[i]))])
        experiment.end_run(run_id, "FINISHED")
    failed = experiment.start_trial(parent, "9", {"form": "l1", "quality": "within_tolerance"})
    client.log_batch(
        failed,
        metrics=[Metric("val_within_tolerance", 1.0, 0, 1), Metric("val_exceedance_rate", 0.0, 0, 1)],
        params=[Param("x", "1")],
    )
    experiment.end_run(failed, "FAILED")


@pytest.fixture
def filled(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir()
    fill(uri)
    return uri, tmp_path


def brute_force_pick(ok_mask, key):
    candidates = [i for i in range(len(QUALITY)) if ok_mask[i]]
    return min(candidates, key=key)


def picked_trial(capsys) -> str:
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(" * "))
    return line.split()[1]


@pytest.mark.parametrize("cap", [0.0, 0.05, 0.09, 1.0])
def test_max_exceedance_rule(filled, capsys, cap):
    uri, tmp = filled
    main(["known", "--max-exceedance", str(cap), "--tracking-uri", uri, "--out", str(tmp / "out")])
    expected = brute_force_pick(EXCEED <= cap, key=lambda i: (-QUALITY[i], EXCEED[i]))
    assert picked_trial(capsys) == str(expected)


@pytest.mark.parametrize("floor", [0.5, 0.72, 0.85])
def test_min_quality_rule(filled, capsys, floor):
    uri, tmp = filled
    main(["known", "--min-quality", str(floor), "--tracking-uri", uri, "--out", str(tmp / "out")])
    expected = brute_force_pick(QUALITY >= floor, key=lambda i: (EXCEED[i], -QUALITY[i]))
    assert picked_trial(capsys) == str(expected)


def check_front_export_and_tag(uri: str, out_dir: Path, capsys) -> None:
    main(["known", "--knee", "--tracking-uri", uri, "--out", str(out_dir)])
    out = capsys.readouterr().out
    rows = [
        line.split()[0 if not line.startswith(" * ") else 1]
        for line in out.splitlines()
        if line[:3] in ("   ", " * ") and line.split()[-1] != "run_id" and len(line.split()) > 5
    ]
    # trials 5 (0.75, 0.05) and 6 (0.5, 0.10) are dominated; failed trial 9 is left out.
    assert sorted(rows) == ["0", "1", "2", "3", "4"]
    assert (out_dir / "pareto.png").stat().st_size > 0
    exported = yaml.safe_load((out_dir / "picked.yaml").read_text())
    picked = next(line.split()[1] for line in out.splitlines() if line.startswith(" * "))
    assert exported["penalty"]["threshold_offset"]["low"] == pytest.approx(-0.5 + int(picked) / 10)
    assert exported["search"]["max_trials"] == 1 and exported["defaults"] == ["base_config", "_self_"]
    client = MlflowClient(uri)
    tagged = client.search_runs([client.get_experiment_by_name("known").experiment_id], "tags.picked = 'true'")
    assert [r.data.tags["exceedance.trial_id"] for r in tagged] == [picked]


def test_front_table_excludes_failed_and_dominated_and_exports_the_pick(filled, capsys):
    uri, tmp = filled
    check_front_export_and_tag(uri, tmp / "out", capsys)


def test_the_pick_shows_each_rate_bound_and_flags_a_test_rate_above_it(filled, capsys):
    uri, tmp = filled
    main(["known", "--knee", "--tracking-uri", uri, "--out", str(tmp / "out")])
    lines = [line for line in capsys.readouterr().out.splitlines() if line[:3] in ("   ", " * ")]
    assert "bound95" in lines[0] and "test_rate" in lines[0]
    for line in lines[1:]:
        cells = line.removeprefix(" * ").split()
        flagged = cells[-2] == "!"
        trial, bound = int(cells[0]), float(cells[-4 if flagged else -3])
        expected = upper_bound(EXCEED[trial], VAL_ROWS, 0.05)
        assert float(f"{expected:.4g}") == bound and bound > EXCEED[trial]
        assert flagged == (trial == 1), line


@pytest.mark.slow
def test_pick_from_a_tracking_server(tmp_path, capsys):
    store = tmp_path / "server-store"
    uri = connect(TrackingConfig(server=True, port=free_port(), store_dir=str(store)))
    try:
        fill(uri)
        check_front_export_and_tag(uri, tmp_path / "out", capsys)
    finally:
        os.killpg(int((store / "server.pid").read_text()), signal.SIGTERM)


def test_store_reader_returns_what_mlflow_search_runs_returns(filled):
    uri, _ = filled
    store = open_trial_store(uri)
    experiment_id = store.experiment_id("known")
    ours = store.finished_trials(experiment_id)
    runs = MlflowClient(uri).search_runs(
        [experiment_id], "tags.`exceedance.role` = 'trial' and attributes.status = 'FINISHED'"
    )
    assert [trial.run_id for trial, _ in ours] == [run.info.run_id for run in runs]
    for (trial, parent), run in zip(ours, runs, strict=True):
        assert trial.quality == run.data.metrics["val_within_tolerance"]
        assert trial.exceedance_rate == run.data.metrics["val_exceedance_rate"]
        assert trial.trial_id == run.data.tags["exceedance.trial_id"]
        assert parent == run.data.tags["mlflow.parentRunId"]
        assert trial.params == {k: v for k, v in run.data.params.items() if k in trial.params}
        expected = {"form", "threshold", "threshold_offset", "lam", "learning_rate", "quality", "val_rows"}
        assert set(trial.params) == expected
        assert trial.test_exceedance_rate == float(run.data.tags["test/exceedance_rate"])
    assert store.experiment_id("nope") is None


def test_pick_of_a_missing_store_says_so_and_creates_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["known", "--knee", "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db"])
    assert exit_info.value.code == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["known", "--max-exceedance", "nan"], "--max-exceedance: must be a rate in 0..1, got nan"),
        (["known", "--max-exceedance", "-0.01"], "--max-exceedance: must be a rate in 0..1, got -0.01"),
        (["known", "--min-quality", "inf"], "--min-quality: must be a finite number, got inf"),
        (["bad'name", "--knee"], 'experiment "bad\'name" does not exist'),
        (["known", "--min-quality", "0.95"], "no finished trial satisfies the rule"),
        (["nope", "--knee"], "experiment 'nope' does not exist"),
    ],
)
def test_no_pick_exits_non_zero_with_a_message(filled, capsys, args, message):
    uri, tmp = filled
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--tracking-uri", uri, "--out", str(tmp / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_pick_help_does_not_import_tensorflow():
    probe = (
        "import sys\nfrom exceedance.cli.pick import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "tensorflow imported: False False" in done.stdout
    assert "--max-exceedance" in done.stdout


def test_a_whole_pick_imports_neither_tensorflow_nor_keras(filled):
    uri, tmp = filled
    probe = (
        "import sys\nfrom exceedance.cli.pick import main\n"
        f"main(['known', '--knee', '--tracking-uri', {uri!r}, '--out', {str(tmp / 'probe')!r}])\n"
        "print('imported:', *(name in sys.modules for name in ('tensorflow', 'keras')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "imported: False False" in done.stdout
    assert (tmp / "probe" / "picked.yaml").is_file()


def test_a_second_pick_moves_the_tag_and_prints_the_store_to_train_into(filled, capsys):
    uri, tmp = filled
    main(["known", "--knee", "--tracking-uri", uri, "--out", str(tmp / "first")])
    main(["known", "--max-exceedance", "0.0", "--tracking-uri", uri, "--out", str(tmp / "second")])
    out = capsys.readouterr().out
    client = MlflowClient(uri)
    tagged = client.search_runs([client.get_experiment_by_name("known").experiment_id], "tags.picked = 'true'")
    assert [r.data.tags["exceedance.trial_id"] for r in tagged] == [str(int(np.argmax(EXCEED == 0.0)))]
    # picked.yaml leaves the URI out (it can hold credentials); the next command carries it
    assert f"exceedance-train {tmp / 'second' / 'picked.yaml'} tracking.uri={uri}" in out
    assert "tracking" not in yaml.safe_load((tmp / "second" / "picked.yaml").read_text())


def test_a_pick_that_cannot_write_its_files_leaves_the_earlier_pick_tagged(filled, capsys):
    uri, tmp = filled
    main(["known", "--knee", "--tracking-uri", uri, "--out", str(tmp / "first")])
    first = picked_trial(capsys)
    (tmp / "taken").write_text("")
    with pytest.raises(SystemExit):
        main(["known", "--max-exceedance", "0.0", "--tracking-uri", uri, "--out", str(tmp / "taken" / "x")])
    client = MlflowClient(uri)
    tagged = client.search_runs([client.get_experiment_by_name("known").experiment_id], "tags.picked = 'true'")
    assert [r.data.tags["exceedance.trial_id"] for r in tagged] == [first]


def test_without_a_rule_the_pick_uses_the_searches_cap_or_asks_for_one(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir()
    fill(uri)  # searches without search.max_exceedance
    capsys.readouterr()  # MLflow's own lines from making the store
    with pytest.raises(SystemExit) as exit_info:
        main(["known", "--tracking-uri", uri, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "exceedance-pick: error: give a rule: --max-exceedance E, --min-quality Q or --knee (its searches set no cap)"
    ]
    fill(uri, "capped", ["search.max_exceedance=0.05"])
    capsys.readouterr()
    main(["capped", "--tracking-uri", uri, "--out", str(tmp_path / "capped")])
    out = capsys.readouterr().out
    assert "picked by rule: best quality with exceedance rate <= 0.05" in out
    expected = brute_force_pick(EXCEED <= 0.05, key=lambda i: (-QUALITY[i], EXCEED[i]))
    assert next(line.split()[1] for line in out.splitlines() if line.startswith(" * ")) == str(expected)


@pytest.mark.parametrize(("target", "expected"), [("0.05", (0.05, None)), ("1.0", (None, 0.0))])
def test_a_target_rate_trial_exports_its_target_and_the_unpenalized_one_lambda_0(tmp_path, target, expected):
    config = dataclasses.asdict(compose_config(["search=frontier", "penalty=l2"]))
    config.pop("tracking")
    params = {"form": "l2", "threshold_offset": "-0.1", "learning_rate": "0.003", "target_rate": target}
    trial = FinishedTrial("run", "3", params, 0.5, 0.05)
    exported = yaml.safe_load(export_config(yaml.safe_dump(config), trial, tmp_path / "picked.yaml").read_text())
    penalty = exported["penalty"]
    assert (penalty["target_rate"], penalty["lam"]["low"] if expected[1] is not None else None) == expected
    assert penalty["threshold_offset"] == {"low": -0.1, "high": -0.1}
    fixed = compose_file(tmp_path / "picked.yaml", [])
    validate(fixed)
    require_fixed(fixed)  # exceedance-train takes it


def test_trials_of_different_limits_are_never_compared(tmp_path, capsys):
    """A sweep over limits puts several in one experiment: the pick asks which one."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir()
    fill(uri, "limits", limit=0.8)
    fill(uri, "limits", limit=1.0)
    capsys.readouterr()
    for args, message in (
        (
            [],
            "trials of 'limits' are measured against different limits (0.8, 1); "
            "pick among the trials of one with --limit L",
        ),
        (["--limit", "2"], "--limit: no finished trial of 'limits' has limit 2; its limits: 0.8, 1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["limits", "--knee", "--tracking-uri", uri, "--out", str(tmp_path / "out"), *args])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"exceedance-pick: error: {message}"]
    main(["limits", "--knee", "--limit", "0.8", "--tracking-uri", uri, "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "(7 finished trials;" in out, "only the trials of limit 0.8"

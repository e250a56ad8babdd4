"""Sweep -> pick -> `exceedance-train`: the champion is registered and loads back by alias."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import TINY, command, compose_config, last_line
from exceedance import data as data_module
from exceedance.cli.pick import main as pick_main
from exceedance.cli.train import compose_file
from exceedance.cli.train import main as train_main
from exceedance.config import ConfigError
from exceedance.run_search import run
from exceedance.train import require_fixed

# Loads the champion in a fresh process, as a user would, and prints what it predicts and scores.
LOAD = """
import json, sys
import numpy as np
import exceedance.losses, exceedance.metrics, mlflow, mlflow.keras
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.keras.load_model(sys.argv[2])
arrays = np.load(sys.argv[3])
x, y = arrays["x"], arrays["y"]
print(json.dumps({
    "predictions": model.predict(x, verbose=0).tolist(),
    "scores": model.evaluate(x, y, verbose=0, return_dict=True),
    "loss": model.loss.get_config(),
    "metrics": sorted(type(m).__name__ for m in model.metrics[1].metrics),
}))
"""


@pytest.mark.slow
def test_sweep_pick_train_registers_a_champion_that_loads_by_alias(tmp_path, tiny, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    run(compose_config([*tiny, "name=shipit", "search.max_trials=3"]), report=lambda _: None)
    out = tmp_path / "pick"
    pick_main(["shipit", "--knee", "--tracking-uri", uri, "--out", str(out)])

    train_main([str(out / "picked.yaml"), f"tracking.uri={uri}"])
    assert "MLFLOW_TRACKING_URI" not in os.environ  # training leaves no global state behind
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("shipit", "champion")
    training = client.get_run(version.run_id)
    assert training.info.status == "FINISHED"
    assert training.data.tags["exceedance.role"] == "training"
    assert {"test/exceedance_rate", "test/within_tolerance", "loss"} <= set(training.data.metrics)

    config = compose_file(out / "picked.yaml", [])
    dataset = data_module.load(config.data)
    x_raw = dataset.raw(dataset.x_test)
    y_user = dataset.target.to_user(dataset.y_test)  # the shipped model speaks the user's units
    np.savez(tmp_path / "test.npz", x=x_raw, y=y_user)
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD, uri, "models:/shipit@champion", str(tmp_path / "test.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr
    result = json.loads(loaded.stdout.strip().splitlines()[-1])

    # Same predictions as the model the training run evaluated: its logged test figures match.
    predictions = np.array(result["predictions"])
    assert predictions.shape == dataset.y_test.shape
    rate = float(np.mean(predictions > config.data.limit))
    assert rate == pytest.approx(training.data.metrics["test/exceedance_rate"], abs=1e-6)
    assert result["scores"]["exceedance_rate"] == pytest.approx(rate, abs=1e-6)
    assert result["scores"]["within_tolerance"] == pytest.approx(
        training.data.metrics["test/within_tolerance"], abs=1e-6
    )
    # The custom loss came back with the picked trial's values; the custom metrics came back too.
    assert result["loss"]["form"] == config.penalty.forms[0]
    offset = config.penalty.threshold_offset.low
    assert result["loss"]["threshold"] == pytest.approx(config.data.limit + offset * dataset.target.scale, rel=1e-5)
    assert result["loss"]["lam"] == pytest.approx(config.penalty.lam.low)
    assert {"ExceedanceCount", "ExceedanceRate", "WithinTolerance"} <= set(result["metrics"])
    # The signature describes raw features in and one column per output out.
    signature = mlflow.models.get_model_info("models:/shipit@champion").signature
    assert signature.inputs.inputs[0].shape == (-1, dataset.n_features)
    assert signature.outputs.inputs[0].shape == (-1, dataset.n_outputs)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("conf/config.yaml", "penalty.forms: exceedance-train needs exactly one penalty form"),
        ("missing.yaml", "config: no such .yaml file 'missing.yaml'"),
    ],
)
def test_train_refuses_a_config_that_is_not_one_trial(tmp_path, config, message):
    root = Path(__file__).resolve().parents[1]
    path = root / config if config.startswith("conf/") else Path(config)
    done = subprocess.run(
        [sys.executable, "-m", "exceedance.cli.train", str(path), f"tracking.uri=sqlite:///{tmp_path}/m/mlflow.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"exceedance-train: error: {done.stderr.split(': error: ')[1].strip()}"
    assert message in done.stderr
    assert not (tmp_path / "m").exists()


def test_train_refuses_a_searched_value():
    config = compose_config([*TINY, "penalty=l2"])
    with pytest.raises(
        ConfigError, match=r"penalty.threshold_offset: exceedance-train needs a fixed value .*-0.5..0.2"
    ):
        require_fixed(config)


@pytest.mark.slow
def test_train_certify_ships_a_model_with_the_offset_and_its_certificate(tmp_path, store, capsys):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    overrides = [*store, "name=certified", "data.n_samples=2000", "search.max_trials=3", "search.epochs=3"]
    run(compose_config([*overrides, "model.hidden_units=[8]"]), report=lambda _: None)
    out = tmp_path / "pick"
    pick_main(["certified", "--max-exceedance", "0.5", "--tracking-uri", uri, "--out", str(out)])
    assert "max_exceedance: 0.5" in (out / "picked.yaml").read_text()  # the rule, for --certify's default

    train_main([str(out / "picked.yaml"), f"tracking.uri={uri}", "--certify", "0.02"])
    printed = capsys.readouterr().out
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("certified", "champion")
    tags = version.tags
    offset, bound = float(tags["exceedance.certificate.offset"]), float(tags["exceedance.certificate.upper_bound"])
    assert float(tags["exceedance.certificate.max_exceedance"]) == 0.02
    assert float(tags["exceedance.certificate.delta"]) == pytest.approx(0.05)
    assert int(tags["exceedance.certificate.rows"]) == 300  # 15 % of 2,000 rows
    assert offset > 0 and bound <= 0.02  # the model exceeded more than 2 %: it ships lowered
    training = client.get_run(version.run_id).data.metrics
    assert training["test/exceedance_rate"] < training["test_before_offset/exceedance_rate"]
    assert "Certificate: exceedance rate <= 0.02 with confidence 0.95" in printed
    # the shipped model applies the offset itself: raw features in, lowered outputs out
    config = compose_file(out / "picked.yaml", [f"tracking.uri={uri}"])
    dataset = data_module.load(config.data)
    mlflow.set_tracking_uri(uri)
    shipped = mlflow.keras.load_model("models:/certified@champion")
    outputs = shipped.predict(dataset.raw(dataset.x_cal), verbose=0)
    assert np.mean(outputs > config.data.limit) <= 0.02

    # Re-certified on new inputs without labels: the test rows (drawn like the calibration rows)
    # pass; the same rows shifted along the features that raise the outputs fail with exit code 3.
    mlflow.set_tracking_uri(None)
    fresh = tmp_path / "fresh.npz"
    x_test, x_train = dataset.raw(dataset.x_test), dataset.raw(dataset.x_train)
    np.savez(fresh, x=x_test)
    raising = np.linalg.lstsq(
        np.c_[x_train, np.ones(len(x_train))], shipped.predict(x_train, verbose=0).mean(axis=1), rcond=None
    )[0][:-1]
    shifted = x_test + 3 * np.sign(raising) * x_train.std(axis=0)
    above = np.mean(shipped.predict(shifted, verbose=0) > config.data.limit)
    assert above > 2 * np.mean(shipped.predict(x_test, verbose=0) > config.data.limit) and above > 0.04
    high = tmp_path / "shifted.csv"
    header = ",".join(f"f{i}" for i in range(shifted.shape[1]))
    high.write_text("\n".join([header] + [",".join(map(str, row)) for row in shifted]))
    args = ["models:/certified@champion", "--tracking-uri", uri, "--max-exceedance", "0.05"]
    passed = command("certify", [*args, "--data", str(fresh)], tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASS: the bound" in passed.stdout
    failed = command("certify", [*args, "--data", str(high)], tmp_path)
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "FAIL: the bound" in failed.stdout and "Traceback" not in failed.stderr
    runs = client.search_runs(
        [client.get_run(version.run_id).info.experiment_id], "tags.`exceedance.role` = 'certification'"
    )
    assert sorted(r.data.tags["exceedance.certificate.result"] for r in runs) == ["FAIL", "PASS"]
    bad = command("certify", [*args, "--data", str(tmp_path / "missing.csv")], tmp_path)
    assert bad.returncode == 2 and "does not exist" in last_line(bad)

    # unlabelled rows of the user's own join the calibration rows
    train_main([str(out / "picked.yaml"), f"tracking.uri={uri}", "--certify", "--calibration-data", str(fresh)])
    second = client.get_model_version_by_alias("certified", "champion")
    assert int(second.tags["exceedance.certificate.rows"]) == 300 + len(x_test)
    assert float(second.tags["exceedance.certificate.max_exceedance"]) == 0.5  # the pick's rule


FIXED = """\
defaults: [base_config, _self_]
name: gate-picked
data: {{name: synthetic, limit: 1.0, n_samples: {rows}}}
model: {{hidden_units: [16]}}
penalty:
  forms: [l2]
  threshold_offset: {{low: 0.0, high: 0.0}}
  lam: {{low: 0.0, high: 0.0}}
search:
  epochs: {epochs}
  batch_size: 64
  learning_rate: {{low: 0.01, high: 0.01}}
tracking: {{uri: "{uri}"}}
"""


@pytest.mark.slow
def test_train_does_not_register_a_model_its_own_certificate_check_fails(tmp_path):
    # Calibration rows unlike the data the model sees: 5,000 copies of the mean row, whose output
    # is below the limit, swamp the 300 drawn ones. The certificate comes out with no offset and a
    # tight bound that the test rows (a quarter of them above the limit) are far outside of.
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "picked.yaml").write_text(FIXED.format(rows=2000, epochs=20, uri=uri))
    dataset = data_module.load(compose_file(tmp_path / "picked.yaml", []).data)
    np.savez(tmp_path / "alike.npz", x=np.tile(dataset.feature_mean, (5000, 1)))
    done = command("train", ["picked.yaml", "--certify", "0.05", "--calibration-data", "alike.npz"], tmp_path)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    line = last_line(done)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert line.startswith("exceedance-train: --certify: the certificate does not hold: on the test rows "), line
    assert "outside the certified bound" in line and "nothing was registered" in line
    assert "certified on 5300 calibration rows" in done.stdout and "Registered" not in done.stdout
    client = MlflowClient(uri)
    assert client.search_registered_models() == []  # no version, no alias
    (training,) = client.search_runs(
        [client.get_experiment_by_name("gate-picked").experiment_id], "tags.`exceedance.role` = 'training'"
    )
    assert training.info.status == "FAILED"
    assert training.data.metrics["test/exceedance_rate"] > float(
        training.data.tags["exceedance.certificate.upper_bound"]
    )

    # the same model certified on rows drawn like the test rows is registered
    shipped = command("train", ["picked.yaml", "--certify", "0.05"], tmp_path)
    assert shipped.returncode == 0, shipped.stdout[-2000:] + shipped.stderr[-3000:]
    assert "within the certified bound" in shipped.stdout
    assert str(client.get_model_version_by_alias("gate", "champion").version) == "1"

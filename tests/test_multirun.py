"""`--multirun` with the joblib launcher: parallel jobs into one SQLite store and experiment."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

from conftest import TINY

pytestmark = pytest.mark.slow


def test_two_parallel_jobs_land_in_one_experiment_tagged_with_their_overrides(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exceedance.cli.sweep",
            "-m",
            "+sweeps=penalty_forms",
            "penalty=l1,sigmoid_count",
            *TINY,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("penalty_forms")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags["exceedance.role"] == "search"]
    trials = [r for r in runs if r.data.tags["exceedance.role"] == "trial"]
    assert sorted(r.data.tags["hydra.job_num"] for r in parents) == ["0", "1"]
    assert sorted("penalty=l1" in r.data.tags["hydra.overrides"] for r in parents) == [False, True]
    assert len(trials) == 4 and all(t.info.status == "FINISHED" for t in trials)
    forms = {r.info.run_id: r.data.params["penalty.forms"] for r in parents}
    assert sorted(forms.values()) == ["['l1']", "['sigmoid_count']"]

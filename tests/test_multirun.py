"""`--multirun` with the joblib launcher: parallel jobs into one SQLite store and experiment."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import TINY
from exceedance.pareto import front_hypervolume, front_mask

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
    # The pareto tags mark the experiment's joint front over both jobs' trials, not each job's own.
    quality = np.array([t.data.metrics["val_within_tolerance"] for t in trials])
    exceedance = np.array([t.data.metrics["val_exceedance_rate"] for t in trials])
    joint = front_mask(quality, exceedance, "max")
    assert [t.data.tags["pareto"] for t in trials] == [str(m).lower() for m in joint]
    area = front_hypervolume(quality, exceedance, "max", 0.0)
    assert max(p.data.metrics["joint_hypervolume"] for p in parents) == pytest.approx(area)

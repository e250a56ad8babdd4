"""Cluster launchers: Hydra's submitit launcher, whose local flavour runs here end to end, and
the shipped SLURM settings (composed; a real SLURM is not tested)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow import MlflowClient

from conftest import TINY, compose_config


def test_the_slurm_launcher_composes_with_the_settings_users_change():
    hydra = compose_config(["hydra/launcher=slurm", "hydra.launcher.partition=cpu"], return_hydra_config=True).hydra
    launcher = hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task, launcher.gpus_per_node) == (
        "cpu",
        120,
        4,
        0,
    )


@pytest.mark.slow
def test_a_two_job_multirun_through_submitits_local_launcher(tmp_path):
    args = ["-m", "hydra/launcher=submitit_local", "+sweeps=penalty_forms", "penalty=l1,l2", *TINY]
    done = subprocess.run(
        [sys.executable, "-m", "exceedance.cli.sweep", *args], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in done.stdout + done.stderr
    assert "penalty_forms: 4 finished trials of 2 searches" in done.stdout  # the joint summary, at the end
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("penalty_forms")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags["exceedance.role"] == "search"]
    trials = [r for r in runs if r.data.tags["exceedance.role"] == "trial"]
    assert sorted(p.info.run_name for p in parents) == ["penalty_forms: penalty=l1", "penalty_forms: penalty=l2"]
    assert sorted(p.data.tags["hydra.job_num"] for p in parents) == ["0", "1"]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in runs)
    # submitit's own files (each job's log and pickles) stay under mlruns/.
    logs = list((tmp_path / "mlruns").rglob("*_log.out"))
    assert len(logs) == 2 and all("trial 0:" in log.read_text() for log in logs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlruns"]

"""What a scheduler sends ends a command as Ctrl-C does: SIGTERM (timeout, SLURM, systemd, a
container's stop) and SIGHUP (a closed terminal), to the process group or to the command alone.

Asserted as a user sees it: one last line, exit code 128 + the signal, no run left RUNNING (the
search and its trial in flight KILLED, a training run FAILED), the recording processes gone, and
the rerun resuming the search.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import SLOW_TRIALS, TINY, all_gone, children, command, in_second_trial, sweep_process, trial_runs

pytestmark = pytest.mark.slow


def store(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def statuses(client: MlflowClient, name: str) -> list[str]:
    experiment = client.get_experiment_by_name(name)
    return [r.info.status for r in client.search_runs([experiment.experiment_id])] if experiment else []


def send(process: subprocess.Popen, signum: int, to_group: bool) -> None:
    if to_group:
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)


CASES = {
    "SIGTERM to the group": (signal.SIGTERM, True),
    "SIGTERM to the command alone": (signal.SIGTERM, False),
    "SIGHUP to the group": (signal.SIGHUP, True),
}


@pytest.mark.parametrize(("signum", "to_group"), CASES.values(), ids=CASES.keys())
def test_a_stopped_sweep_closes_its_runs_says_so_and_resumes(tmp_path, signum, to_group):
    sweep = sweep_process(SLOW_TRIALS, tmp_path, stderr=subprocess.PIPE)
    client = in_second_trial(sweep, tmp_path)
    recorders = children(sweep.pid)
    send(sweep, signum, to_group)
    _, err = sweep.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert sweep.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"exceedance-sweep: stopped by {name}; everything recorded so far is kept"
    status = {r.data.tags["exceedance.trial_id"]: r.info.status for r in trial_runs(client)}
    assert status == {"0": "FINISHED", "1": "KILLED"}
    assert sorted(statuses(client, "exceedance")) == ["FINISHED", "KILLED", "KILLED"]  # + the search's run
    assert all_gone(recorders)

    again = command("sweep", SLOW_TRIALS, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    finished = sorted(r.data.tags["exceedance.trial_id"] for r in trial_runs(client) if r.info.status == "FINISHED")
    assert finished == ["0", "1", "2"]
    assert "RUNNING" not in statuses(client, "exceedance")


@pytest.mark.parametrize("to_group", [True, False], ids=["to the group", "to the launcher alone"])
def test_a_stopped_multirun_leaves_nothing_running(tmp_path, to_group):
    sweep = sweep_process(["-m", "+sweeps=penalty_forms", "penalty=l1,l2", *SLOW_TRIALS], tmp_path)
    for line in sweep.stdout:
        if line.startswith("[job "):  # a trial ended in a job: both jobs are recording
            break
    time.sleep(1.0)
    send(sweep, signal.SIGTERM, to_group)
    sweep.communicate(timeout=180)
    assert sweep.returncode != 0
    client = store(tmp_path)
    assert statuses(client, "penalty_forms"), "the jobs recorded nothing"
    assert "RUNNING" not in statuses(client, "penalty_forms")


def test_a_stopped_training_run_ends_failed_with_one_line(tmp_path):
    assert command("sweep", [*TINY, "name=ship"], tmp_path).returncode == 0
    assert command("pick", ["ship", "--knee"], tmp_path).returncode == 0
    train = subprocess.Popen(
        [sys.executable, "-m", "exceedance.cli.train", "mlruns/picks/ship/picked.yaml", "search.epochs=3000"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    client = store(tmp_path)
    deadline = time.monotonic() + 120
    while "RUNNING" not in statuses(client, "ship-picked") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # training
    send(train, signal.SIGTERM, True)
    _, err = train.communicate(timeout=120)
    assert train.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "exceedance-train: stopped by SIGTERM; everything recorded so far is kept"
    assert statuses(client, "ship-picked") == ["FAILED"]
    assert client.search_registered_models() == []

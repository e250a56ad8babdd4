"""What reaches the user's terminal: our lines, not the libraries' start-up chatter; a multirun
labelled by job and ending with one joint summary; a rerun that says nothing new ran."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from conftest import TINY
from exceedance import quiet

NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795560076.333950    4167 port.cc:153] oneDNN custom operations are on. You may see ...\n"
)


def test_native_start_up_lines_are_held_back_and_anything_else_passes(capfd, monkeypatch):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with quiet.native_start_up_lines_held():
        os.write(2, NOISE.encode())
        os.write(2, b"E0000 something TensorFlow really wants to say\n")
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "absl" not in err
    assert "something TensorFlow really wants to say" in err


def test_verbose_brings_the_start_up_lines_back(capfd, monkeypatch):
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    with quiet.native_start_up_lines_held():
        os.write(2, NOISE.encode())
    assert "oneDNN custom operations" in capfd.readouterr().err


def test_verbose_flag_is_taken_out_of_the_overrides(monkeypatch):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    assert quiet.take_verbose_flag(["-v", "penalty=l1"]) == ["penalty=l1"]
    assert quiet.verbose()


@pytest.mark.slow
def test_a_multirun_labels_its_jobs_ends_with_the_joint_front_and_a_rerun_runs_nothing(tmp_path):
    args = [sys.executable, "-m", "exceedance.cli.sweep", "-m", "+sweeps=penalty_forms", "penalty=l1,l2", *TINY]
    env = {k: v for k, v in os.environ.items() if k not in (quiet.VERBOSE_ENV, "MLFLOW_LOGGING_LEVEL")}
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    # No TensorFlow or MLflow start-up lines.
    for noise in ("oneDNN", "absl", "cpu_feature_guard", "INFO mlflow", "alembic", "Reloading Tuner"):
        assert noise not in done.stdout + done.stderr, noise
    out = done.stdout
    for job, form in ((0, "l1"), (1, "l2")):
        assert re.search(rf"^\[job {job} penalty={form}\] trial 0: {form} ", out, re.M), out
        assert re.search(rf"^\[job {job} penalty={form}\] 2 finished trials, \d on this search's front$", out, re.M)
    summary = out[out.index("penalty_forms: 4 finished trials of 2 searches") :]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("penalty_forms")
    front = client.search_runs([experiment.experiment_id], "tags.pareto = 'true'")
    rows = re.findall(r"^\s+(\d)\s+(\d)\s+(l1|l2)\s", summary, re.M)
    assert sorted(rows) == sorted(
        (r.data.tags["exceedance.job"], r.data.tags["exceedance.trial_id"], r.data.params["form"]) for r in front
    )
    assert f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning" in summary
    assert re.search(r"^Next: exceedance-pick penalty_forms( --max-exceedance 0\.01| --knee)$", summary, re.M)

    # The pick's table puts each trial's job beside its id (trial ids repeat across jobs).
    pick = subprocess.run(
        [sys.executable, "-m", "exceedance.cli.pick", "penalty_forms", "--knee"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert pick.returncode == 0, pick.stderr[-2000:]
    table = pick.stdout.split("\n\n")[0].splitlines()[1:]  # the table, up to the blank line before "Plot:"
    assert table[0].split()[:2] == ["job", "trial_id"]
    picked_rows = {(line[3:].split()[0], line[3:].split()[1], line.split()[-1]) for line in table[1:]}
    assert picked_rows == {
        (r.data.tags["exceedance.job"], r.data.tags["exceedance.trial_id"], r.info.run_id) for r in front
    }

    parents = client.search_runs([experiment.experiment_id], "tags.`exceedance.role` = 'search'")
    ended = {p.info.run_id: p.info.end_time for p in parents}
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    for form in ("l1", "l2"):
        assert f"nothing new to run: search 'penalty_forms: penalty={form}' had already finished its 2 trials" in (
            again.stdout
        )
    assert " trial 0: " not in again.stdout
    parents = client.search_runs([experiment.experiment_id], "tags.`exceedance.role` = 'search'")
    assert {p.info.run_id: p.info.end_time for p in parents} == ended  # durations not stretched

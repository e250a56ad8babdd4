"""Several workers on one search (`search.workers`): one oracle served by the command, trials
trained by worker processes, every trial recorded once under one parent; a worker killed
mid-trial, the chief killed and restarted, and workers joining from another command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import TINY, all_gone, command, free_port, last_line, sweep_process, trial_runs
from exceedance.worker import belongs

# Two workers, two trials per step each: eight quick trials.
SHARED = [*TINY, "search.max_trials=8", "search.trials_per_step=2", "search.workers=2"]
# Two workers, three trials per step each, about ten seconds a step: long enough to kill a
# process while every trial of the search is in flight.
SLOW = [
    "data.n_samples=6000",
    "search.max_trials=6",
    "search.epochs=300",
    "model.hidden_units=[16]",
    "search.trials_per_step=3",
    "search.workers=2",
]


def client_for(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")


def parents(client: MlflowClient, name: str = "exceedance"):
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], "tags.`exceedance.role` = 'search'")


def each_trial_finished_once(client: MlflowClient, trials: int, name: str = "exceedance") -> list:
    """Every trial id has exactly one FINISHED run, none is left RUNNING, all under one parent
    that FINISHED; returns the trial runs."""
    runs = trial_runs(client, name)
    finished = Counter(r.data.tags["exceedance.trial_id"] for r in runs if r.info.status == "FINISHED")
    width = len(str(trials))  # keras-tuner pads trial ids to the budget's digits
    assert finished == Counter({f"{i:0{width}d}": 1 for i in range(trials)})
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = parents(client, name)
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    return runs


def worker_processes(chief: int) -> dict[str, int]:
    """The chief's live worker processes: their names (keras-tuner tuner ids) -> pids."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"PPid:\t{chief}\n" not in (proc / "status").read_text():
                continue
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except OSError:
            continue
        if "KERASTUNER_TUNER_ID" in env:
            found[env["KERASTUNER_TUNER_ID"]] = int(proc.name)
    return found


def running_trials(sweep: subprocess.Popen, folder: Path, at_least: int) -> list:
    """Once the oracle is served, wait until `at_least` trial runs are RUNNING; return them."""
    for line in sweep.stdout:
        if line.startswith("oracle served on"):
            break
    client = client_for(folder)  # the store exists: the parent run opened before the oracle was served
    for _ in range(600):
        running = [r for r in trial_runs(client) if r.info.status == "RUNNING"]
        if len(running) >= at_least:
            return running
        time.sleep(0.1)
    raise AssertionError("the workers' trials never started")


@pytest.mark.slow
def test_two_workers_share_one_search_and_record_each_trial_once(tmp_path):
    done = command("sweep", SHARED, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "oracle served on 127.0.0.1:" in done.stdout
    lines = [line for line in done.stdout.splitlines() if " trial " in line]
    assert len(lines) == 8 and all(line.startswith(("[worker 1] trial", "[worker 2] trial")) for line in lines)
    assert "8 finished trials in experiment 'exceedance'" in done.stdout
    assert "sigmoid_count\n" not in done.stdout  # keras-tuner's stray print of a conditional value
    client = client_for(tmp_path)
    runs = each_trial_finished_once(client, 8)
    workers = {r.data.tags["exceedance.worker"] for r in runs}
    assert len(workers) <= 2 and all(w.endswith(("-w1", "-w2")) for w in workers)
    (parent,) = parents(client)
    # The parent's summary counts every worker's trials.
    assert client.get_metric_history(parent.info.run_id, "finished_trials")[-1].value == 8
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlruns"]


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_killed_runs_and_its_trials_run_once_more(tmp_path):
    sweep = sweep_process(SLOW, tmp_path)
    try:
        running = running_trials(sweep, tmp_path, at_least=6)  # both workers' steps in flight
        victim = running[0].data.tags["exceedance.worker"]
        os.kill(worker_processes(sweep.pid)[victim], signal.SIGKILL)
        out, _ = sweep.communicate(timeout=600)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, out[-3000:]
    assert "ended (killed by SIGKILL); trials " in out and "go to another worker" in out
    client = client_for(tmp_path)
    runs = each_trial_finished_once(client, 6)
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 3 and {r.data.tags["exceedance.worker"] for r in killed} == {victim}
    retried = {r.data.tags["exceedance.trial_id"] for r in killed}
    for run in runs:
        if run.info.status == "FINISHED" and run.data.tags["exceedance.trial_id"] in retried:
            assert run.data.tags["exceedance.worker"] != victim


@pytest.mark.slow
def test_the_chief_killed_and_restarted_resumes_the_search(tmp_path):
    sweep = sweep_process(SLOW, tmp_path)
    try:
        running_trials(sweep, tmp_path, at_least=6)
        workers = list(worker_processes(sweep.pid).values())
        assert len(workers) == 2
        os.kill(sweep.pid, signal.SIGKILL)
        sweep.wait(timeout=30)
    finally:
        sweep.kill()
    assert all_gone(workers), "workers outlived their chief"
    resumed = command("sweep", SLOW, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "6 finished trials in experiment 'exceedance'" in resumed.stdout
    runs = each_trial_finished_once(client_for(tmp_path), 6)
    assert len([r for r in runs if r.info.status == "KILLED"]) == 6  # the first attempts, cut short


@pytest.mark.slow
def test_workers_from_another_command_join_the_search(tmp_path):
    port = free_port()
    longer = [*SHARED, "search.max_trials=16", "search.epochs=300"]  # still running when the others join
    chief = sweep_process([*longer, f"search.listen=127.0.0.1:{port}"], tmp_path)
    join = f"search.join=127.0.0.1:{port}"
    try:
        other = subprocess.Popen(  # another search's settings: refused, as the same one joins
            [sys.executable, "-m", "exceedance.cli.sweep", *longer, "search.epochs=299", join],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        joined = command("sweep", [*longer, join], tmp_path)
        _, refused = other.communicate(timeout=600)
        out, _ = chief.communicate(timeout=600)
    finally:
        chief.kill()
    assert other.returncode == 2 and "Traceback" not in refused
    assert (
        refused.strip()
        .splitlines()[-1]
        .startswith("exceedance-sweep: error: search.join: no running search 'exceedance-")
    )
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert chief.returncode == 0, out[-3000:]
    assert f"joining the search served at 127.0.0.1:{port} with 2 workers" in joined.stdout
    runs = each_trial_finished_once(client_for(tmp_path), 16)
    commands = {r.data.tags["exceedance.worker"].split("-")[-2] for r in runs}  # host-pid-wN
    assert len(commands) == 2, "the joining command's workers trained none of the trials"


def test_a_tuner_id_belongs_to_its_worker_alone():
    assert belongs("host-12-w1", "host-12-w1") and belongs("host-12-w1-3", "host-12-w1")
    assert not belongs("host-12-w12-0", "host-12-w1") and not belongs("host-123-w1-0", "host-12-w1")
    assert not belongs("host-12-w1-x", "host-12-w1")


def test_bad_worker_settings_are_one_line_before_tensorflow(tmp_path):
    for override, expected in (
        ("search.workers=0", "search.workers: must be in 1..256, got 0"),
        ("search.listen=localhost", "search.listen: must be HOST:PORT with a port in 0..65535, got 'localhost'"),
        ("search.join=127.0.0.1:0", "search.join: must be HOST:PORT with a port in 1..65535, got '127.0.0.1:0'"),
        ("search.join=db:99999", "search.join: must be HOST:PORT with a port in 1..65535, got 'db:99999'"),
    ):
        done = command("sweep", [*TINY, override], tmp_path)
        assert done.returncode == 2
        assert last_line(done) == f"exceedance-sweep: error: {expected}"
        assert "tensorflow imported: False" in done.stdout


@pytest.mark.slow
def test_joining_a_search_nobody_serves_is_one_line(tmp_path):
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from exceedance import workers; workers.JOIN_WAIT_S = 1.0; "
            "from exceedance.cli.sweep import main; sys.argv[0] = 'exceedance-sweep'; main()",
            *TINY,
            f"search.join=127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert last_line(done) == (
        f"exceedance-sweep: error: search.join: no search's oracle answers at 127.0.0.1:{port} after 1 s; start "
        "the search there first (the same command with search.workers=N and search.listen=HOST:PORT)"
    )

"""Reliability: failed trials, resume after SIGKILL, concurrent writers, a real tracking server."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import (
    SLOW_STEPS,
    SLOW_TRIALS,
    TINY,
    all_gone,
    children,
    compose_config,
    free_port,
    in_second_step,
    in_second_trial,
    sweep_process,
    trial_runs,
)
from exceedance.errors import SearchStopped
from exceedance.models import build_mlp
from exceedance.run_search import run

pytestmark = pytest.mark.slow
_builds = {"count": 0}


def flaky_mlp(n_features, n_outputs, **fields):
    """A builder whose first call raises, like a user model with a bug in one configuration."""
    _builds["count"] += 1
    if _builds["count"] == 1:
        raise ValueError("layer width must be even")
    return build_mlp(n_features, n_outputs, **fields)


@pytest.mark.parametrize("steps, trials, failed_ids", [("1", 3, ["0"]), ("2", 4, ["0", "1"])])
def test_a_failed_build_is_recorded_and_the_search_goes_on(tmp_path, tiny, steps, trials, failed_ids):
    # one model per trial: that trial fails; several per step: the step's trials fail
    _builds["count"] = 0
    overrides = [f"search.max_trials={trials}", f"search.trials_per_step={steps}"]
    result = run(
        compose_config([*tiny, *overrides, "model._target_=test_reliability.flaky_mlp"]),
        report=lambda _: None,
    )
    runs = trial_runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert sorted(r.data.tags["exceedance.trial_id"] for r in failed) == failed_ids and len(runs) == trials
    assert all("layer width must be even" in r.data.tags["exceedance.failure_reason"] for r in failed)
    assert result.trials == trials - len(failed_ids)
    assert not {r.info.run_id for r in failed} & {row["run_id"] for row in result.front}


@pytest.mark.parametrize("steps, runs_failed", [("1", 2), ("auto", 5)])  # auto: all five in one step
def test_diverging_trials_fail_and_stop_the_search_with_a_clear_message(tmp_path, tiny, steps, runs_failed):
    nan = [
        "penalty=l2",
        "penalty.lam.low=1e30",
        "penalty.lam.high=1e30",
        "search.learning_rate.low=100",
        "search.learning_rate.high=100",
        "search.max_trials=5",
        "search.max_consecutive_failures=2",
        f"search.trials_per_step={steps}",
    ]
    with pytest.raises(SearchStopped, match=r"2 trials in a row failed .*training diverged"):
        run(compose_config([*tiny, *nan]), report=lambda _: None)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = trial_runs(client)
    assert [r.info.status for r in runs] == ["FAILED"] * runs_failed
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED"
    assert "pareto.csv" not in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.parametrize("oracle", ["random", "grid", "pareto"])
def test_rerun_after_sigkill_resumes_the_same_search(tmp_path, oracle):
    args = [f"search={oracle}", *SLOW_TRIALS]
    first = sweep_process(args, tmp_path)
    client = in_second_trial(first, tmp_path)
    recorders = children(first.pid)
    assert recorders, "the sweep records MLflow from a process of its own"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert all_gone(recorders), "the recording process outlived a killed sweep"

    second = sweep_process(args, tmp_path)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    runs = trial_runs(client)
    finished = [r.data.tags["exceedance.trial_id"] for r in runs if r.info.status == "FINISHED"]
    assert sorted(finished) == ["0", "1", "2"]
    assert [r.info.status for r in runs if r.info.status not in ("FINISHED",)] == ["KILLED"]
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    assert client.get_run(parents.pop()).info.status == "FINISHED"
    assert "trial 0:" not in out, "a finished trial was run again"


@pytest.mark.parametrize("oracle", ["random", "pareto"])
def test_rerun_after_sigkill_mid_step_finishes_every_trial_exactly_once(tmp_path, oracle):
    args = [f"search={oracle}", *SLOW_STEPS]
    first = sweep_process(args, tmp_path)
    client = in_second_step(first, tmp_path)
    assert sorted(r.info.status for r in trial_runs(client)) == ["FINISHED"] * 3 + ["RUNNING"] * 3
    first.send_signal(signal.SIGKILL)
    first.wait()

    second = sweep_process(args, tmp_path)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    runs = trial_runs(client)
    finished = [r.data.tags["exceedance.trial_id"] for r in runs if r.info.status == "FINISHED"]
    assert sorted(finished) == ["0", "1", "2", "3", "4", "5"], "a trial was lost or run twice"
    killed = [r.data.tags["exceedance.trial_id"] for r in runs if r.info.status == "KILLED"]
    assert sorted(killed) == ["3", "4", "5"]
    assert "trial 0:" not in out and "(1/3 of a step)" in out


def test_a_dead_recording_process_stops_the_search_with_one_line_and_a_rerun_resumes(tmp_path):
    sweep = sweep_process(SLOW_TRIALS, tmp_path, stderr=subprocess.PIPE)
    client = in_second_trial(sweep, tmp_path)
    (recorder,) = [pid for pid in children(sweep.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(recorder, signal.SIGKILL)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1
    assert "the MLflow recording process died" in err.strip().splitlines()[-1]
    assert "Traceback" not in err

    rerun = sweep_process(SLOW_TRIALS, tmp_path)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert "trial 0:" not in out, "a recorded trial was run again"
    finished = [r.data.tags["exceedance.trial_id"] for r in trial_runs(client) if r.info.status == "FINISHED"]
    assert sorted(finished) == ["0", "1", "2"]


def test_ctrl_c_ends_the_search_in_order_with_one_line(tmp_path):
    sweep = sweep_process(SLOW_TRIALS, tmp_path, stderr=subprocess.PIPE)
    client = in_second_trial(sweep, tmp_path)
    recorders = children(sweep.pid)
    os.killpg(sweep.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the recorder gets it too
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130
    assert err.strip().splitlines()[-1] == "exceedance-sweep: interrupted (Ctrl-C); everything recorded so far is kept"
    assert "Traceback" not in err
    status = {r.data.tags["exceedance.trial_id"]: r.info.status for r in trial_runs(client)}
    assert status == {"0": "FINISHED", "1": "KILLED"}
    finished = next(r for r in trial_runs(client) if r.info.status == "FINISHED")
    assert "predictions.png" in {a.path for a in client.list_artifacts(finished.info.run_id)}
    assert client.get_run(finished.data.tags["mlflow.parentRunId"]).info.status == "KILLED"
    assert all_gone(recorders)


def test_three_parallel_writers_on_a_brand_new_sqlite_store(tmp_path):
    jobs = [sweep_process([*TINY, f"search.seed={seed}"], tmp_path) for seed in range(3)]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], outputs
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = trial_runs(client)
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 3


def test_sweep_logs_to_a_real_tracking_server(tmp_path, tiny):
    port = free_port()
    store = tmp_path / "server-store"
    overrides = [
        *TINY,
        f"search.directory={tmp_path}/tuner",
        "tracking=server",
        f"tracking.port={port}",
        f"tracking.store_dir={store}",
    ]
    try:
        result = run(compose_config(overrides), report=lambda _: None)
        assert result.tracking_uri == f"http://127.0.0.1:{port}"
        client = MlflowClient(result.tracking_uri)
        runs = trial_runs(client)
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        assert "pareto.png" in {a.path for a in client.list_artifacts(result.parent_run_id)}
        assert (store / "mlflow.db").is_file()
    finally:
        pid_file = store / "server.pid"
        if pid_file.exists():
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)

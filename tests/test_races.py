"""Processes against each other and against faults: the same search twice at once, another MLflow
process creating the store, a tracking server that dies, a full disk, Ctrl-C at awkward moments,
and the same command giving the same search in two fresh directories.

What a user sees is asserted: exit codes, the last line, and the runs in MLflow by status (never
one left RUNNING, never a trial twice).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import (
    SLOW_TRIALS,
    TINY,
    all_gone,
    children,
    command,
    free_port,
    last_line,
    serve_mlflow,
    stop_process,
    sweep_process,
    trial_runs,
)

pytestmark = pytest.mark.slow


def store_client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def all_runs(client: MlflowClient, name: str = "exceedance"):
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def running(client: MlflowClient, name: str = "exceedance") -> list[str]:
    return [r.info.run_name for r in all_runs(client, name) if r.info.status == "RUNNING"]


def wait_for_line(sweep: subprocess.Popen, prefix: str) -> list[str]:
    seen = []
    for line in sweep.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"the sweep ended before printing {prefix!r}: {''.join(seen)[-2000:]}")


def test_the_same_command_gives_the_same_search_in_two_fresh_directories(tmp_path):
    """Proposals are equal exactly; metrics to 1e-5 (CPU, the sweep's own thread settings)."""
    args = [*TINY, "search.max_trials=3", "search.intra_op_threads=1", "search.inter_op_threads=1"]
    found = []
    for clone in ("a", "b"):
        (tmp_path / clone).mkdir()
        done = command("sweep", args, tmp_path / clone)
        assert done.returncode == 0, done.stderr[-3000:]
        runs = trial_runs(store_client(tmp_path / clone))
        found.append({r.data.tags["exceedance.trial_id"]: r.data for r in runs})
    first, second = found
    assert sorted(first) == sorted(second) == ["0", "1", "2"]
    for trial_id, data in first.items():
        other = second[trial_id]
        searched = ("form", "threshold", "lam", "temperature", "learning_rate")
        assert {k: data.params.get(k) for k in searched} == {k: other.params.get(k) for k in searched}
        for key in ("val_loss", "val_exceedance_rate", "val_within_tolerance"):
            assert data.metrics[key] == pytest.approx(other.metrics[key], rel=1e-5, abs=1e-6), key
        test = "test/exceedance_rate"
        assert float(data.tags[test]) == pytest.approx(float(other.tags[test]), rel=1e-5, abs=1e-6)
    # Seed 0 is a seed like any other (keras-tuner would have made it random), and another
    # seed gives other proposals.
    (tmp_path / "c").mkdir()
    assert command("sweep", [*args, "search.seed=1"], tmp_path / "c").returncode == 0
    third = {r.data.tags["exceedance.trial_id"]: r.data.params for r in trial_runs(store_client(tmp_path / "c"))}
    assert [third[t].get("lam") for t in "012"] != [first[t].params.get("lam") for t in "012"]


@pytest.mark.parametrize("apart_s", [0, 4])
def test_two_identical_sweeps_at_once_run_the_search_once(tmp_path, apart_s):
    first = sweep_process(SLOW_TRIALS, tmp_path, stderr=subprocess.PIPE)
    time.sleep(apart_s)
    second = sweep_process(SLOW_TRIALS, tmp_path, stderr=subprocess.PIPE)
    ended = [(p.communicate(timeout=600), p.returncode) for p in (first, second)]
    codes = sorted(code for _, code in ended)
    assert codes == [0, 1], [err[-2000:] for (_, err), _ in ended]
    (_, refused_err), _ = next(e for e in ended if e[1] == 1)
    line = refused_err.strip().splitlines()[-1]
    assert "is already running (process " in line and "run this one under another name=" in line, line
    assert "Traceback" not in refused_err
    client = store_client(tmp_path)
    ids = Counter(r.data.tags["exceedance.trial_id"] for r in trial_runs(client))
    assert ids == {"0": 1, "1": 1, "2": 1}, "a trial was run twice"
    assert len([r for r in all_runs(client) if r.data.tags["exceedance.role"] == "search"]) == 1
    assert running(client) == []


def test_a_sweep_beside_another_mlflow_process_creating_the_same_new_store(tmp_path):
    """`mlflow ui`, a notebook or a second job may create the store at the very moment the sweep
    does; MLflow migrates a new store's schema without a lock. Both must end well."""
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir()
    other = subprocess.Popen(
        [sys.executable, "-c", f"from mlflow import MlflowClient; MlflowClient({store!r}).search_experiments()"],
        stderr=subprocess.PIPE,
        text=True,
    )
    done = command("sweep", TINY, tmp_path)
    other.communicate(timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(trial_runs(store_client(tmp_path))) == 2


def _server(port: int, store: Path) -> subprocess.Popen:
    backend = ("--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--artifacts-destination", str(store / "a"))
    return serve_mlflow(["server", *backend, "--workers", "1"], port)


def test_a_tracking_server_that_dies_mid_sweep_stops_it_with_one_line_and_a_rerun_resumes(tmp_path):
    port, store = free_port(), tmp_path / "server"
    server = _server(port, store)
    uri = f"http://127.0.0.1:{port}"
    args = [*SLOW_TRIALS, f"tracking.uri={uri}"]
    try:
        sweep = sweep_process(args, tmp_path, stderr=subprocess.PIPE)
        wait_for_line(sweep, "trial 0:")
        stop_process(server)
        started = time.monotonic()
        _, err = sweep.communicate(timeout=180)
        waited = time.monotonic() - started
        assert sweep.returncode == 1, err[-3000:]
        assert "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert line == (
            f"exceedance-sweep: search stopped: the tracking server at {uri} stopped answering; "
            "start it again, then rerun the same command to resume"
        )
        assert waited < 90, f"the sweep took {waited:.0f} s to notice"

        server = _server(port, store)
        rerun = sweep_process(args, tmp_path)
        out, _ = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, out
        assert "trial 0:" not in out, "a recorded trial was run again"
        client = MlflowClient(uri)
        finished = [r.data.tags["exceedance.trial_id"] for r in trial_runs(client) if r.info.status == "FINISHED"]
        assert sorted(finished) == ["0", "1", "2"]
        assert running(client) == []
    finally:
        stop_process(server)


def test_secrets_in_the_tracking_uri_reach_no_file_and_no_printed_line(tmp_path):
    password = "s3cretpw"
    port, store = free_port(), tmp_path / "server"
    server = _server(port, store)
    uri = f"http://alice:{password}@127.0.0.1:{port}"
    try:
        printed = []
        for args in (
            [*TINY, f"tracking.uri={uri}", "name=secret"],
            ["-m", *TINY, f"tracking.uri={uri}", "name=secret", "penalty=l1,l2"],
        ):
            done = command("sweep", args, tmp_path)
            assert done.returncode == 0, done.stderr[-3000:]
            printed.append(done.stdout + done.stderr)
        pick = command("pick", ["secret", "--knee", "--tracking-uri", uri], tmp_path)
        assert pick.returncode == 0, pick.stderr[-3000:]
        printed.append(pick.stdout + pick.stderr)
        assert f"MLFLOW_TRACKING_URI='http://alice:***@127.0.0.1:{port}' exceedance-train" in pick.stdout
        assert password not in "".join(printed)
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
        assert leaked == []
        client = MlflowClient(f"http://127.0.0.1:{port}")
        parents = [r for r in all_runs(client, "secret") if r.data.tags["exceedance.role"] == "search"]
        assert len(parents) == 3
        for run in all_runs(client, "secret"):
            assert password not in json.dumps([run.data.tags, run.data.params])
    finally:
        stop_process(server)


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill: {done.stderr.decode().strip()}")


def _fill(path: Path) -> None:
    for name, block in (("filler", 65536), ("filler-small", 512)):
        with (path / name).open("wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * block)
            except OSError:
                pass


@pytest.mark.parametrize("full", ["tuner", "mlruns"])
def test_a_full_disk_is_one_line_naming_what_could_not_be_written(tmp_path, full):
    disk = tmp_path / full
    _tmpfs(disk, "4m")
    try:
        args = [*TINY, f"search.directory={tmp_path}/tuner", f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db"]
        first = command("sweep", args, tmp_path)  # a store and a search exist
        assert first.returncode == 0, first.stderr[-3000:]
        _fill(disk)
        done = command("sweep", [*args, "search.max_trials=4"], tmp_path)
        assert done.returncode == 1, done.stderr[-3000:]
        line = last_line(done)
        assert "no space left to write" in line or "is full" in line, line
        assert str(disk) in line, line
        (disk / "filler").unlink()
        (disk / "filler-small").unlink()
        assert running(store_client(tmp_path)) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("full", ["tuner", "mlruns"])
def test_a_disk_that_fills_mid_search_is_one_line_and_leaves_nothing_running(tmp_path, full):
    disk = tmp_path / full
    _tmpfs(disk, "8m")
    args = [*SLOW_TRIALS, f"search.directory={tmp_path}/tuner", f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db"]
    try:
        sweep = sweep_process(args, tmp_path, stderr=subprocess.PIPE)
        wait_for_line(sweep, "trial 0:")
        _fill(disk)
        _, err = sweep.communicate(timeout=300)
        assert sweep.returncode == 1, err[-3000:]
        assert "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert ("no space left to write" in line or "is full" in line) and str(disk) in line, line
        (disk / "filler").unlink()
        (disk / "filler-small").unlink()
        if full == "tuner":  # a full store cannot take the runs' end: the rerun records it
            assert running(store_client(tmp_path)) == []
        rerun = sweep_process(args, tmp_path)
        out, _ = rerun.communicate(timeout=600)
        assert rerun.returncode == 0, out
        client = store_client(tmp_path)
        finished = [r.data.tags["exceedance.trial_id"] for r in trial_runs(client) if r.info.status == "FINISHED"]
        assert sorted(finished) == ["0", "1", "2"], "a trial was lost or run twice"
        assert running(client) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_ctrl_c_just_as_the_last_trial_ends_leaves_nothing_running(tmp_path):
    sweep = sweep_process([*TINY, "search.max_trials=3"], tmp_path, stderr=subprocess.PIPE)
    wait_for_line(sweep, "trial 2:")
    os.killpg(sweep.pid, signal.SIGINT)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode in (0, 130), err[-3000:]
    assert "Traceback" not in err
    assert running(store_client(tmp_path)) == []


def test_ctrl_c_three_times_is_one_line_and_leaves_nothing_running(tmp_path):
    sweep = sweep_process(SLOW_TRIALS, tmp_path, stderr=subprocess.PIPE)
    wait_for_line(sweep, "trial 0:")
    recorders = children(sweep.pid)
    for _ in range(3):
        os.killpg(sweep.pid, signal.SIGINT)
        time.sleep(0.05)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "exceedance-sweep: interrupted (Ctrl-C); everything recorded so far is kept"
    assert all_gone(recorders)
    assert running(store_client(tmp_path)) == []


def test_ctrl_c_on_a_multirun_leaves_nothing_running(tmp_path):
    sweep = sweep_process(["-m", "+sweeps=penalty_forms", "penalty=l1,l2", *SLOW_TRIALS], tmp_path)
    wait_for_line(sweep, "[job ")  # a multirun's trial lines: "[job 0 penalty=l1] trial 0: ..."
    time.sleep(1.0)
    os.killpg(sweep.pid, signal.SIGINT)
    sweep.communicate(timeout=180)
    assert sweep.returncode != 0
    client = store_client(tmp_path)
    deadline = time.monotonic() + 30  # recording processes close what their killed job left open
    while running(client, "penalty_forms") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running(client, "penalty_forms") == []
    assert all_runs(client, "penalty_forms"), "the jobs recorded nothing"


def test_a_search_in_which_no_trial_finished_exits_1_and_says_why(tmp_path):
    diverging = [
        *("penalty=l2", "penalty.lam.low=1e30", "penalty.lam.high=1e30"),
        *("search.learning_rate.low=100", "search.learning_rate.high=100"),
        *("search.max_trials=2", "search.max_consecutive_failures=3"),
    ]
    done = command("sweep", [*TINY, *diverging], tmp_path)
    assert done.returncode == 1
    line = last_line(done)
    assert line.startswith("exceedance-sweep: search ended with no finished trial; last reason: training diverged")
    assert line.endswith("Narrow penalty.lam or lower search.learning_rate.")
    parent = next(r for r in all_runs(store_client(tmp_path)) if r.data.tags["exceedance.role"] == "search")
    assert parent.info.status == "FAILED"


def test_unreadable_tuner_state_is_one_line_and_a_finished_search_stays_finished(tmp_path):
    assert command("sweep", TINY, tmp_path).returncode == 0
    (state,) = (tmp_path / "mlruns" / "tuner").glob("*/oracle.json")
    state.write_text("{ not json")
    done = command("sweep", TINY, tmp_path)
    assert done.returncode == 2
    line = last_line(done)
    assert f"keras-tuner's saved state {state} cannot be read" in line
    assert line.endswith("rerun with search.overwrite=true to start this search over (its MLflow runs are kept)")
    parents = [r for r in all_runs(store_client(tmp_path)) if r.data.tags["exceedance.role"] == "search"]
    assert [p.info.status for p in parents] == ["FINISHED"]
    again = command("sweep", [*TINY, "search.overwrite=true"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]

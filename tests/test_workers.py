"""Several workers on one search (`search.workers`): one oracle served by the command, trials
trained by worker processes, every trial recorded once under one parent; a worker killed
mid-trial, the chief killed and restarted, workers joining from another command, and a joined
worker that dies (its whole command killed) or stops answering and comes back (heartbeats)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from mlflow import MlflowClient

from conftest import TINY, all_gone, command, free_port, last_line, sweep_process, trial_runs
from exceedance import heartbeat
from exceedance.errors import ConfigError
from exceedance.heartbeat import belongs

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


# A chief with two workers and a command joining it with one, two trials a step each, about ten
# seconds a step: the joined worker holds trials long enough to be killed or frozen mid-step.
JOINED = [
    "data.n_samples=6000",
    "search.max_trials=12",
    "search.epochs=300",
    "model.hidden_units=[16]",
    "search.trials_per_step=2",
    "search.workers=2",
]
TIMEOUT_S = 6  # the chief's heartbeat timeout in these tests (EXCEEDANCE_WORKER_TIMEOUT_S)


def chief_and_joined(folder: Path, monkeypatch) -> tuple[subprocess.Popen, subprocess.Popen, str, list]:
    """A chief serving the search, and a command joining it with one worker, each in its own
    process group (as on two hosts), once the joined worker trains trials; returns both, the
    joined worker's name and its RUNNING trial runs."""
    monkeypatch.setenv(heartbeat.TIMEOUT_ENV, str(TIMEOUT_S))
    port = free_port()
    chief = sweep_process([*JOINED, f"search.listen=127.0.0.1:{port}"], folder)
    for line in chief.stdout:
        if line.startswith("oracle served on"):
            break
    joined = sweep_process([*JOINED, "search.workers=1", f"search.join=127.0.0.1:{port}"], folder, subprocess.PIPE)
    client = client_for(folder)
    for _ in range(1200):
        running = [
            r
            for r in trial_runs(client)
            if r.info.status == "RUNNING" and f"-{joined.pid}-w1" in r.data.tags["exceedance.worker"]
        ]
        if len(running) == 2:  # its step's two trials
            return chief, joined, running[0].data.tags["exceedance.worker"], running
        time.sleep(0.1)
    raise AssertionError("the joined worker's trials never started")


def line_within(sweep: subprocess.Popen, start: str, seconds: float) -> str:
    """The first line of the sweep's output that starts with `start`, which must come within `seconds`."""
    began = time.monotonic()
    for line in sweep.stdout:
        if line.startswith(start):
            assert time.monotonic() - began < seconds, f"{line!r} came after {time.monotonic() - began:.0f} s"
            return line.strip()
    raise AssertionError(f"no line starting {start!r}")


def taken_back(client: MlflowClient, victim: str, held: list, line: str) -> None:
    """The chief's line names the joined worker and the trials it held; the search finished each
    trial once, the joined worker's runs of them KILLED, and other workers finished them."""
    trials = sorted(r.data.tags["exceedance.trial_id"] for r in held)
    assert line == (
        f"joined worker {victim} ended (stopped answering for {TIMEOUT_S} s); trials {', '.join(trials)} go to "
        "another worker"
    )
    runs = each_trial_finished_once(client, 12)
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert {r.data.tags["exceedance.worker"] for r in killed} == {victim}
    assert sorted(r.data.tags["exceedance.trial_id"] for r in killed) == trials
    finished = {r.data.tags["exceedance.trial_id"]: r for r in runs if r.info.status == "FINISHED"}
    assert all(finished[t].data.tags["exceedance.worker"] != victim for t in trials)


@pytest.mark.slow
def test_a_joined_command_killed_mid_trial_has_its_trials_taken_back_within_the_timeout(tmp_path, monkeypatch):
    chief, joined, victim, held = chief_and_joined(tmp_path, monkeypatch)
    try:
        os.killpg(joined.pid, signal.SIGKILL)  # the joining command, its worker and its recording process: a host gone
        line = line_within(chief, "joined worker ", TIMEOUT_S + 15)
        out, _ = chief.communicate(timeout=600)
    finally:
        chief.kill()
        joined.kill()
    assert chief.returncode == 0, out[-3000:]
    assert "12 finished trials in experiment 'exceedance'" in out
    taken_back(client_for(tmp_path), victim, held, line)


@pytest.mark.slow
def test_a_joined_worker_that_comes_back_after_the_timeout_is_refused_and_ends_no_trial(tmp_path, monkeypatch):
    chief, joined, victim, held = chief_and_joined(tmp_path, monkeypatch)
    try:
        (worker,) = worker_processes(joined.pid).values()
        os.kill(worker, signal.SIGSTOP)  # a pause longer than the timeout (a GC pause, a swapped-out host)
        line = line_within(chief, "joined worker ", TIMEOUT_S + 15)
        os.kill(worker, signal.SIGCONT)
        said, stopped = joined.communicate(timeout=120)
        out, _ = chief.communicate(timeout=600)
    finally:
        chief.kill()
        joined.kill()
    assert chief.returncode == 0, out[-3000:]
    assert (
        f"[worker 1] stopped: the search's chief gave up on worker {victim} after {TIMEOUT_S} s without a call" in said
    )
    assert joined.returncode == 1
    assert stopped.strip().splitlines()[-1] == (  # nothing after it (a warning of the worker's leftovers)
        "exceedance-sweep: search stopped: every worker stopped ([worker 1] exit code 1); rerun the same command "
        "to resume"
    )
    taken_back(client_for(tmp_path), victim, held, line)


def test_the_chief_refuses_a_worker_it_gave_up_on_and_a_trial_its_caller_does_not_hold(tmp_path):
    from concurrent import futures

    import keras_tuner as kt
    from keras_tuner.src import protos

    from exceedance.workers import requeue

    space = kt.HyperParameters()
    space.Float("x", 0, 1)
    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("val_loss", "min"), max_trials=4)
    oracle._set_project_dir(str(tmp_path), "search")
    oracle.update_space(space)
    oracle.max_consecutive_failed_trials = None
    liveness = heartbeat.Liveness(0.3)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    protos.get_service_grpc().add_OracleServicer_to_server(heartbeat.watched_servicer(oracle, liveness), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stub = protos.get_service_grpc().OracleStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    service = protos.get_service()
    a, b = "h-1-w1", "h-2-w1"

    def call(method: str, request, name: str | None, beat: bool = False):
        metadata = ((heartbeat.NAME_KEY, name),) if name else ()
        return getattr(stub, method)(request, metadata=metadata + (((heartbeat.BEAT_KEY, "1"),) if beat else ()))

    def refused(method: str, request, name: str | None) -> str:
        with pytest.raises(grpc.RpcError) as raised:
            call(method, request, name)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        return raised.value.details()

    def end(trial_id: str):
        trial = kt.engine.trial.Trial(oracle.get_space(), trial_id=trial_id, status="COMPLETED")
        return service.EndTrialRequest(trial=trial.to_proto())

    try:
        assert refused("CreateTrial", service.CreateTrialRequest(tuner_id=f"{a}-0"), None) == (
            "exceedance: a call that names no worker; start workers with exceedance-sweep"
        )
        trial_id = call("CreateTrial", service.CreateTrialRequest(tuner_id=f"{a}-0"), a).trial.trial_id
        update = service.UpdateTrialRequest(trial_id=trial_id, metrics={"val_loss": 0.5})
        # A live worker that does not hold the trial can neither report it nor end it.
        for method, request in (("UpdateTrial", update), ("EndTrial", end(trial_id))):
            assert refused(method, request, b) == (
                f"exceedance: trial {trial_id} is not this worker's to report ({b} does not hold it)"
            )
        # A heartbeat is answered empty, a worker's own GetSpace with the space.
        assert call("GetSpace", service.GetSpaceRequest(), b, beat=True).ByteSize() == 0
        assert call("GetSpace", service.GetSpaceRequest(), b).hyperparameters.space.float_space
        assert not liveness.give_up(a)  # it was heard from just now
        time.sleep(0.5)
        call("GetSpace", service.GetSpaceRequest(), b, beat=True)
        assert liveness.silent() == [a] and not liveness.give_up(b) and liveness.give_up(a)
        assert requeue(oracle, a, set()) == ([trial_id], [])
        gave_up = (
            f"the search's chief gave up on worker {a} after 0.3 s without a call and gave its trials to other workers"
        )
        # Every call of the worker given up on is refused, its trial's report and end included.
        assert refused("GetSpace", service.GetSpaceRequest(), a) == f"exceedance: {gave_up}"
        assert refused("CreateTrial", service.CreateTrialRequest(tuner_id=f"{a}-0"), a) == f"exceedance: {gave_up}"
        assert refused("EndTrial", end(trial_id), a) == f"exceedance: {gave_up}"
        # The trial goes to the next worker that asks, which ends it, once.
        assert call("CreateTrial", service.CreateTrialRequest(tuner_id=f"{b}-0"), b).trial.trial_id == trial_id
        call("UpdateTrial", update, b)
        call("EndTrial", end(trial_id), b)
        assert refused("EndTrial", end(trial_id), b).endswith(f"({b} does not hold it)")  # not twice
        assert oracle.end_order == [trial_id] and oracle.trials[trial_id].status == "COMPLETED"
        assert not oracle.ongoing_trials
    finally:
        server.stop(grace=None)


def test_the_heartbeat_timeout_is_a_number_of_seconds_of_at_least_three_heartbeats(monkeypatch):
    monkeypatch.delenv(heartbeat.TIMEOUT_ENV, raising=False)
    assert heartbeat.timeout_s() == 30.0
    monkeypatch.setenv(heartbeat.TIMEOUT_ENV, "4.5")
    assert heartbeat.timeout_s() == 4.5
    for value in ("soon", "2", "-30", "nan", "inf", "0"):
        monkeypatch.setenv(heartbeat.TIMEOUT_ENV, value)
        with pytest.raises(ConfigError) as raised:
            heartbeat.timeout_s()
        assert str(raised.value) == (
            f"EXCEEDANCE_WORKER_TIMEOUT_S: must be a number of seconds >= 3 (three heartbeats), got {value!r}; "
            "unset it for the default 30"
        )

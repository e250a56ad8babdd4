"""A real PostgreSQL store: sweeps into it directly and through an MLflow server on it, parallel
jobs, two workers on one search, the pick's SQL reader, a registered model, and a password that
never leaks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import postgres
import pytest
from mlflow import MlflowClient

from conftest import TINY, command, free_port, serve_mlflow, stop_process
from exceedance.recording.reader import DatabaseTrialStore

pytestmark = pytest.mark.slow
TWO_WORKERS = ["search.workers=2", "search.max_trials=4", "search.trials_per_step=1"]


@pytest.fixture(scope="module")
def database():
    if postgres.binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL tests need Debian's postgresql; .ci/run installs it")
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    with postgres.cluster(free_port()) as uri:
        yield uri


def no_password_anywhere(printed: list[str], folder: Path, client: MlflowClient, experiment: str) -> None:
    """The URI's password reaches no printed line, no file under `folder`, no param or tag."""
    assert postgres.PASSWORD not in "".join(printed)
    leaked = [p for p in folder.rglob("*") if p.is_file() and postgres.PASSWORD.encode() in p.read_bytes()]
    assert leaked == []
    found = client.get_experiment_by_name(experiment)
    for run in client.search_runs([found.experiment_id]):
        assert postgres.PASSWORD not in json.dumps([run.data.tags, run.data.params])


def test_a_sweep_two_jobs_a_pick_and_a_registered_model_in_postgresql(database, tmp_path):
    printed = []
    done = command("sweep", [*TINY, f"tracking.uri={database}", "name=pg"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    printed.append(done.stdout + done.stderr)
    jobs = command(
        "sweep", ["-m", "+sweeps=penalty_forms", "penalty=l1,l2", *TINY, f"tracking.uri={database}"], tmp_path
    )
    assert jobs.returncode == 0, jobs.stderr[-3000:]
    printed.append(jobs.stdout + jobs.stderr)
    assert "penalty_forms: 4 finished trials of 2 searches" in jobs.stdout

    client = MlflowClient(database)
    # The pick's SQL reader returns exactly what MLflow's client returns.
    reader = DatabaseTrialStore(database)
    for name, trials in (("pg", 2), ("penalty_forms", 4)):
        experiment_id = reader.experiment_id(name)
        found = reader.finished_trials(experiment_id)
        runs = client.search_runs(
            [experiment_id], "tags.`exceedance.role` = 'trial' and attributes.status = 'FINISHED'"
        )
        assert len(found) == len(runs) == trials
        by_id = {r.info.run_id: r for r in runs}
        for trial, parent in found:
            run = by_id[trial.run_id]
            assert trial.quality == run.data.metrics["val_within_tolerance"]
            assert trial.exceedance_rate == run.data.metrics["val_exceedance_rate"]
            assert trial.test_exceedance_rate == float(run.data.tags["test/exceedance_rate"])
            assert parent == run.data.tags["mlflow.parentRunId"]
            assert trial.params == {k: v for k, v in run.data.params.items() if k in trial.params}

    pick = command("pick", ["penalty_forms", "--knee", "--tracking-uri", database], tmp_path)
    assert pick.returncode == 0, pick.stderr[-3000:]
    printed.append(pick.stdout + pick.stderr)
    assert "MLFLOW_TRACKING_URI='postgresql://exceedance:***@127.0.0.1" in pick.stdout
    env = {**os.environ, "MLFLOW_TRACKING_URI": database}
    train = command("train", ["mlruns/picks/penalty_forms/picked.yaml"], tmp_path, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    printed.append(train.stdout + train.stderr)
    assert str(client.get_model_version_by_alias("penalty_forms", "champion").version) == "1"
    no_password_anywhere(printed, tmp_path, client, "penalty_forms")
    no_password_anywhere([], tmp_path, client, "pg")


def test_two_workers_record_one_search_into_postgresql(database, tmp_path):
    done = command("sweep", [*TINY, f"tracking.uri={database}", "name=pg_workers", *TWO_WORKERS], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 finished trials in experiment 'pg_workers'" in done.stdout
    client = MlflowClient(database)
    experiment = client.get_experiment_by_name("pg_workers")
    runs = client.search_runs([experiment.experiment_id], "tags.`exceedance.role` = 'trial'")
    assert sorted(r.data.tags["exceedance.trial_id"] for r in runs) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" and r.data.tags["exceedance.worker"] for r in runs)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`exceedance.role` = 'search'")
    assert parent.info.status == "FINISHED" and {r.data.tags["mlflow.parentRunId"] for r in runs} == {
        parent.info.run_id
    }
    no_password_anywhere([done.stdout + done.stderr], tmp_path, client, "pg_workers")


def test_a_sweep_and_two_jobs_through_an_mlflow_server_on_postgresql(database, tmp_path):
    port = free_port()
    backend = ("--backend-store-uri", database, "--artifacts-destination", str(tmp_path / "artifacts"))
    server = serve_mlflow(["server", *backend, "--workers", "1"], port)
    uri = f"http://127.0.0.1:{port}"
    try:
        done = command("sweep", [*TINY, f"tracking.uri={uri}", "name=served"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        jobs = command("sweep", ["-m", *TINY, f"tracking.uri={uri}", "name=served", "penalty=l1,l2"], tmp_path)
        assert jobs.returncode == 0, jobs.stderr[-3000:]
        workers = command("sweep", [*TINY, f"tracking.uri={uri}", "name=served", *TWO_WORKERS], tmp_path)
        assert workers.returncode == 0, workers.stderr[-3000:]
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("served")
        runs = client.search_runs([experiment.experiment_id])
        trials = [r for r in runs if r.data.tags["exceedance.role"] == "trial"]
        assert len(trials) == 10 and all(r.info.status == "FINISHED" for r in trials)
        assert len([r for r in trials if "exceedance.worker" in r.data.tags]) == 4
        # The server keeps the records in PostgreSQL and the artifacts where it was told.
        assert len(MlflowClient(database).search_runs([experiment.experiment_id])) == len(runs)
        assert any((tmp_path / "artifacts").rglob("predictions.png"))
    finally:
        stop_process(server)

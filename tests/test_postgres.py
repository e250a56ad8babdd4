"""A real PostgreSQL store: sweeps into it directly and through an MLflow server on it, parallel
jobs, two workers on one search, the pick's SQL reader, a registered model, and a password that
never leaks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import postgres
import pytest
from mlflow import MlflowClient
from sqlalchemy.engine import make_url

from conftest import TINY, command, free_port, last_line, serve_mlflow, stop_process
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


SECRET = "s3cret"  # the part of the password that survives any encoding of it


def no_password_anywhere(printed: list[str], folder: Path, client: MlflowClient, experiment: str) -> None:
    """The URI's password reaches no printed line, no file under `folder` (Hydra's, the picks',
    the artifacts'), no run name, param, tag or description, no experiment tag, no model version."""
    assert SECRET not in "".join(printed)
    leaked = [p for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    found = client.get_experiment_by_name(experiment)
    assert SECRET not in json.dumps([found.name, found.tags])
    for run in client.search_runs([found.experiment_id]):
        assert SECRET not in json.dumps([run.info.run_name, run.data.tags, run.data.params])
    for version in client.search_model_versions():
        assert SECRET not in json.dumps([version.tags, version.description, version.source, version.run_link])


# Every form of a credentialed PostgreSQL URI that SQLAlchemy and psycopg accept, on a port.
_USER, _PASSWORD, _DB = postgres.USER, postgres.PASSWORD, postgres.DATABASE
FORMS = {
    "password in the user-info": lambda port: f"postgresql://{_USER}:{_PASSWORD}@127.0.0.1:{port}/{_DB}",
    "password in the query": lambda port: f"postgresql://{_USER}@127.0.0.1:{port}/{_DB}?password={_PASSWORD}",
    "everything in the query": lambda port: (
        f"postgresql:///{_DB}?host=127.0.0.1&port={port}&user={_USER}&password={_PASSWORD}"
    ),
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_no_form_of_the_password_reaches_a_line_a_file_or_a_record(database, tmp_path, form):
    uri, closed = form(make_url(database).port), form(1)
    printed = []
    done = command("sweep", [*TINY, f"tracking.uri={uri}", "name=forms"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    printed.append(done.stdout + done.stderr)
    # The next command names the store the sweep used, its password masked.
    assert "Next: MLFLOW_TRACKING_URI='postgresql://" in done.stdout and "***" in done.stdout.split("Next:")[1]
    pick = command("pick", ["forms", "--knee", "--tracking-uri", uri], tmp_path)
    assert pick.returncode == 0, pick.stderr[-3000:]
    printed.append(pick.stdout + pick.stderr)
    # Error lines of every command name the store, masked.
    picked, rows = "mlruns/picks/forms/picked.yaml", tmp_path / "rows.csv"
    rows.write_text("a,b,c\n" + "1,2,3\n" * 20)
    for name, args in (
        ("sweep", [*TINY, f"tracking.uri={closed}", "name=forms"]),
        ("pick", ["forms", "--knee", "--tracking-uri", closed]),
        ("train", [picked, f"tracking.uri={closed}"]),
        ("certify", ["models:/forms@champion", "--data", str(rows), "--tracking-uri", closed]),
    ):
        refused = command(name, args, tmp_path, timeout=120)
        assert refused.returncode != 0 and "***" in last_line(refused), (name, refused.stderr[-2000:])
        printed.append(refused.stdout + refused.stderr)
    no_password_anywhere(printed, tmp_path, MlflowClient(uri), "forms")


def test_a_password_in_a_config_file_is_refused_before_hydra_writes(database, tmp_path):
    (tmp_path / "mine.yaml").write_text(f"defaults:\n  - base_config\n  - _self_\ntracking:\n  uri: {database}\n")
    for flags in ([], ["-m"]):
        done = command("sweep", [*flags, "--config-dir", str(tmp_path), "--config-name", "mine"], tmp_path)
        assert done.returncode == 2 and last_line(done).startswith(
            "exceedance-sweep: error: tracking.uri: 'postgresql://exceedance:***@127.0.0.1:"
        )
        assert "put the URI in MLFLOW_TRACKING_URI" in last_line(done) and SECRET not in done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]  # no run folder, no store


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
    # Basic-auth credentials in the URL, as a proxy in front of the server may require (MLflow's
    # client sends them; this server ignores them), a `/` percent-encoded.
    uri = f"http://{postgres.USER}:{quote(postgres.PASSWORD, safe='')}@127.0.0.1:{port}"
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
        printed = [f"{d.stdout}{d.stderr}" for d in (done, jobs, workers)]
        assert all("http://exceedance:***@127.0.0.1" in out for out in printed)
        no_password_anywhere(printed, tmp_path, client, "served")
    finally:
        stop_process(server)

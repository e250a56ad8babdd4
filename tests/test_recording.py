"""The recording side on its own: events in, MLflow records out, no TensorFlow and no tuner."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import compose_config
from exceedance.errors import ConfigError
from exceedance.recording import search as recording_search
from exceedance.recording.events import (
    FAILED,
    FINISHED,
    EpochEnded,
    SearchEnded,
    SearchStarted,
    TrialEnded,
    TrialPredictions,
    TrialsScored,
    TrialStarted,
)
from exceedance.recording.process import Discard
from exceedance.recording.search import SearchRecording

PARAMS = {"form": "l2", "threshold": 0.8, "threshold_offset": -0.2, "lam": 1.0}
MEASURED = {"data": "synthetic", "limit": 1.0, "quality": "within_tolerance"}


def trial_events(trial_id: str, quality: float, exceedance: float) -> list:
    return [
        TrialStarted(trial_id, {**PARAMS, **MEASURED}),
        EpochEnded(trial_id, 1, {"loss": 2.0, "val_within_tolerance": quality / 2, "val_exceedance_rate": 0.5}),
        EpochEnded(trial_id, 2, {"loss": 1.0, "val_within_tolerance": quality, "val_exceedance_rate": exceedance}),
        TrialEnded(trial_id, FINISHED, 2, {"test/loss": 1.1}),
        TrialPredictions(trial_id, np.linspace(0, 2, 40).reshape(10, 4), 0.8),
    ]


def start(tmp_path, key: str = "events-key", overrides: tuple[str, ...] = ()) -> SearchRecording:
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    config = compose_config(["name=events", *overrides])
    return SearchRecording(SearchStarted(uri, config, key, {"hydra.job_num": "0"}))


@pytest.fixture
def recording(tmp_path):
    return start(tmp_path), MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def test_events_become_a_parent_trial_runs_curves_and_a_front(recording, tmp_path):
    rec, client = recording
    for event in [*trial_events("0", 0.6, 0.2), *trial_events("1", 0.5, 0.1), *trial_events("2", 0.4, 0.3)]:
        assert rec.handle(event) is None
    rec.handle(TrialStarted("3", {**PARAMS, **MEASURED}))
    rec.handle(TrialEnded("3", FAILED, reason="training diverged: loss=nan"))
    summary = rec.handle(SearchEnded(FINISHED))

    assert summary.finished == 3
    assert [(r["trial_id"], r["pareto"]) for r in summary.rows] == [("1", True), ("0", True), ("2", False)]
    assert summary.ui_command.startswith("mlflow ui --backend-store-uri sqlite:///")
    parent = client.get_run(rec.parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["hydra.job_num"] == "0"
    trials = {
        r.data.tags["exceedance.trial_id"]: r
        for r in client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{rec.parent_id}'")
    }
    assert {t: r.info.status for t, r in trials.items()} == {"0": FINISHED, "1": FINISHED, "2": FINISHED, "3": FAILED}
    assert trials["3"].data.tags["exceedance.failure_reason"] == "training diverged: loss=nan"
    history = client.get_metric_history(trials["0"].info.run_id, "val_exceedance_rate")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.2)]
    assert trials["0"].data.tags["test/loss"] == "1.1"
    assert trials["0"].data.params["form"] == "l2"
    assert {t: r.data.tags.get("pareto") for t, r in trials.items()} == {
        "0": "true",
        "1": "true",
        "2": "false",
        "3": None,
    }
    assert "predictions.png" in {a.path for a in client.list_artifacts(trials["0"].info.run_id)}
    assert {"pareto.csv", "pareto.png", "config.yaml"} <= {a.path for a in client.list_artifacts(rec.parent_id)}
    table = client.download_artifacts(rec.parent_id, "pareto.csv", str(tmp_path))
    assert [row["trial_id"] for row in csv.DictReader(open(table))] == ["1", "0", "2"]
    # The front's area after each finished trial, reference (quality 0, rate 1): 0.6 * 0.8, then
    # + 0.5 * 0.1 for (0.5, 0.1); (0.4, 0.3) is dominated and adds nothing.
    history = client.get_metric_history(rec.parent_id, "hypervolume")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([0.48, 0.53, 0.53])
    assert client.get_metric_history(rec.parent_id, "joint_hypervolume")[-1].value == pytest.approx(0.53)


def test_the_pareto_tags_mark_the_joint_front_of_every_comparable_search(tmp_path):
    """Two jobs of a multirun (two searches, one experiment): a trial on its own search's front
    that a trial of the other search beats on both axes is not on the joint front. A search with
    another limit is not comparable and keeps its own."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    first, second = start(tmp_path, "job-0"), start(tmp_path, "job-1")
    other_limit = start(tmp_path, "job-2", ("data.limit=0.8",))
    for event in [*trial_events("0", 0.6, 0.2), *trial_events("1", 0.5, 0.1)]:
        first.handle(event)
    for event in trial_events("0", 0.7, 0.05):  # beats both trials of the first search
        second.handle(event)
    other_events = trial_events("0", 0.1, 0.9)
    other_events[0] = TrialStarted("0", {**PARAMS, **MEASURED, "limit": 0.8})
    for event in other_events:
        other_limit.handle(event)
    for rec in (first, other_limit, second):
        rec.handle(SearchEnded(FINISHED))
    runs = client.search_runs(
        [client.get_experiment_by_name("events").experiment_id], "tags.`exceedance.role` = 'trial'"
    )
    tags = {
        (r.data.tags["mlflow.parentRunId"], r.data.tags["exceedance.trial_id"]): r.data.tags["pareto"] for r in runs
    }
    assert tags == {
        (first.parent_id, "0"): "false",
        (first.parent_id, "1"): "false",
        (second.parent_id, "0"): "true",
        (other_limit.parent_id, "0"): "true",
    }
    # Each search keeps its own front in its table and its own hypervolume.
    assert client.get_run(first.parent_id).data.metrics["hypervolume"] == pytest.approx(0.53)
    assert client.get_run(second.parent_id).data.metrics["joint_hypervolume"] == pytest.approx(0.7 * 0.95)


def test_the_ui_shows_names_summaries_pictures_and_the_experiments_front_run(tmp_path):
    """What the MLflow UI shows of two jobs: parents named after their overrides, trials
    `trial-00` tagged with their job, the parent's summary after every trial, each trial's
    histogram and curves, and one `front` run whose table, page and description hold the joint
    front exactly as the `pareto` tags mark it."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    uri, config = f"sqlite:///{tmp_path}/mlruns/mlflow.db", compose_config(["name=events"])
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    jobs = [
        SearchRecording(SearchStarted(uri, config, f"job-{j}", {"hydra.job_num": str(j)}, f"events: penalty={f}"))
        for j, f in enumerate(("l1", "l2"))
    ]
    for event in [*trial_events("0", 0.6, 0.2), *trial_events("1", 0.5, 0.1), *trial_events("2", 0.4, 0.3)]:
        jobs[0].handle(event)
    for event in trial_events("0", 0.7, 0.15):
        jobs[1].handle(event)
    summaries = [job.handle(SearchEnded(FINISHED)) for job in jobs]
    own_fronts = {row["run_id"] for summary in summaries for row in summary.rows if row["pareto"]}

    parent = client.get_run(jobs[0].parent_id)
    assert parent.info.run_name == "events: penalty=l1"
    summary = {k: [m.value for m in client.get_metric_history(parent.info.run_id, k)] for k in parent.data.metrics}
    assert summary["finished_trials"] == [1, 2, 3]
    assert summary["front_size"] == [1, 2, 2]
    assert summary["best_val_within_tolerance"] == [0.6, 0.6, 0.6]
    assert summary["least_val_exceedance_rate"] == [0.2, 0.1, 0.1]
    experiment = client.get_experiment_by_name("events")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags["exceedance.role"] == "trial"]
    assert sorted((r.data.tags["exceedance.job"], r.info.run_name) for r in trials) == [
        ("0", "trial-00"),
        ("0", "trial-01"),
        ("0", "trial-02"),
        ("1", "trial-00"),
    ]
    for trial in trials:  # every trial's histogram; the curves of those on their search's front
        artifacts = {a.path for a in client.list_artifacts(trial.info.run_id)}
        assert "predictions.png" in artifacts
        assert ("curves.png" in artifacts) == (trial.info.run_id in own_fronts), trial.info.run_name
        assert not [k for k in trial.data.metrics if k.startswith("test")]
    [front] = [r for r in runs if r.data.tags["exceedance.role"] == "front"]
    assert front.info.run_name == "front"
    on_front = {r.info.run_id for r in trials if r.data.tags["pareto"] == "true"}
    table = list(csv.DictReader(open(client.download_artifacts(front.info.run_id, "front.csv", str(tmp_path)))))
    assert {row["run_id"] for row in table} == on_front == {row["run_id"] for row in summaries[1].joint_front}
    assert sorted(row["label"] for row in table) == ["0/1", "1/0"]  # (0.6, 0.2) is beaten by job 1's (0.7, 0.15)
    page = open(client.download_artifacts(front.info.run_id, "front.html", str(tmp_path))).read()
    note = front.data.tags["mlflow.note.content"]
    for run_id in on_front:
        assert f'data-run="{run_id}"' in page
        assert f"runs/{run_id}?workflowType=machine_learning" in note
    assert "front.png" in {a.path for a in client.list_artifacts(front.info.run_id)}


def test_a_rerun_that_starts_no_trial_keeps_the_searchs_end(tmp_path):
    first = start(tmp_path)
    for event in trial_events("0", 0.6, 0.2):
        first.handle(event)
    first.handle(SearchEnded(FINISHED))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    ended = client.get_run(first.parent_id).info.end_time
    again = start(tmp_path)
    assert again.parent_id == first.parent_id
    summary = again.handle(SearchEnded(FINISHED))
    assert summary.started == 0 and summary.finished == 1
    assert client.get_run(first.parent_id).info.end_time == ended


def test_a_trials_curves_are_sent_in_one_batch_unless_it_runs_long(recording, monkeypatch):
    rec, client = recording
    rec.handle(TrialStarted("0", PARAMS))
    rec.handle(EpochEnded("0", 1, {"loss": 2.0}))
    run_id = rec._runs["0"]
    assert client.get_metric_history(run_id, "loss") == [], "a short trial's epochs wait for its end"
    monkeypatch.setattr(recording_search, "SEND_EVERY_S", 0.0)
    rec.handle(EpochEnded("0", 2, {"loss": 1.0}))
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2], "a long trial's curves stay live"


def test_a_search_ended_while_trials_run_closes_them_with_its_status(recording):
    rec, client = recording
    rec.handle(TrialStarted("0", PARAMS))
    run_id = rec._runs["0"]
    summary = rec.handle(SearchEnded("KILLED"))
    assert summary.finished == 0 and summary.rows == []
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_run(rec.parent_id).info.status == "KILLED"


def test_what_is_not_an_event_is_refused(recording):
    rec, _ = recording
    with pytest.raises(TypeError, match="not an event"):
        rec.handle("end_trial")


def test_discard_answers_every_event_at_once_and_records_nothing():
    sink = Discard()
    assert sink.send(TrialStarted("0", PARAMS)).result() is None
    assert sink.send(SearchEnded(FINISHED)).done()


def test_the_front_runs_description_stays_within_mlflows_tag_limit():
    """A front of hundreds of trials: the description lists what fits in MLflow's 8,000-character
    tag and points at front.csv for the rest (a longer tag would fail the whole refresh)."""
    from exceedance.recording import front

    class Experiment:
        name, experiment_id = "big", "1"

    row = {"label": "0/1", "search": "big: penalty=l1", "run_id": "a" * 32, "quality": 0.5, "exceedance_rate": 0.1}
    row.update({"form": "l1", "threshold": 1.0, "lam": 1.0, "temperature": "", "learning_rate": 0.01, "limit": "1"})
    note = front._note(Experiment(), [row] * 500, None)
    assert len(note) <= 8000
    assert note.endswith("more trials: see front.csv")


def test_workers_record_trials_under_the_chiefs_parent_which_only_the_chief_ends(tmp_path):
    chief = start(tmp_path)
    uri, config = f"sqlite:///{tmp_path}/mlruns/mlflow.db", chief.config
    workers = [SearchRecording(SearchStarted(uri, config, "events-key", worker=f"w{i}")) for i in (1, 2)]
    assert {w.parent_id for w in workers} == {chief.parent_id}
    for worker, trial_id in zip(workers, ("0", "1"), strict=True):
        for event in trial_events(trial_id, 0.5 + int(trial_id) / 10, 0.2):
            worker.handle(event)
    workers[1].handle(TrialStarted("2", PARAMS))
    workers[1].abandon()  # its process died mid-trial: its own run is KILLED, not the parent
    for worker in workers[:1]:
        assert worker.handle(SearchEnded(FINISHED)).started == 1
    client = MlflowClient(uri)
    assert client.get_run(chief.parent_id).info.status == "RUNNING"
    chief.handle(TrialsScored({"0": (0.5, 0.2), "1": (0.6, 0.2)}))
    history = client.get_metric_history(chief.parent_id, "finished_trials")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0)]
    summary = chief.handle(SearchEnded(FINISHED, started=3))
    assert (summary.finished, summary.started) == (2, 3)
    runs = client.search_runs([chief.experiment.experiment_id], "tags.`exceedance.role` = 'trial'")
    status = {(r.data.tags["exceedance.trial_id"], r.data.tags["exceedance.worker"]): r.info.status for r in runs}
    assert status == {("0", "w1"): "FINISHED", ("1", "w2"): "FINISHED", ("2", "w2"): "KILLED"}
    assert client.get_run(chief.parent_id).info.status == "FINISHED"


def test_a_worker_joining_a_search_that_is_not_running_is_refused(tmp_path):
    chief = start(tmp_path)
    chief.handle(SearchEnded(FINISHED))
    with pytest.raises(ConfigError, match=r"search\.join: no running search 'events-key' in experiment 'events'"):
        SearchRecording(SearchStarted(chief.experiment.uri, chief.config, "events-key", worker="w1"))

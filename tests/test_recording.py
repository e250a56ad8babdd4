"""The recording side on its own: events in, MLflow records out, no TensorFlow and no tuner."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import compose_config
from exceedance.recording import search as recording_search
from exceedance.recording.events import (
    FAILED,
    FINISHED,
    EpochEnded,
    SearchEnded,
    SearchStarted,
    TrialEnded,
    TrialPredictions,
    TrialStarted,
)
from exceedance.recording.process import Discard
from exceedance.recording.search import SearchRecording

PARAMS = {"form": "l2", "threshold": 0.8, "threshold_offset": -0.2, "lam": 1.0, "quality": "within_tolerance"}


def trial_events(trial_id: str, quality: float, exceedance: float) -> list:
    return [
        TrialStarted(trial_id, PARAMS),
        EpochEnded(trial_id, 1, {"loss": 2.0, "val_within_tolerance": quality / 2, "val_exceedance_rate": 0.5}),
        EpochEnded(trial_id, 2, {"loss": 1.0, "val_within_tolerance": quality, "val_exceedance_rate": exceedance}),
        TrialEnded(trial_id, FINISHED, 2, {"test_loss": 1.1}),
        TrialPredictions(trial_id, np.linspace(0, 2, 40).reshape(10, 4), 0.8),
    ]


@pytest.fixture
def recording(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir()
    config = compose_config(["name=events"])
    return SearchRecording(SearchStarted(uri, config, "events-key", {"hydra.job_num": "0"})), MlflowClient(uri)


def test_events_become_a_parent_trial_runs_curves_and_a_front(recording, tmp_path):
    rec, client = recording
    for event in [*trial_events("0", 0.6, 0.2), *trial_events("1", 0.5, 0.1), *trial_events("2", 0.4, 0.3)]:
        assert rec.handle(event) is None
    rec.handle(TrialStarted("3", PARAMS))
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
    assert client.get_metric_history(trials["0"].info.run_id, "test_loss")[0].step == 2
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

"""One MLflow experiment through MLflow's client: a search's parent run, its trial runs, a retrain's run.

Uses `MlflowClient` with explicit run ids rather than the fluent API, so nothing depends on a
global "active run" and one search's runs cannot leak into another's. Metrics of an epoch go
in one `log_batch` call (one SQLite transaction instead of one per metric).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from exceedance import names
from exceedance.config import Config
from exceedance.errors import ConfigError, redact
from exceedance.pareto import FinishedTrial
from exceedance.recording.client import open_client, store_lock
from exceedance.recording.reader import finished_trial
from exceedance.store_folders import artifact_root  # where `stores.check_store` checks they can be written


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database, never relative to the cwd."""
    return artifact_root(uri).as_uri() if uri.startswith("sqlite:///") else None


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}}` -> `{"a.b": "1"}`, the shape MLflow params take."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def config_params(config: Config) -> tuple[dict[str, str], str]:
    """The config as flat params and as YAML (the file `exceedance-pick` exports from).

    The tracking section is left out: a database or server URI can carry credentials.
    """
    logged = dataclasses.asdict(config)
    logged.pop("tracking")
    return flatten(logged), yaml.safe_dump(logged, sort_keys=False)


def _finished_trial(run) -> FinishedTrial:
    data = run.data
    tags = data.tags
    return finished_trial(
        run.info.run_id,
        tags.get(names.TRIAL_ID, ""),
        dict(data.params),
        data.metrics,
        tags.get(names.TEST_EXCEEDANCE_RATE),
        tags.get(names.JOB),
    )


def running_search(client, name: str, uri: str, search_key: str) -> str:
    """The parent run of the search `search_key` in experiment `name`, which workers join; it
    must be running.

    Raises:
        ConfigError: no such search is running in this store.
    """
    experiment = client.get_experiment_by_name(name)
    found = experiment and client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{names.SEARCH_KEY}` = '{search_key}' and attributes.status = 'RUNNING'",
        max_results=1,
    )
    if not found:
        raise ConfigError(
            f"search.join: no running search {search_key!r} in experiment {name!r} at {redact(uri)}; give the "
            "workers the same config, store and overrides as the command serving the search"
        )
    return found[0].info.run_id


UI_URL = "http://127.0.0.1:5000"  # where the printed `mlflow ui` command serves the UI


class Experiment:
    """One MLflow experiment, created if it does not exist; creates and ends its runs.

    Args:
        uri: a tracking URI from `stores.connect`.
        name: the experiment's name (a search's or sweep's `name`).
    """

    def __init__(self, uri: str, name: str):
        # MLflow prints "View run ... at <uri>" for a server store as each run ends: noise in
        # our output, and the URI may carry credentials.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.uri, self.name = uri, name
        with store_lock(uri):
            self.client = open_client(uri)
            found = self.client.get_experiment_by_name(name)
            self.experiment_id = found.experiment_id if found else self._create_experiment(name)
            if found is None or found.tags.get(names.EXPERIMENT_KIND) is None:
                # What MLflow's UI writes when a user calls an experiment "Machine learning"; MLflow
                # 3.17's UI decides its landing view from the URL instead (see `runs_link`).
                self.client.set_experiment_tag(self.experiment_id, names.EXPERIMENT_KIND, names.MACHINE_LEARNING)

    def _create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=artifact_location(self.uri))
        except MlflowException:
            # Another job created it between our lookup and our create.
            return self.client.get_experiment_by_name(name).experiment_id

    def start_search(
        self, search_key: str, config: Config, tags: dict[str, str], fresh: bool = False, run_name: str | None = None
    ) -> tuple[str, int | None]:
        """Return the parent run of the search `search_key` and, when it is an earlier one being
        resumed, the time it last ended (ms; None while it never ended). With `fresh`, an earlier
        run is kept but renamed out of the way (never deleted)."""
        existing = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{names.SEARCH_KEY}` = '{search_key}'", max_results=1
        )
        if existing and not fresh:
            info = existing[0].info
            self.client.update_run(info.run_id, status="RUNNING", name=run_name)
            return info.run_id, info.end_time
        for run in existing:
            self.client.set_tag(run.info.run_id, names.SEARCH_KEY, f"{search_key}@{run.info.run_id}")
        tags = {names.ROLE: names.SEARCH, names.SEARCH_KEY: search_key, **tags}
        return self._new_run(tags, *config_params(config), run_name=run_name), None

    def start_training(self, config: Config, tags: dict[str, str]) -> str:
        """A top-level run for retraining a picked configuration (`exceedance-train`)."""
        return self._new_run({names.ROLE: names.TRAINING, **tags}, *config_params(config), run_name="train")

    def _new_run(
        self, tags: dict[str, str], params: dict[str, Any], config_yaml: str = "", run_name: str | None = None
    ) -> str:
        run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        self.log_batch(run_id, params=params)
        if config_yaml:
            self.client.log_text(run_id, config_yaml, names.CONFIG_FILE)
        return run_id

    def finished_trials(self, parent_id: str | None = None) -> list[tuple[FinishedTrial, dict[str, str]]]:
        """Every finished trial of a search (or, without `parent_id`, of the experiment) with its
        final validation quality and exceedance rate, and its tags."""
        where = f" and tags.`{names.PARENT}` = '{parent_id}'" if parent_id else ""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{names.ROLE}` = '{names.TRIAL}' and attributes.status = 'FINISHED'{where}",
            max_results=50_000,
        )
        return [(_finished_trial(run), dict(run.data.tags)) for run in runs]

    def close_orphans(self, parent_id: str) -> int:
        """Mark trial runs left RUNNING by a killed process as KILLED; return how many."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{names.PARENT}` = '{parent_id}' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(runs)

    def kill_worker_runs(self, parent_id: str, worker: str, trial_ids) -> int:
        """Mark `worker`'s runs of `trial_ids` under `parent_id` KILLED, whatever they say (the
        chief took those trials back from it); return how many were not."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{names.PARENT}` = '{parent_id}' and tags.`{names.WORKER}` = '{worker}'",
        )
        killed = [r for r in runs if r.data.tags.get(names.TRIAL_ID) in set(trial_ids) and r.info.status != "KILLED"]
        for run in killed:
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(killed)

    def start_trial(
        self, parent_id: str, trial_id: str, params: dict[str, Any] | None = None, job: str = "", worker: str = ""
    ) -> str:
        """A trial's run (`trial-03`), nested under its search; params may also come later with
        `log_batch`. `job`: the multirun job's number, tagged, as trial ids repeat across jobs;
        `worker`: the worker that trains it, when several do."""
        tags = {names.PARENT: parent_id, names.ROLE: names.TRIAL, names.TRIAL_ID: trial_id, names.JOB: job}
        if worker:
            tags[names.WORKER] = worker
        name = f"trial-{int(trial_id):02d}" if trial_id.isdigit() else f"trial-{trial_id}"
        return self._new_run(tags, params or {}, run_name=name)

    def searches(self) -> dict[str, str]:
        """Every search (parent run) of the experiment: run id -> its run's name."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{names.ROLE}` = '{names.SEARCH}'", max_results=50_000
        )
        return {r.info.run_id: r.info.run_name or "" for r in runs}

    def front_run(self) -> str:
        """The experiment's one `front` run, created on first use. Call under `store_lock`: two
        jobs ending at once on another store may each create one; the older is kept."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{names.ROLE}` = '{names.FRONT}'",
            order_by=["attributes.start_time ASC"],
        )
        for extra in found[1:]:
            self.client.delete_run(extra.info.run_id)  # derived data only: every refresh rewrites it whole
        if found:
            return found[0].info.run_id
        run_id = self._new_run({names.ROLE: names.FRONT}, {}, run_name="front")
        self.end_run(run_id, "FINISHED")
        return run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """All of one step's metrics in one call."""
        self.log_batch(run_id, [(k, v, step) for k, v in metrics.items()])

    def log_batch(
        self,
        run_id: str,
        metrics: list[tuple[str, float, int]] = (),
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Metrics `(key, value, step)`, params and tags in as few calls as MLflow allows: one
        SQLite transaction per call, at most 1000 metrics, 100 params and 100 tags each."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_items = [Metric(k, float(v), now, step) for k, v, step in metrics]
        param_items = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        tag_items = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        while metric_items or param_items or tag_items:
            self.client.log_batch(run_id, metrics=metric_items[:1000], params=param_items[:100], tags=tag_items[:100])
            metric_items, param_items, tag_items = metric_items[1000:], param_items[100:], tag_items[100:]

    def log_figure(self, run_id: str, figure, name: str) -> None:
        self.client.log_figure(run_id, figure, name)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def end_run(self, run_id: str, status: str, end_time: int | None = None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_time)

    def log_table(self, run_id: str, rows: list[dict[str, Any]], name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["run_id"])
                writer.writeheader()
                writer.writerows(rows)
            self.client.log_artifact(run_id, str(path))

    def mark_picked(self, run_id: str) -> None:
        """Tag `run_id` `picked=true` and take that tag off every other run of the experiment: set
        first, then cleared, so an interrupted pick leaves two picks at worst, never none."""
        earlier = self.client.search_runs([self.experiment_id], filter_string=f"tags.{names.PICKED} = 'true'")
        self.client.set_tag(run_id, names.PICKED, "true")
        for run in earlier:
            if run.info.run_id != run_id:
                self.client.delete_tag(run.info.run_id, names.PICKED)

    def set_tags(self, tags_by_run: dict[str, dict[str, str]]) -> None:
        for run_id, tags in tags_by_run.items():
            self.log_batch(run_id, tags=tags)

    def ui_url(self) -> str:
        """Where the MLflow UI on this store is: the server itself, or `mlflow ui`'s default address."""
        if not self.uri.startswith(("http://", "https://")):
            return UI_URL
        parts = urlsplit(self.uri)  # a link never carries the URI's credentials
        return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))

    def runs_link(self) -> str:
        """A link that opens the experiment on its runs table. MLflow 3.17's UI picks its view from
        the URL's `workflowType` (else the browser's stored choice, else its GenAI overview)."""
        return f"{self.ui_url().rstrip('/')}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"

    def ui_command(self) -> str:
        """How to browse the experiment: the command that starts the UI (for a local store), then the link."""
        if self.uri.startswith(("http://", "https://")):
            return f"open {self.runs_link()}"
        return f"mlflow ui --backend-store-uri {self.uri} --host 127.0.0.1 --port 5000\n  then open {self.runs_link()}"

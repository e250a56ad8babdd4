"""Read an experiment's finished trials straight from an MLflow store, without importing mlflow.

`exceedance-pick` only needs a few columns of every finished trial, one config file and one
tag write. MLflow's Python client costs about 3 s to import and set up before its first query,
and its `search_runs` loads every param, metric and tag of every run. This module goes to the
store directly, in the two ways MLflow itself exposes it:

- a database store (`sqlite:///`, `postgresql://`, `mysql://`): read-only SQL over MLflow's
  tracking tables (`experiments`, `runs`, `tags`, `params`, `latest_metrics`), selecting only
  the keys a pick needs;
- a tracking server (`http(s)://`): MLflow's documented REST API, paged.

Every write goes through MLflow's client (`experiment.py`).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

from exceedance import names
from exceedance.errors import ConfigError, redact
from exceedance.pareto import FinishedTrial
from exceedance.server import mlflow_error_code, not_mlflow, request

# What a pick reads of each finished trial: what it tried (and can be exported), how it scored.
PARAMS = (
    *names.SEARCHED,
    names.TARGET_RATE,
    names.THRESHOLD_OFFSET,
    names.DATA,
    names.QUALITY,
    names.LIMIT,
    names.VAL_ROWS,
)
METRICS = (names.VAL_EXCEEDANCE_RATE, *names.VAL_QUALITIES)
ROLE, TRIAL_ID, PARENT = names.ROLE, names.TRIAL_ID, names.PARENT
PAGE = 5000


def finished_trial(
    run_id: str,
    trial_id: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    test_rate: str | None = None,
    job: str | None = None,
) -> FinishedTrial:
    """A trial run's params, latest metrics and test exceedance rate (its tag) as the plain record
    the Pareto code takes. Its quality is the validation metric its own `quality` param names, so
    trials of different data sets are never mixed up."""
    nan = float("nan")
    quality = metrics.get(names.val_quality(params.get(names.QUALITY, "")), nan)
    test = float(test_rate) if test_rate else nan
    rate = metrics.get(names.VAL_EXCEEDANCE_RATE, nan)
    return FinishedTrial(run_id, trial_id, params, quality, rate, test, job or "")


class TrialStore(Protocol):
    """What picking needs from a store."""

    def experiment_id(self, name: str) -> str | None: ...

    def finished_trials(self, experiment_id: str) -> list[tuple[FinishedTrial, str]]:
        """Every finished trial of the experiment, with its parent (search) run id."""
        ...

    def run_config(self, run_id: str) -> str:
        """The text of the `config.yaml` a search run logged."""
        ...


class DatabaseTrialStore:
    """SQL over MLflow's tracking tables, through SQLAlchemy (which MLflow itself uses)."""

    def __init__(self, uri: str):
        """`uri` has passed `stores.check_store`: an MLflow store at this MLflow's schema."""
        import sqlalchemy

        self.uri = uri
        self._sql = sqlalchemy
        # SQLite: wait for a sweep's write lock instead of failing at once.
        connect_args = {"timeout": 30} if uri.startswith("sqlite") else {}
        self._engine = sqlalchemy.create_engine(uri, connect_args=connect_args)

    def _rows(self, query: str, **values) -> list:
        sql = self._sql
        try:
            with self._engine.connect() as connection:
                return list(connection.execute(sql.text(query), values))
        except sql.exc.DBAPIError as err:
            raise ConfigError(
                f"tracking.uri: {redact(self.uri)} is not a readable MLflow tracking database ({err.orig})"
            ) from None

    def experiment_id(self, name: str) -> str | None:
        rows = self._rows(
            "SELECT experiment_id FROM experiments WHERE name = :name AND lifecycle_stage = 'active'", name=name
        )
        return str(rows[0][0]) if rows else None

    def finished_trials(self, experiment_id: str) -> list[tuple[FinishedTrial, str]]:
        # One row per trial, one column per needed key: each LEFT JOIN is a primary-key lookup
        # on (key, run_uuid), so this reads a few values per run, not every param and metric.
        columns = [("tags", TRIAL_ID), ("tags", PARENT), ("tags", names.TEST_EXCEEDANCE_RATE), ("tags", names.JOB)]
        columns += [("params", k) for k in PARAMS]
        columns += [("latest_metrics", k) for k in METRICS]
        joins, selected = [], []
        for i, (table, _) in enumerate(columns):
            joins.append(f"LEFT JOIN {table} c{i} ON c{i}.run_uuid = r.run_uuid AND c{i}.key = :k{i}")
            selected.append(f"c{i}.value" + (f", c{i}.is_nan" if table == "latest_metrics" else ""))
        rows = self._rows(
            f"SELECT r.run_uuid, {', '.join(selected)} FROM runs r"
            " JOIN tags role ON role.run_uuid = r.run_uuid AND role.key = :role_key AND role.value = 'trial' "
            + " ".join(joins)
            + " WHERE r.experiment_id = :experiment AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active'"
            " ORDER BY r.start_time DESC, r.run_uuid",
            experiment=int(experiment_id),
            role_key=ROLE,
            **{f"k{i}": key for i, (_, key) in enumerate(columns)},
        )
        return [self._trial(row) for row in rows]

    @staticmethod
    def _trial(row) -> tuple[FinishedTrial, str]:
        run_id, trial_id, parent, test_rate, job, *rest = row
        params = {k: v for k, v in zip(PARAMS, rest[: len(PARAMS)], strict=True) if v is not None}
        pairs = rest[len(PARAMS) :]
        metrics = {
            k: math.nan if is_nan else float(value)
            for k, value, is_nan in zip(METRICS, pairs[::2], pairs[1::2], strict=True)
            if value is not None
        }
        return finished_trial(run_id, trial_id or "", params, metrics, test_rate, job), parent or ""

    def run_config(self, run_id: str) -> str:
        rows = self._rows("SELECT artifact_uri FROM runs WHERE run_uuid = :run", run=run_id)
        if not rows:
            raise ConfigError(f"run {run_id} is not in {self.uri}")
        artifacts = rows[0][0]
        if artifacts.startswith("file://"):
            return (Path(urllib.parse.urlparse(artifacts).path) / names.CONFIG_FILE).read_text()
        # Artifacts in a remote store (S3, GCS, ...): only MLflow knows how to fetch them.
        from mlflow.artifacts import download_artifacts

        return Path(download_artifacts(f"{artifacts}/{names.CONFIG_FILE}")).read_text()


class ServerTrialStore:
    """MLflow's REST API (`/api/2.0/mlflow/...`), with the client's credentials (`stores.request`)."""

    def __init__(self, uri: str, timeout_s: float = 30.0):
        self.uri, self.timeout_s = uri.rstrip("/"), timeout_s

    def _call(self, path: str, body: dict | None = None, query: dict | None = None) -> bytes:
        try:
            return request(self.uri, path, self.timeout_s, body, query)
        except urllib.error.HTTPError as err:
            code = mlflow_error_code(err.read())
            if code is None:
                raise not_mlflow(self.uri, f"{err.code} {err.reason}") from None
            if code == "RESOURCE_DOES_NOT_EXIST":
                raise LookupError(path) from None
            raise ConfigError(f"tracking.uri: {redact(self.uri)} answered {err.code} {code}") from None

    def _json(self, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        return json.loads(self._call(f"/api/2.0/mlflow/{path}", body, query))

    def experiment_id(self, name: str) -> str | None:
        try:
            found = self._json("experiments/get-by-name", query={"experiment_name": name})["experiment"]
        except LookupError:
            return None
        return found["experiment_id"] if found.get("lifecycle_stage", "active") == "active" else None

    def finished_trials(self, experiment_id: str) -> list[tuple[FinishedTrial, str]]:
        found, token = [], None
        while True:
            page = self._json(
                "runs/search",
                {
                    "experiment_ids": [experiment_id],
                    "filter": f"tags.`{ROLE}` = 'trial' and attributes.status = 'FINISHED'",
                    "max_results": PAGE,
                    **({"page_token": token} if token else {}),
                },
            )
            for run in page.get("runs", []):
                data = run.get("data", {})
                params = {p["key"]: p["value"] for p in data.get("params", []) if p["key"] in PARAMS}
                metrics = {m["key"]: float(m["value"]) for m in data.get("metrics", []) if m["key"] in METRICS}
                tags = {t["key"]: t["value"] for t in data.get("tags", [])}
                test_rate = tags.get(names.TEST_EXCEEDANCE_RATE)
                run_id, trial_id, job = run["info"]["run_id"], tags.get(TRIAL_ID, ""), tags.get(names.JOB)
                trial = finished_trial(run_id, trial_id, params, metrics, test_rate, job)
                found.append((trial, tags.get(PARENT, "")))
            token = page.get("next_page_token")
            if not token:
                return found

    def run_config(self, run_id: str) -> str:
        return self._call("/get-artifact", query={"run_uuid": run_id, "path": names.CONFIG_FILE}).decode()


def open_trial_store(uri: str) -> TrialStore:
    """The reader for a tracking URI from `stores.resolve_uri`."""
    if uri.startswith(("http://", "https://")):
        return ServerTrialStore(uri)
    return DatabaseTrialStore(uri)

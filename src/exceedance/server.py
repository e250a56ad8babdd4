"""MLflow tracking servers over HTTP: their REST API with the client's credentials, whether one
answers, and the local server of `tracking=server` (connected to, or started if needed).

The local server is bound to 127.0.0.1 unless `tracking.host` says otherwise, keeps its SQLite
store and artifacts under `tracking.store_dir`, and outlives the sweep so the UI stays available
(stop it with `kill $(cat <store_dir>/server.pid)`). Standard library only: no mlflow import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from pathlib import Path

from exceedance.config import TrackingConfig
from exceedance.errors import ConfigError, redact


def _authorization(uri: str) -> tuple[str, dict[str, str]]:
    """The URL without user-info, and the header MLflow's client would send for it."""
    parts = urllib.parse.urlsplit(uri)
    headers = {}
    if parts.username is not None:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    elif token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    elif (user := os.environ.get("MLFLOW_TRACKING_USERNAME")) is not None:
        secret = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        headers["Authorization"] = "Basic " + b64encode(secret.encode()).decode()
    return urllib.parse.urlunsplit(parts).rstrip("/"), headers


def request(uri: str, path: str, timeout_s: float, body: dict | None = None, query: dict | None = None) -> bytes:
    """One call of an MLflow server's REST API (`path` after the host), with its credentials.

    Raises:
        urllib.error.HTTPError: the server answered with an error status.
        ConfigError: nothing answers at `uri`.
    """
    base, headers = _authorization(uri)
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(
            f"tracking.uri: no MLflow server answers at {redact(uri)} ({reason}); start one with "
            "`mlflow server --host 127.0.0.1` or fix the URI"
        ) from None


class NotMlflow(ConfigError):
    """Something answers at the tracking URI, but not MLflow's REST API."""


def not_mlflow(uri: str, detail: str) -> ConfigError:
    return NotMlflow(
        f"tracking.uri: {redact(uri)} answers, but not as an MLflow tracking server ({detail}); fix the URI"
    )


def mlflow_error_code(body: bytes) -> str | None:
    """The `error_code` of an MLflow REST error body; None when the body is not one."""
    try:
        found = json.loads(body)
    except ValueError:
        return None
    return found.get("error_code") if isinstance(found, dict) else None


def probe_server(uri: str, timeout_s: float) -> None:
    """Raise `ConfigError` unless an MLflow tracking server answers at `uri`: its REST API must
    answer an experiment lookup the way MLflow does (the experiment, or RESOURCE_DOES_NOT_EXIST)."""
    path, query = "/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": "Default"}
    try:
        body = request(uri, path, timeout_s, query=query)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise ConfigError(
                f"tracking.uri: the MLflow server at {redact(uri)} refused our credentials ({err.code} {err.reason}); "
                "set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"
            ) from None
        if mlflow_error_code(err.read()) is None:
            raise not_mlflow(uri, f"{err.code} {err.reason}") from None
        return
    try:
        found = json.loads(body)
    except ValueError:
        raise not_mlflow(uri, "its API did not answer with JSON") from None
    if not (isinstance(found, dict) and "experiment" in found):
        raise not_mlflow(uri, "its API answered an unexpected document")


def _answering(uri: str, timeout_s: float) -> bool:
    """Whether an MLflow server answers at `uri`; `NotMlflow` when something else holds the port."""
    try:
        probe_server(uri, timeout_s)
    except NotMlflow:
        raise
    except ConfigError:
        return False
    return True


def ensure_server(config: TrackingConfig) -> str:
    """Return the server's URI, starting `mlflow server` first when nothing answers there.

    Args:
        config: the `tracking` section (`host`, `port`, `store_dir`, `start_timeout_s`).

    Returns:
        `http://host:port`.
    """
    uri = f"http://{config.host}:{config.port}"
    if _answering(uri, config.timeout_s):
        return uri
    store = Path(config.store_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--backend-store-uri",
        f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination",
        str(store / "artifacts"),
        "--workers",
        "1",
    ]
    with (store / "server.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (store / "server.pid").write_text(str(process.pid))
    deadline = time.monotonic() + config.start_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(
                f"tracking=server: mlflow server exited with code {process.returncode}; "
                f"see {store / 'server.log'} (is port {config.port} taken?)"
            )
        if _answering(uri, 1.0):
            return uri
        time.sleep(0.5)
    process.kill()
    raise ConfigError(
        f"tracking=server: mlflow server did not answer at {uri} within {config.start_timeout_s:g} s; "
        f"see {store / 'server.log'}"
    )

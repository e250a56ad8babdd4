"""A local MLflow tracking server for `tracking=server`: connect to it, or start it if needed.

The server is bound to 127.0.0.1 unless `tracking.host` says otherwise, keeps its SQLite store
and artifacts under `tracking.store_dir`, and outlives the sweep so the UI stays available
(stop it with `kill $(cat <store_dir>/server.pid)`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from exceedance.config import TrackingConfig
from exceedance.errors import ConfigError
from exceedance.stores import NotMlflow, probe_server


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
                f"tracking: mlflow server exited with code {process.returncode}; "
                f"see {store / 'server.log'} (is port {config.port} taken?)"
            )
        if _answering(uri, 1.0):
            return uri
        time.sleep(0.5)
    process.kill()
    raise ConfigError(
        f"tracking: mlflow server did not answer at {uri} within {config.start_timeout_s:g} s; "
        f"see {store / 'server.log'}"
    )

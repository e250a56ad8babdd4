"""The folders a command writes beside its MLflow store, checked before anything is written: where
an experiment's artifacts go (made writable with a probe file, for root too), and whether a disk
has room. Plain files and HTTP only: no mlflow import.
"""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
import urllib.error
import urllib.parse
from pathlib import Path

from exceedance.errors import ConfigError, redact
from exceedance.server import mlflow_error_code, request


def sqlite_path(uri: str) -> Path:
    """The file of a `sqlite:///` URI."""
    return Path(uri.split(":///", 1)[1])


def artifact_root(uri: str) -> Path | None:
    """Where MLflow puts the artifacts of a new experiment in the store `uri`: beside a SQLite store
    (`recording.experiment` creates experiments there), under `./mlruns` for another database
    (MLflow's default, resolved where the command runs); None for a server (its own side)."""
    if uri.startswith("sqlite:///"):
        return sqlite_path(uri).parent / "artifacts"
    if uri.startswith(("http://", "https://")):
        return None
    return Path("mlruns").resolve()


def check_artifacts(folder: Path | None, experiment: str, own: bool = False) -> None:
    """Raise `ConfigError` unless files can be made in `folder` (created if missing), where MLflow
    will write `experiment`'s artifacts (`own`: the location an existing experiment keeps). Checked
    with a probe file, made and removed: permissions, a read-only file system and a file where the
    folder should be all fail it, for root too. `None` (a server's or a cloud location): not ours."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".exceedance-probe-") as probe:
            probe.write(b"probe")
            probe.flush()
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(err.errno, err.strerror, str(folder)) from None
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        reason = f"{existing} is a file, not a folder" if not existing.is_dir() else err.strerror
        if own:
            raise ConfigError(
                f"tracking.uri: experiment {experiment!r} keeps its MLflow artifacts in {folder}, which cannot be "
                f"written ({reason}); make it writable, or run under another name="
            ) from None
        raise ConfigError(
            f"tracking.uri: MLflow's artifacts folder {folder} cannot be written ({reason}); make it a writable "
            "folder, or point tracking.uri at a store elsewhere"
        ) from None


def local_folder(location: str) -> Path | None:
    """The folder of an artifact location on this machine (a `file:` URI or a path); None for
    others (`mlflow-artifacts:` through a server, `s3://`, ...)."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    return Path(location).resolve() if not parts.scheme else None


def server_artifacts(uri: str, experiment: str, timeout_s: float) -> str | None:
    """The artifact location of `experiment` on the server `uri`; None while it does not exist."""
    try:
        body = request(uri, "/api/2.0/mlflow/experiments/get-by-name", timeout_s, query={"experiment_name": experiment})
    except urllib.error.HTTPError as err:
        if mlflow_error_code(err.read()) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise ConfigError(
            f"tracking.uri: the MLflow server at {redact(uri)} answered {err.code} {err.reason}"
        ) from None
    return json.loads(body)["experiment"].get("artifact_location")


# A store or tuner folder with less free space than this cannot take a search's records.
MIN_FREE_BYTES = 2**20


def require_free_space(folder: Path) -> None:
    """Raise `OSError` (ENOSPC, naming `folder`) when the disk holding it is (nearly) full."""
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, f"No space left on device: {free // 1024} KiB free", str(folder))

"""A store a command creates is complete or gone, and its artifacts folder is checked with it.

Real faults on the real command lines (exceedance-sweep and exceedance-train, which both create a
store): a file-size limit (`ulimit -f`) and a disk another process fills while MLflow migrates a
new store; a store left half-built by an earlier version; several processes creating one store at
once; artifacts folders that cannot be written, for root too (a file where the folder should be, a
read-only file system, an experiment that keeps its artifacts somewhere unwritable).

What a user sees is asserted: the line, the exit code, TensorFlow not imported, no store or a
complete one, no run created, and the rerun that works once the fault is gone.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_hostile import PICKED
from test_races import _fill, _tmpfs

from conftest import TINY, command, last_line, tensorflow_imported
from exceedance.stores import schema_revisions

pytestmark = pytest.mark.slow

FILE_SIZE_LIMIT = 300_000  # bytes: a new store takes about 1 MB, so MLflow's migration stops midway


def _file_size_limit(limit: int):
    """For preexec_fn: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored, so they raise)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _run(name: str, tmp_path: Path, db: Path, **popen) -> subprocess.CompletedProcess:
    """`exceedance-sweep` or `exceedance-train` (of a picked config) with its store at `db`."""
    if name == "sweep":
        return command(
            "sweep", [*TINY, f"tracking.uri=sqlite:///{db}", f"search.directory={tmp_path}/tuner"], tmp_path, **popen
        )
    (tmp_path / "picked.yaml").write_text(PICKED.format(store=db))
    return command("train", ["picked.yaml", "--model-name", "shipit"], tmp_path, **popen)


def _revision(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def _runs(db: Path) -> list:
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.glob("*.creating-*")]


@pytest.mark.parametrize("name", ["sweep", "train"])
def test_a_file_size_limit_while_the_store_is_created_leaves_no_store_and_the_rerun_works(tmp_path, name):
    db = tmp_path / "mlruns" / "mlflow.db"
    done = _run(name, tmp_path, db, preexec_fn=_file_size_limit(FILE_SIZE_LIMIT))
    assert done.returncode == 1, done.stderr[-3000:]
    line = last_line(done)
    assert line.startswith(
        f"exceedance-{name}: the file-size limit (ulimit -f) of {FILE_SIZE_LIMIT} bytes stopped the new MLflow "
        f"store {db} at "
    ), line
    assert line.endswith("; nothing was left there: raise the limit (a new store takes about 1 MB), then rerun"), line
    assert "resume" not in line
    assert not tensorflow_imported(done)
    assert not db.exists() and _leftovers(db.parent) == []

    again = _run(name, tmp_path, db)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _revision(db) == schema_revisions()[0]
    assert {r.info.status for r in _runs(db)} == {"FINISHED"}


def test_a_disk_another_process_fills_while_the_store_is_created_leaves_no_store(tmp_path):
    disk = tmp_path / "disk"
    _tmpfs(disk, "8m")
    db = disk / "mlflow.db"
    try:

        def fill_once_creating() -> None:  # another process takes the space while MLflow migrates
            deadline = time.monotonic() + 120
            while not _leftovers(disk) and time.monotonic() < deadline:
                time.sleep(0.01)
            _fill(disk)

        filler = threading.Thread(target=fill_once_creating)
        filler.start()
        done = _run("sweep", tmp_path, db)
        filler.join()
        assert done.returncode == 1, done.stderr[-3000:]
        line = last_line(done)
        assert line.startswith(f"exceedance-sweep: no space left to write the new MLflow store {db} ("), line
        assert line.endswith("; nothing was left there: free some space, then rerun"), line
        assert not tensorflow_imported(done)
        assert not db.exists() and _leftovers(disk) == []
        (disk / "filler").unlink()
        (disk / "filler-small").unlink()
        again = _run("sweep", tmp_path, db)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _revision(db) == schema_revisions()[0]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_store_cut_short_by_an_earlier_version_is_one_line_that_says_to_delete_it(tmp_path):
    """What MLflow creating a store in place left when a write failed (the earlier versions' way)."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    code = f"from mlflow import MlflowClient; MlflowClient('sqlite:///{db}')"
    subprocess.run([sys.executable, "-c", code], capture_output=True, preexec_fn=_file_size_limit(FILE_SIZE_LIMIT))
    head, known = schema_revisions()
    revision = _revision(db)
    assert revision in known and revision != head
    before = db.read_bytes()
    for name in ("sweep", "train"):
        done = _run(name, tmp_path, db)
        assert done.returncode == 2, done.stderr[-3000:]
        assert last_line(done) == (
            f"exceedance-{name}: error: tracking.uri: sqlite:///{db} is an MLflow store whose creation was cut short "
            f"(its schema stopped at {revision}, not {head}, and it holds no experiment, so nothing is lost): "
            f"delete {db}, then rerun"
        )
        assert not tensorflow_imported(done)
        assert db.read_bytes() == before
    db.unlink()
    assert _run("sweep", tmp_path, db).returncode == 0


_CHECK = "import sys; from exceedance.stores import check_store; check_store(sys.argv[1], 30.0, experiment='x')"
_IN_PLACE = "import sys; from mlflow import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"


def test_processes_creating_one_store_at_once_all_use_the_one_complete_store(tmp_path):
    """Three of ours and one MLflow process of its own (creating the store in place) at once."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    (tmp_path / "mlruns").mkdir()
    processes = [
        subprocess.Popen([sys.executable, "-c", code, uri], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        for code in (_CHECK, _CHECK, _IN_PLACE, _CHECK)
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], [e[-2000:] for e in errors]
    assert _revision(tmp_path / "mlruns" / "mlflow.db") == schema_revisions()[0]
    assert _leftovers(tmp_path / "mlruns") == []
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["Default"]


def _a_file_there(tmp_path: Path, artifacts: Path) -> str:
    artifacts.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_text("not a folder")
    return (
        f"tracking.uri: MLflow's artifacts folder {artifacts} cannot be written ({artifacts} is a file, not a folder)"
    )


def _read_only_file_system(tmp_path: Path, artifacts: Path) -> str:
    artifacts.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(artifacts)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {mounted.stderr.decode().strip()}")
    return f"tracking.uri: MLflow's artifacts folder {artifacts} cannot be written (Read-only file system)"


def _no_write_permission(tmp_path: Path, artifacts: Path) -> str:
    if os.geteuid() == 0:
        pytest.skip("root writes into a folder without write permission")
    artifacts.mkdir(parents=True)
    artifacts.chmod(0o555)
    return f"tracking.uri: MLflow's artifacts folder {artifacts} cannot be written (Permission denied)"


def _experiment_elsewhere(tmp_path: Path, artifacts: Path) -> str:
    """The store exists; its experiment keeps artifacts under a file (e.g. a moved share)."""
    (tmp_path / "share").write_text("")
    where = tmp_path / "share" / "exceedance"
    client = MlflowClient(f"sqlite:///{artifacts.parent / 'mlflow.db'}")
    for name in ("exceedance", "shipit-picked"):  # the sweep's and the picked config's experiments
        client.create_experiment(name, artifact_location=where.as_uri())
    return (
        f"keeps its MLflow artifacts in {where}, which cannot be written ({tmp_path / 'share'} is a file, not a "
        "folder); make it writable, or run under another name="
    )


ARTIFACTS = {
    "a file where the folder should be": _a_file_there,
    "a read-only file system": _read_only_file_system,
    "a folder without write permission": _no_write_permission,
    "an experiment that keeps its artifacts under a file": _experiment_elsewhere,
}


@pytest.mark.parametrize("name", ["sweep", "train"])
@pytest.mark.parametrize("fault", list(ARTIFACTS))
def test_an_artifacts_folder_that_cannot_be_written_is_one_line_before_any_run(tmp_path, fault, name):
    db = tmp_path / "mlruns" / "mlflow.db"
    artifacts = db.parent / "artifacts"
    existed = fault == "an experiment that keeps its artifacts under a file"
    message = ARTIFACTS[fault](tmp_path, artifacts)
    try:
        done = _run(name, tmp_path, db)
    finally:
        subprocess.run(["umount", "-l", str(artifacts)], capture_output=True, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    line = last_line(done)
    assert line.startswith(f"exceedance-{name}: error: ") and message in line, line
    assert not tensorflow_imported(done)
    assert db.exists() == existed, "a store was created although its artifacts cannot be written"
    assert _runs(db) == []
    if fault == "a file where the folder should be":
        artifacts.unlink()
        again = _run(name, tmp_path, db)
        assert again.returncode == 0, again.stderr[-3000:]
        assert {r.info.status for r in _runs(db)} == {"FINISHED"}

"""A new SQLite store, made whole or not at all, and the lock our processes take turns on it with.

MLflow creates a store on first open by migrating its schema in place, step by step (a second or
two, about a megabyte). A write that failed midway (a full disk, a quota, a file-size limit, a
disk another process filled) left a store of a half-built schema at the target, which every later
command refused as an older MLflow schema: "rerun to resume" could not. Here MLflow builds the
store in a file of its own beside the target (same folder, so the last step is a link within one
file system), in a child process (no MLflow import in the command, and nothing of the half-built
file stays open in it). Only once the schema is at this MLflow's head is the file linked to the
target, which no reader ever sees half-built; a failure removes it. A hard link, unlike a rename,
never replaces a store another MLflow process (`mlflow ui`, a notebook) created at the same
moment: the loser of that race uses the store that won.

Standard library only (sqlite3 for the check of the built file).
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from exceedance.errors import TrackingLost

# The file MLflow builds a new store in: `<store>.creating-<pid>`. Found under the store's lock,
# it is a killed creator's leftover (creators hold the lock).
CREATING = ".creating-"
# A store (or, on a full disk, its folder) this close to a limit stopped because of it.
NEAR_LIMIT_BYTES = 64 * 1024
MIGRATION_TIMEOUT_S = 600.0  # the child imports MLflow and migrates: seconds, even on a busy machine
# A zero-byte store may be another MLflow process's, which has just opened it to migrate it.
EMPTY_SETTLE_S = 1.0

# In the child: MLflow creates and migrates the store at sys.argv[1] on first open, then makes its
# Default experiment; the last line of stderr is the reason it could not.
_BUILD = """
import logging, sys
logging.disable(logging.CRITICAL)
try:
    from mlflow import MlflowClient
    MlflowClient(tracking_uri=sys.argv[1]).search_experiments(max_results=1)
except BaseException as err:
    err = getattr(err, "orig", None) or err
    print(str(err).splitlines()[0] if str(err).strip() else type(err).__name__, file=sys.stderr)
    sys.exit(1)
"""


class StoreNotCreated(TrackingLost):
    """A new store could not be written: the line says why and what to do; nothing was left."""


_held: dict[str, int] = {}  # lock file -> how deeply this process holds it
_held_guard = threading.RLock()


@contextmanager
def store_lock(uri: str):
    """Serialize work on a SQLite store across processes: creating it, opening it (MLflow may still
    migrate it on first open) and moving the joint front's tags. Re-entrant within a process (a
    holder may open the store, which may create it). Other stores: no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = str(Path(uri[len("sqlite:///") :]).with_suffix(".lock"))
    with _held_guard:
        if _held.get(lock_path):
            _held[lock_path] += 1
            try:
                yield
            finally:
                _held[lock_path] -= 1
            return
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _held[lock_path] = 1
            try:
                yield
            finally:
                _held[lock_path] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)


def create_sqlite_store(path: Path, head: str) -> None:
    """Create the MLflow store `path` whole (its schema at revision `head`), or leave nothing there.

    A store that exists (made meanwhile by another process, ours or not) is left as it is, for the
    caller to check. A zero-byte file (SQLite's before its first write) that stays empty is
    replaced.

    Raises:
        StoreNotCreated: the store could not be written (why, and what to do); nothing is left.
    """
    with store_lock(f"sqlite:///{path}"):
        if _exists(path):
            return
        for stale in path.parent.glob(f"{path.name}{CREATING}*"):
            stale.unlink(missing_ok=True)
        building = path.with_name(f"{path.name}{CREATING}{os.getpid()}")
        try:
            reason = _build(building, head)
            if reason:
                raise _not_created(path, building, reason)
            _put_in_place(building, path)
        finally:
            for leftover in (building, *(Path(f"{building}{end}") for end in ("-journal", "-wal", "-shm"))):
                leftover.unlink(missing_ok=True)


def _exists(path: Path) -> bool:
    """Whether `path` holds a store (or one being written); waits a moment on a zero-byte file."""
    if not path.exists():
        return False
    deadline = time.monotonic() + EMPTY_SETTLE_S
    while path.stat().st_size == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _build(building: Path, head: str) -> str:
    """Let MLflow create the store in `building`; the reason it failed, or "" when its schema is
    complete (every migration up to `head` applied)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _BUILD, f"sqlite:///{building}"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=MIGRATION_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"MLflow did not finish creating it within {MIGRATION_TIMEOUT_S:.0f} s"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return lines[-1] if lines else f"MLflow exited with code {done.returncode}"
    try:
        db = sqlite3.connect(building)
        try:
            revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
        finally:
            db.close()
    except sqlite3.Error as err:
        return f"its schema cannot be read back ({err})"
    if revision != [(head,)]:
        return f"its schema stopped at revision {revision[0][0] if revision else None}, not {head}"
    return ""


def _put_in_place(building: Path, path: Path) -> None:
    if path.exists():  # zero bytes and nobody's (`_exists`)
        os.replace(building, path)
    else:
        try:
            os.link(building, path)  # fails if another process made the store meanwhile: it is kept
        except FileExistsError:
            return
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            if path.exists():  # a file system without hard links: a rename, when still free
                return
            os.replace(building, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the new name, on disk before anyone is told the store exists
    finally:
        os.close(folder)


def _not_created(path: Path, building: Path, reason: str) -> StoreNotCreated:
    """What stopped MLflow: the file-size limit, a full disk, or its own reason. Judged while the
    half-built file is still there (removing it frees the space it took)."""
    size = building.stat().st_size if building.exists() else 0
    size_limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    left = "nothing was left there"
    if size_limit != resource.RLIM_INFINITY and size + NEAR_LIMIT_BYTES >= size_limit:
        return StoreNotCreated(
            f"the file-size limit (ulimit -f) of {size_limit} bytes stopped the new MLflow store {path} at "
            f"{size // 1024} KiB ({reason}); {left}: raise the limit (a new store takes about 1 MB), then rerun"
        )
    if "full" in reason or shutil.disk_usage(path.parent).free < NEAR_LIMIT_BYTES:
        return StoreNotCreated(
            f"no space left to write the new MLflow store {path} ({reason}); {left}: free some space, then rerun"
        )
    return StoreNotCreated(f"could not create the MLflow store {path} ({reason}); {left}: fix its folder, then rerun")

"""The search's keras-tuner folder: checked without writing (a refused search writes nothing),
then claimed by one process at a time with a lock the kernel drops when the process ends.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from exceedance.errors import ConfigError, SearchStopped
from exceedance.store_folders import require_free_space


def check_tuner_directory(directory: Path, key: str, overwrite: bool) -> Path:
    """The search's keras-tuner folder (`directory/key`), once it is known to be usable: creatable
    (its nearest existing folder writable) or writable, and, when resuming, with saved state that
    can be read back. Nothing is created: a refused search writes nothing.

    Raises:
        ConfigError: naming the folder or file, and what to do.
    """
    directory = directory.resolve()
    project = directory / key
    existing = next(folder for folder in (project, *project.parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"search.directory: cannot create {project} ({existing} is a file); choose another search.directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "use" if existing == project else "create"
        raise ConfigError(
            f"search.directory: cannot {verb} {project} ({existing} is not writable); choose another search.directory"
        )
    require_free_space(existing)
    if overwrite:
        return project
    for file in sorted(project.rglob("*.json")):
        try:
            json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ConfigError(
                f"search.directory: keras-tuner's saved state {file} cannot be read ({type(err).__name__}); "
                "rerun with search.overwrite=true to start this search over (its MLflow runs are kept)"
            ) from None
    return project


@contextmanager
def claim(project: Path):
    """Own the search in `project` for this process: a second process with the same search
    (same name, settings and tuner directory) is refused instead of running its trials twice.

    The claim is an advisory lock the kernel drops when its process ends, however it ends, so
    a killed search never blocks its rerun.
    """
    import fcntl

    lock_path = project.with_suffix(".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode(errors="replace").strip() or "another process"
            raise SearchStopped(
                f"search {project.name!r} is already running ({holder}); wait for it to end, or run this one "
                "under another name="
            ) from None
        holder = f"process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(lock_path)) from None
        yield
    finally:
        os.close(fd)  # drops the lock

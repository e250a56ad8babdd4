"""A search's MLflow records, kept by a process of their own beside the training process.

MLflow's client (SQLAlchemy) and matplotlib are pure Python: in a thread of the training
process they hold the GIL while Keras builds the next model and runs its Python training
loop, and measurably slowed every trial. In their own process they only share the CPU.

`search_record.SearchRecord` is the recording side and lives in that process; `Recorder` is
the training side's handle: `submit("method", *args)` queues a call of
`SearchRecord.method(*args)` and returns a `Future`. Calls run one at a time, in the order
submitted, so a trial's run exists before its metrics arrive and its end is recorded after them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from exceedance.config import Config

# The recording process's state: its one `SearchRecord`, and the time spent in its calls.
_search_record = None  # a search_record.SearchRecord
_busy_s = 0.0


def _start_process(parent_pid: int) -> None:
    """Set up the recording process: Ctrl-C goes to the training process, which then ends the
    search in order; the recorder must not die halfway through a write. It exits when the
    training process is gone (SIGKILL leaves it nobody to serve)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)  # on a busy CPU, training goes first; records catch up in its gaps

    def exit_with_parent():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    import matplotlib.figure  # noqa: F401
    import mlflow.tracking  # noqa: F401  (imported now, while the training process imports TensorFlow)


def _open(uri: str, config: Config, search_key: str, tags: dict[str, str]) -> str:
    from exceedance.search_record import SearchRecord

    global _search_record
    _search_record = SearchRecord(uri, config, search_key, tags)
    return _search_record.parent_id


def _call(method: str, *args) -> Any:
    global _busy_s
    started = time.perf_counter()
    try:
        return getattr(_search_record, method)(*args)
    finally:
        _busy_s += time.perf_counter() - started


def _busy_seconds() -> float:
    return _busy_s


def _spawning() -> multiprocessing.context.BaseContext:
    """A context that starts the recording process as a fresh interpreter (forking a process
    that runs TensorFlow's threads is unsafe).

    A fresh interpreter also takes on the parent's global start method. In a job of Hydra's
    joblib launcher that is joblib's own "loky", which a fresh interpreter cannot resolve
    ("cannot find context for 'loky'"); such a job starts nothing else, so it gets the default.
    """
    if multiprocessing.get_start_method(allow_none=True) not in (None, *multiprocessing.get_all_start_methods()):
        multiprocessing.set_start_method(None, force=True)
    return multiprocessing.get_context("spawn")


class Recorder:
    """The training side's handle on a `SearchRecord` in its own process.

    Created before TensorFlow is imported, so the recorder's start (it imports MLflow and
    matplotlib) overlaps with the training process's own. `open` then creates or resumes the
    search's parent run; nothing is written to MLflow before it.
    """

    def __init__(self):
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=_spawning(),
            initializer=_start_process,
            initargs=(os.getpid(),),
        )
        self._pool.submit(int)  # start the process now, not at the first call

    def open(self, uri: str, config: Config, search_key: str, tags: dict[str, str]) -> str:
        """Create or resume the search's parent run; return its id."""
        return self._pool.submit(_open, uri, config, search_key, tags).result()

    def submit(self, method: str, *args) -> Future:
        """Queue `SearchRecord.method(*args)`; its result or error comes back in the `Future`."""
        return self._pool.submit(_call, method, *args)

    def busy_seconds(self) -> float:
        """Total time the recording process spent in calls so far (for benchmarks)."""
        return self._pool.submit(_busy_seconds).result()

    def close(self) -> None:
        """Wait for every queued call, then stop the process."""
        self._pool.shutdown(wait=True)

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

import errno
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from exceedance.config import Config
from exceedance.errors import TrackingLost, redact
from exceedance.stores import sqlite_path

# The recording process's state: its one `SearchRecord`, the time spent in its calls, and the
# lock that keeps the watchdog's last writes from interleaving with a call.
_search_record = None  # a search_record.SearchRecord
_busy_s = 0.0
_calls = threading.Lock()
_lost_with: TrackingLost | None = None  # the first failure; every later call fails with it
# MLflow's HTTP client retries a failed request 7 times with a backoff of up to minutes, and
# waits 120 s for an answer: a dead server would hang the sweep for many minutes. Bounded here.
HTTP_RETRIES = 2


def _start_process(parent_pid: int, timeout_s: float) -> None:
    """Set up the recording process: Ctrl-C goes to the training process, which then ends the
    search in order; the recorder must not die halfway through a write. When the training
    process is gone however it ended (SIGKILL, out of memory, a launcher killing its job), the
    recorder closes the search's open runs as KILLED, so nothing is left RUNNING, and exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)  # on a busy CPU, training goes first; records catch up in its gaps
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout_s))))

    def exit_with_parent():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        with _calls:
            if _search_record is not None:
                try:
                    _search_record.abandon()
                except Exception:
                    pass  # the store is gone too; a rerun marks what is left
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    # Every failure reaches the user as one line (see `_lost`); MLflow's own error logs would
    # print its traceback first, and its INFO lines (schema creation) are noise in a sweep.
    logging.getLogger("mlflow").setLevel(logging.CRITICAL)
    import matplotlib.figure  # noqa: F401
    import mlflow.tracking  # noqa: F401  (imported now, while the training process imports TensorFlow)


def _open(uri: str, config: Config, search_key: str, tags: dict[str, str]) -> str:
    from exceedance.search_record import SearchRecord

    global _search_record
    with _calls, _lost(uri):
        _search_record = SearchRecord(uri, config, search_key, tags)
    return _search_record.parent_id


def _call(method: str, *args) -> Any:
    global _busy_s
    started = time.perf_counter()
    try:
        with _calls, _lost(_search_record.tracker.uri):
            return getattr(_search_record, method)(*args)
    finally:
        _busy_s += time.perf_counter() - started


@contextmanager
def _lost(uri: str):
    """Any failure to record becomes one `TrackingLost` line for the training process: which
    store stopped taking records, why, and that a rerun resumes. The first failure is the one
    reported, by every call after it too: a trial whose run could not be created must not
    surface as a confusing error of its later calls."""
    global _lost_with
    if _lost_with is not None:
        raise _lost_with
    try:
        yield
    except Exception as err:
        _lost_with = TrackingLost(lost_message(uri, err))
        raise _lost_with from None


def lost_message(uri: str, err: BaseException) -> str:
    """What to tell a user whose store stopped taking records mid-search."""
    text = redact(" ".join(str(err).split()))
    resume = "then rerun the same command to resume"
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = err.filename or (str(sqlite_path(uri).parent) if uri.startswith("sqlite:") else "the MLflow artifacts")
        return f"search stopped: no space left to write {where}; free some space, {resume}"
    if "full" in text and ("database" in text or "disk" in text):
        return f"search stopped: the MLflow store {redact(uri)} is full ({text[:120]}); free some space, {resume}"
    unreachable = ("Max retries", "Connection", "connection", "timed out", "Timeout")
    if uri.startswith(("http://", "https://")) and any(sign in text for sign in unreachable):
        return f"search stopped: the tracking server at {redact(uri)} stopped answering; start it again, {resume}"
    return f"search stopped: recording to {redact(uri)} failed ({type(err).__name__}: {text[:200]}); {resume}"


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

    def __init__(self, timeout_s: float = 5.0):
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=_spawning(),
            initializer=_start_process,
            initargs=(os.getpid(), timeout_s),
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

"""A search's MLflow records, kept by a process of their own beside the training process.

MLflow's client (SQLAlchemy) and matplotlib are pure Python: in a thread of the training
process they hold the GIL while Keras builds the next model and runs its Python training
loop, and measurably slowed every trial. In their own process they only share the CPU.

`search.SearchRecording` is the recording side and lives in that process; `Recorder` is the
training side's handle: `send(event)` queues one of the `events` for it and returns a `Future`
of its answer. Events are handled one at a time, in the order sent, so a trial's run exists
before its metrics arrive and its end is recorded after them. `Discard` takes the same events
and drops them (a search with nothing recorded, e.g. to measure what recording costs).
"""

from __future__ import annotations

import atexit
import errno
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from exceedance.errors import ConfigError, TrackingLost, redact
from exceedance.recording.events import Event, SearchStarted
from exceedance.signals import started_outliving_stops
from exceedance.store_folders import sqlite_path

# The recording process's state: its one `SearchRecording`, and the lock that keeps the
# watchdog's last writes from interleaving with an event's.
_recording = None  # a search.SearchRecording
_calls = threading.Lock()
_lost_with: TrackingLost | None = None  # the first failure; every later call fails with it
# MLflow's HTTP client retries a failed request 7 times with a backoff of up to minutes, and
# waits 120 s for an answer: a dead server would hang the sweep for many minutes. Bounded here.
HTTP_RETRIES = 2


def _start_process(parent_pid: int, timeout_s: float) -> None:
    """Set up the recording process. It started with Ctrl-C, SIGTERM and SIGHUP ignored: they go
    to the training process, which then ends the search in order; the recorder must not die
    halfway through a write. When the training
    process is gone however it ended (SIGKILL, out of memory, a launcher killing its job), the
    recorder closes the search's open runs as KILLED, so nothing is left RUNNING, and exits."""
    os.nice(10)  # on a busy CPU, training goes first; records catch up in its gaps
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout_s))))

    def exit_with_parent():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        with _calls:
            if _recording is not None:
                try:
                    _recording.abandon()
                except Exception:
                    pass  # the store is gone too; a rerun marks what is left
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    # Once the pool stops this process, every event has been answered, so every record is written:
    # exit at once rather than spend most of a second tearing down MLflow, SQLAlchemy and matplotlib.
    atexit.register(os._exit, 0)
    import matplotlib.figure  # noqa: F401
    import mlflow.tracking  # noqa: F401  (imported now, while the training process imports TensorFlow)

    # Every failure reaches the user as one line (see `_lost`); MLflow's own error logs would
    # print its traceback first, and its INFO lines (schema creation) are noise in a sweep.
    # Set after the import, which configures MLflow's logger.
    logging.getLogger("mlflow").setLevel(logging.CRITICAL)


def _handle(event: Event) -> Any:
    global _recording
    if isinstance(event, SearchStarted):
        from exceedance.recording.search import SearchRecording

        with _calls, _lost(event.uri):
            _recording = SearchRecording(event)
        return _recording.parent_id
    with _calls, _lost(_recording.experiment.uri):
        return _recording.handle(event)


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
    except ConfigError:
        raise  # the input is wrong (a worker joining a search that is not running), not the store
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
    """The training side's handle on a `SearchRecording` in its own process.

    Created before TensorFlow is imported, so the recorder's start (it imports MLflow and
    matplotlib) overlaps with the training process's own. Nothing is written to MLflow before
    its first event, a `SearchStarted`, which creates or resumes the search's parent run.
    """

    def __init__(self, timeout_s: float = 5.0):
        # The pool's queues start multiprocessing's resource tracker, the first submit the process.
        with started_outliving_stops():
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=_spawning(),
                initializer=_start_process,
                initargs=(os.getpid(), timeout_s),
            )
            self._pool.submit(int)  # start the process now, not at the first event

    def send(self, event: Event) -> Future:
        """Queue `event`; its answer (a parent run id, a `SearchSummary`, or None) or the first
        recording error (`TrackingLost`) comes back in the `Future`."""
        return self._pool.submit(_handle, event)

    def close(self) -> None:
        """Wait for every queued event, then stop the process."""
        self._pool.shutdown(wait=True)


class Discard:
    """A `Recorder` that records nothing: every event is dropped and answered at once."""

    def send(self, event: Event) -> Future:
        done: Future = Future()
        done.set_result(None)
        return done

    def close(self) -> None:
        pass

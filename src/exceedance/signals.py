"""Every signal a scheduler sends to stop a command ends it as Ctrl-C does.

`timeout`, SLURM, systemd and container runtimes stop a job with SIGTERM (a closed terminal sends
SIGHUP), often to its whole process group. Ctrl-C already ends a search in order: the trial in
flight and the search's run are closed KILLED, the recording process finishes its writes, a rerun
resumes. `Terminated` is a `KeyboardInterrupt`, so SIGTERM and SIGHUP take exactly that path;
only the last line and the exit code (128 + the signal's number, as a shell reports it) differ.

Processes that must outlive the signal to finish the records (the recording process) ignore
all three and end with the process they serve. Cheap to import: no TensorFlow.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

STOPPING = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The command was told to stop by `signum` (SIGTERM or SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _stop(signum, frame) -> None:
    # A scheduler may send the signal to the group and to the command both, or again after a
    # grace period: the first one ends the command in order, the rest would cut that short.
    for each in STOPPING:
        signal.signal(each, signal.SIG_IGN)
    raise Terminated(signum)


def end_like_ctrl_c() -> None:
    """From now on, SIGTERM and SIGHUP raise `Terminated` in the main thread (once)."""
    if threading.current_thread() is threading.main_thread():
        for each in STOPPING:
            signal.signal(each, _stop)


def pass_to_the_jobs() -> None:
    """From now on, SIGTERM and SIGHUP to this process (a multirun's launcher) go on, once, to its
    child processes (its jobs), which end their searches in order while it waits for them. Sent
    to the whole group, each job gets it twice and ends once."""
    if threading.current_thread() is threading.main_thread():
        for each in STOPPING:
            signal.signal(each, _pass_on)


def _pass_on(signum, frame) -> None:
    import os
    from pathlib import Path

    for each in STOPPING:
        signal.signal(each, signal.SIG_IGN)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, (_, ppid) = int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(ppid) == os.getpid():
                os.kill(pid, signum)
        except (OSError, ValueError):
            continue  # gone meanwhile


@contextmanager
def started_outliving_stops():
    """Processes started in this block (the recording process, and multiprocessing's resource
    tracker beside it, which ignores Ctrl-C and SIGTERM but not SIGHUP) begin with Ctrl-C, SIGTERM
    and SIGHUP ignored, as an ignored signal stays ignored across fork and exec: sent to the
    group, they reach only the process that ends the search in order. Each ends with the process
    it serves."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {each: signal.signal(each, signal.SIG_IGN) for each in (signal.SIGINT, *STOPPING)}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)

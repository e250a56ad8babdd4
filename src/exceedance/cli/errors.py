"""One-line errors: what is wrong and how to fix it, a non-zero exit code, no traceback.

Every message leaves through `one_line`, which folds Hydra's and OmegaConf's multi-line reports
into one line and redacts credentials from any URL in it.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException, ValidationError

from exceedance.errors import ConfigError, SearchStopped, redact
from exceedance.signals import STOPPING, Terminated

USAGE_ERROR = 2
SEARCH_FAILED = 1
INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C
INTERRUPTED_LINE = "interrupted (Ctrl-C); everything recorded so far is kept"

# How to give a required value that has no default.
REQUIRED = {
    "data.limit": "the evaluation limit, in your targets' units, e.g. data.limit=40",
    "data.targets": "the target columns, e.g. data.targets=peak or 'data.targets=[a,b]'",
    "data.path": "your .csv or .npz file, e.g. data.path=/abs/load.csv",
}


def one_line(error: BaseException) -> str:
    """The message a user sees: our own `ConfigError` wherever it sits in the chain of causes (a
    config resolver's error arrives wrapped by OmegaConf), else the error folded into one line."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConfigError):
            error = cause
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, MissingMandatoryValue) and error.full_key:
        key = error.full_key
        return f"{key}: is required: {REQUIRED.get(key, f'set it, e.g. {key}=...')}"
    cause = error.__cause__
    if isinstance(error, HydraException) and isinstance(cause, ValidationError) and cause.full_key:
        # "Error merging override search.max_trials=abc" alone does not say what is wrong with it.
        return redact(f"{cause.full_key}: {str(cause).splitlines()[0].strip()}")
    parts = [line.strip() for line in str(error).splitlines() if line.strip()]
    return redact("; ".join(parts))


def _os_line(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"no space left to write{where} ({err.strerror}); free some space, then rerun to resume"
    return f"cannot use{where} ({err.strerror or err}); fix its permissions or choose another path"


def exit_on_user_error(command: str, entry: Callable[..., Any], *args: Any) -> Any:
    """Call `entry`; turn a configuration error into one line on stderr and exit code 2, a
    stopped search into one line and exit code 1, a file that cannot be written into one line
    and exit code 1, Ctrl-C into one line and exit code 130, and SIGTERM or SIGHUP (once
    `signals.end_like_ctrl_c` is on) into one line and exit code 143 or 129.

    Used both around Hydra (composition errors) and inside the task function, where exiting
    before Hydra sees the exception keeps it from logging a second line about the job.
    """
    try:
        return entry(*args)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        _exit(f"{command}: error: {one_line(err)}", USAGE_ERROR)
    except SearchStopped as err:
        _exit(f"{command}: {one_line(err)}", SEARCH_FAILED)
    except OSError as err:
        _exit(f"{command}: {redact(_os_line(err))}", SEARCH_FAILED)
    except Terminated as err:
        _exit(f"{command}: stopped by {err}; everything recorded so far is kept", err.exit_code)
    except KeyboardInterrupt:
        _exit(f"{command}: {INTERRUPTED_LINE}", INTERRUPTED)


def _exit(line: str, code: int) -> None:
    """Print `line` and exit. Ctrl-C, SIGTERM and SIGHUP are ignored from here on: another one
    while the interpreter shuts down (joining threads, closing pools) would print a traceback
    after the line."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for each in (signal.SIGINT, *STOPPING):
            signal.signal(each, signal.SIG_IGN)
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


def run_hydra(command: str, entry: Callable[[], None]) -> None:
    """Run a `@hydra.main` entry point with one-line errors instead of Hydra's report."""
    # Let Hydra re-raise instead of printing its own multi-line report, so we can shorten it.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        exit_on_user_error(command, entry)
    except ValueError as err:
        # Hydra's own check of its flags (e.g. -m with --cfg) raises a bare ValueError.
        if not _raised_in_hydras_arguments(err):
            raise
        _exit(f"{command}: error: {one_line(err)}", USAGE_ERROR)


def _raised_in_hydras_arguments(error: BaseException) -> bool:
    traceback = error.__traceback__
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback.tb_frame.f_code.co_filename.endswith(os.path.join("hydra", "_internal", "utils.py"))

"""One-line errors for bad input: what is wrong and how to fix it, exit code 2, no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from exceedance.config import ConfigError
from exceedance.sweep import SearchStopped

USAGE_ERROR = 2
SEARCH_FAILED = 1
INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C


def one_line(error: BaseException) -> str:
    """Hydra and OmegaConf spread a message over several lines; fold it into one."""
    parts = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(parts)


def exit_on_user_error(command: str, entry: Callable[..., Any], *args: Any) -> Any:
    """Call `entry`; turn a configuration error into one line on stderr and exit code 2, a
    stopped search into one line and exit code 1, and Ctrl-C into one line and exit code 130.

    Used both around Hydra (composition errors) and inside the task function, where exiting
    before Hydra sees the exception keeps it from logging a second line about the job.
    """
    try:
        return entry(*args)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        print(f"{command}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except SearchStopped as err:
        print(f"{command}: {one_line(err)}", file=sys.stderr)
        sys.exit(SEARCH_FAILED)
    except KeyboardInterrupt:
        print(f"{command}: interrupted (Ctrl-C); everything recorded so far is kept", file=sys.stderr)
        sys.exit(INTERRUPTED)


def run_hydra(command: str, entry: Callable[[], None]) -> None:
    """Run a `@hydra.main` entry point with one-line errors instead of Hydra's report."""
    # Let Hydra re-raise instead of printing its own multi-line report, so we can shorten it.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    exit_on_user_error(command, entry)

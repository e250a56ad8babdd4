"""One-line errors for bad input: what is wrong and how to fix it, exit code 2, no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from exceedance.config import ConfigError
from exceedance.sweep import SearchStopped

USAGE_ERROR = 2
SEARCH_FAILED = 1


def one_line(error: BaseException) -> str:
    """Hydra and OmegaConf spread a message over several lines; fold it into one."""
    parts = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(parts)


def fail_cleanly(command: str, entry: Callable[[], None]) -> None:
    """Run a Hydra entry point; turn configuration errors into one line on stderr and exit 2."""
    # Let Hydra re-raise instead of printing its own multi-line report, so we can shorten it.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        entry()
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        print(f"{command}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(USAGE_ERROR)
    except SearchStopped as err:
        print(f"{command}: {one_line(err)}", file=sys.stderr)
        sys.exit(SEARCH_FAILED)

"""A whole `exceedance-sweep` command, timed: what the benchmarks that compare commands side by
side run (`parallel_jobs.py`, `workers.py`). Imported by those scripts from this folder."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def timed_sweep(overrides: list[str], work: Path, expect: str = "") -> float:
    """Wall seconds of `exceedance-sweep overrides` with its store, tuner folder and Hydra output
    under `work`. Exits with the command's error, or when `expect` is not in its output."""
    command = [
        "exceedance-sweep",
        *overrides,
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        f"search.directory={work / 'tuner'}",
        f"hydra.run.dir={work / 'hydra'}",
        f"hydra.sweep.dir={work / 'hydra'}",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr[-2000:])
    if expect not in done.stdout:
        sys.exit(f"expected {expect!r} in the output:\n{done.stdout[-2000:]}")
    return seconds

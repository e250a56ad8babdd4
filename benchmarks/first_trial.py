"""Time to first trial: from `exceedance-sweep` starting to its first trial starting.

Runs the default sweep with one trial, as a user would, into a brand-new store (MLflow creates
its tables) and again into the existing store, and subtracts the trial's own duration (printed
on its progress line) from the time that line appears.

    python benchmarks/first_trial.py [--repeats 3]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

LINE = re.compile(r"^trial 0+: .*\s([0-9.]+)s$")


def first_trial_start(store: Path, name: str) -> float:
    command = [
        "exceedance-sweep",
        "search.max_trials=1",
        f"name={name}",
        f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
        f"search.directory={store / 'tuner'}",
        f"hydra.run.dir={store / 'hydra'}",
    ]
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        for line in process.stdout:
            found = LINE.match(line.strip())
            if found:
                seen = time.perf_counter() - start
                process.wait()
                return seen - float(found.group(1))
    raise SystemExit(f"no progress line from: {' '.join(command)}")


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run(["python", "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    fresh, existing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            store = Path(tmp) / str(i)
            fresh.append(first_trial_start(store, "bench-first"))
            existing.append(first_trial_start(store, "bench-first-again"))
    figures = {
        "fresh_store_s": statistics.median(fresh),
        "existing_store_s": statistics.median(existing),
        "import_tensorflow_s": import_seconds("tensorflow"),
        "import_mlflow_s": import_seconds("mlflow"),
    }
    labels = {
        "fresh_store_s": "to first trial, brand-new store (median)",
        "existing_store_s": "to first trial, existing store (median)",
        "import_tensorflow_s": "of which: import tensorflow alone",
        "import_mlflow_s": "import mlflow alone (recording process, alongside)",
    }
    for key, value in figures.items():
        print(f"{labels[key]:<52} {value:>7.2f} s")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()

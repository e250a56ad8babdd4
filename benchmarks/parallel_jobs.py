"""Trial throughput of a multirun with 1 or 2 parallel Hydra jobs, and TensorFlow thread settings.

Each variant runs the same two-job sweep (`penalty=l1,l2`, N trials each, default data and
model) through the joblib launcher into a fresh store, and reports trials per minute over the
whole command. Thread settings are `search.intra_op_threads` / `search.inter_op_threads`
(0 = TensorFlow's default, one thread per core).

    python benchmarks/parallel_jobs.py [--trials 8]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from timed_sweep import timed_sweep

VARIANTS = [  # (parallel jobs, intra-op threads, inter-op threads)
    (1, 0, 0),
    (2, 0, 0),
    (2, 1, 1),
    (2, 1, 2),
]


def run(jobs: int, intra: int, inter: int, trials: int, work: Path) -> float:
    """Wall seconds of one two-job multirun."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    # Create the store once, as the README advises before parallel jobs.
    subprocess.run(
        [sys.executable, "-c", f"import mlflow; mlflow.MlflowClient('{uri}').search_experiments()"],
        check=True,
        capture_output=True,
    )
    overrides = [
        "-m",
        "penalty=l1,l2",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={jobs}",
        f"search.max_trials={trials}",
        f"search.intra_op_threads={intra}",
        f"search.inter_op_threads={inter}",
        "name=bench-parallel",
    ]
    return timed_sweep(overrides, work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (jobs, intra, inter) in enumerate(VARIANTS):
            seconds = run(jobs, intra, inter, args.trials, Path(tmp) / str(i))
            results.append(
                {
                    "jobs": jobs,
                    "intra": intra,
                    "inter": inter,
                    "seconds": round(seconds, 1),
                    "trials_per_min": round(2 * args.trials * 60 / seconds, 2),
                }
            )
    print(f"{'parallel jobs':>13} {'intra-op':>9} {'inter-op':>9} {'wall':>8} {'trials/min':>11}")
    for r in results:
        print(f"{r['jobs']:>13} {r['intra']:>9} {r['inter']:>9} {r['seconds']:>7.1f}s {r['trials_per_min']:>11.2f}")
    print(json.dumps({"trials_per_job": args.trials, "variants": results}))


if __name__ == "__main__":
    main()

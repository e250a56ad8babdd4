"""Trials per minute of one search with 1, 2 and 4 workers (`search.workers`) on this machine.

Each variant runs the same search (default data and model, random oracle, `--trials` trials,
`search.trials_per_step` auto) as a whole command into a fresh store: 1 worker is the plain
single-process search; 2 and 4 are the chief and its worker processes, each worker with its
share of the cores for TensorFlow's threads. One more variant runs 1 worker on one thread: what
a single process gains from a second core says how far one process falls short of a machine
with many, which workers (each on its own cores) fill. Rounds alternate the variants, so the
machine's drift hits them alike; the ratio to 1 worker is taken within each round.

    python benchmarks/workers.py [--trials 128] [--rounds 2]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from timed_sweep import timed_sweep

VARIANTS = ((1, 0), (1, 1), (2, 0), (4, 0))  # (workers, TensorFlow threads per worker; 0: its share)


def run(workers: int, threads: int, trials: int, work: Path) -> float:
    """Wall seconds of one search with `workers` workers."""
    overrides = [
        f"search.workers={workers}",
        f"search.intra_op_threads={threads}",
        f"search.inter_op_threads={threads}",
        f"search.max_trials={trials}",
        "name=bench-workers",
    ]
    return timed_sweep(overrides, work, expect=f"{trials} finished trials")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            seconds = {v: run(*v, args.trials, Path(tmp) / f"{round_}-{v[0]}-{v[1]}") for v in VARIANTS}
            for (workers, threads), wall in seconds.items():
                rows.append(
                    {
                        "round": round_ + 1,
                        "workers": workers,
                        "threads": threads or "share",
                        "seconds": round(wall, 1),
                        "trials_per_min": round(args.trials * 60 / wall, 1),
                        "vs_1_worker": round(seconds[VARIANTS[0]] / wall, 2),
                    }
                )
    print(f"{os.cpu_count()} cores, {args.trials} trials per search")
    print(f"{'round':>5} {'workers':>8} {'threads':>8} {'wall':>8} {'trials/min':>11} {'vs 1 worker':>12}")
    for r in rows:
        wall, speed = f"{r['seconds']:>7.1f}s", f"{r['trials_per_min']:>11.1f}"
        print(f"{r['round']:>5} {r['workers']:>8} {r['threads']:>8} {wall} {speed} {r['vs_1_worker']:>11.2f}x")
    print(json.dumps({"cores": os.cpu_count(), "trials": args.trials, "runs": rows}))


if __name__ == "__main__":
    main()

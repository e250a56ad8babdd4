"""How long `exceedance-pick` takes on an experiment of 10,000 finished trials.

Fills a SQLite store with N synthetic trial runs (20 searches, real MLflow client writes, kept
between runs of this script), then times the whole `exceedance-pick` command (start-up
included) and, for comparison, loading the same trials with MLflow's own `search_runs`.

    python benchmarks/pick_10k.py [--runs 10000] [--store mlruns/bench-pick]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXPERIMENT = "bench-pick"
SEARCHES = 20


def fill(uri: str, runs: int, seed: int = 0) -> None:
    from mlflow.entities import Metric, Param

    from exceedance.config import Config, DataConfig
    from exceedance.recording.experiment import Experiment

    tracker = Experiment(uri, EXPERIMENT)
    rng = np.random.default_rng(seed)
    per_search = -(-runs // SEARCHES)
    for search in range(SEARCHES):
        parent, _ = tracker.start_search(
            f"bench-{search}", Config(name=EXPERIMENT, data=DataConfig(limit=1.0)), {"hydra.job_num": str(search)}
        )
        for trial in range(min(per_search, runs - search * per_search)):
            form = ("l1", "l2", "sigmoid_count")[trial % 3]
            offset = rng.uniform(-0.5, 0.2)
            params = {
                "form": form,
                "threshold_offset": offset,
                "threshold": 1.0 + offset,
                "lam": rng.uniform(0.01, 10),
            }
            params.update({"learning_rate": 0.003, "quality": "within_tolerance", "limit": 1.0})
            if form == "sigmoid_count":
                params["temperature"] = rng.uniform(0.02, 0.5)
            run_id = tracker.start_trial(parent, str(trial), params)
            exceedance = rng.uniform(0, 0.3)
            quality = np.clip(0.4 + 1.5 * exceedance + rng.normal(0, 0.05), 0, 1)
            tracker.client.log_batch(
                run_id,
                metrics=[
                    Metric("val_within_tolerance", quality, 0, 8),
                    Metric("val_exceedance_rate", exceedance, 0, 8),
                ],
                params=[Param("epochs", "8")],
            )
            tracker.end_run(run_id, "FINISHED")
        tracker.end_run(parent, "FINISHED")


def time_pick(uri: str, out: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        ["exceedance-pick", EXPERIMENT, "--max-exceedance", "0.01", "--tracking-uri", uri, "--out", str(out)],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stderr)
    return seconds


def time_search_runs(uri: str) -> tuple[float, int]:
    """MLflow's own client, paged: what a pick built on `search_runs` would wait for."""
    code = (
        "import sys, time\nstart = time.perf_counter()\nfrom mlflow import MlflowClient\n"
        "c = MlflowClient(sys.argv[1]); e = c.get_experiment_by_name(sys.argv[2]).experiment_id\n"
        "n, token = 0, None\nwhile True:\n"
        "    page = c.search_runs([e], \"tags.`exceedance.role` = 'trial' and attributes.status = 'FINISHED'\","
        " max_results=5000, page_token=token)\n"
        "    n += len(page); token = page.token\n    if not token: break\n"
        "print(time.perf_counter() - start, n)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, uri, EXPERIMENT], capture_output=True, text=True, check=True)
    seconds, count = done.stdout.split()
    return float(seconds), int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--store", type=Path, default=Path("mlruns/bench-pick"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    store = args.store.resolve()
    marker = store / f"filled-{args.runs}"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    if not marker.exists():
        store.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        fill(uri, args.runs)
        print(f"filled {args.runs} runs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        marker.touch()
    pick_s = statistics.median(time_pick(uri, store / "pick") for _ in range(args.repeats))
    search = [time_search_runs(uri) for _ in range(args.repeats)]
    search_s = statistics.median(s for s, _ in search)
    rows = [
        ("finished trial runs", f"{search[0][1]}"),
        ("exceedance-pick, whole command (median)", f"{pick_s:.2f} s"),
        ("mlflow search_runs alone, incl. import (median)", f"{search_s:.2f} s"),
        ("pick / search_runs", f"{pick_s / search_s:.2f}"),
    ]
    for name, value in rows:
        print(f"{name:<50} {value:>10}")
    print(json.dumps({"runs": search[0][1], "pick_s": round(pick_s, 3), "search_runs_s": round(search_s, 3)}))


if __name__ == "__main__":
    main()

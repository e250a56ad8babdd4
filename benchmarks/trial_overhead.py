"""What tracking and the framework cost per trial, on top of `model.fit`.

Runs a short search of the default sweep's trials (synthetic data, 64-64 MLP, 8 epochs) with
full MLflow tracking into a fresh SQLite store, and the very same search (same trials, same
seeds) with tracking off, alternating, after one warm-up trial. Reports:

- search wall time with tracking / without, including waiting for the recording process to
  finish and the final Pareto figure: the median over repeats of that paired ratio (target <= 1.03);
- framework time per tracked trial outside `fit` on the training thread: build, compile, test
  evaluation, logging (target <= 0.2 s);
- time per trial of the recording process (runs, metrics, plots, Pareto refresh), which runs while
  the next trial trains and so shows up in the first ratio, not in the second figure.

    python benchmarks/trial_overhead.py [--trials 6] [--repeats 6]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

from exceedance import data as data_module
from exceedance.config import Config
from exceedance.recorder import Recorder


class Untracked:
    """Tracking off: a `Recorder` whose every call does nothing, so there are no runs, metrics,
    plots or front."""

    def submit(self, method, *args) -> Future:
        done = Future()
        done.set_result(None)
        return done

    def busy_seconds(self) -> float:
        return 0.0


def search(config: Config, tracked: bool, work: Path) -> tuple[list[dict[str, float]], float, float]:
    """Run one search; return per-trial timings, the recording process's total busy time and the
    search's wall time from its first trial to its last write (its final front included)."""
    from exceedance.search import ExceedanceHyperModel, make_oracle
    from exceedance.sweep import search_key
    from exceedance.trial import TrackedTuner

    dataset = data_module.load(config.data)
    work.mkdir(parents=True)
    recorder = Recorder() if tracked else Untracked()
    if tracked:
        recorder.open(f"sqlite:///{work / 'mlflow.db'}", config, search_key(config), {})
    tuner = TrackedTuner(
        make_oracle(config),
        ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs),
        config,
        recorder,
        directory=str(work / "tuner"),
        project_name="bench",
        overwrite=True,
        report=lambda _: None,
    )
    started = time.perf_counter()
    tuner.search(dataset)
    tuner.flush()
    recorder.submit("finish", "FINISHED").result()  # what the sweep does once at the end
    wall = time.perf_counter() - started
    busy = recorder.busy_seconds()
    if tracked:
        recorder.close()
    return tuner.timings, busy, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    config = Config(name="bench-trial")
    config.search.max_trials = args.trials
    warm = Config(name="bench-warm")
    warm.search.max_trials = 1
    timings: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    walls: dict[bool, list[float]] = {True: [], False: []}
    background = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        search(warm, False, Path(tmp) / "warm")
        for repeat in range(args.repeats):
            # Alternate which goes first, so a slow or fast spell of the machine favours neither.
            for tracked in (True, False) if repeat % 2 == 0 else (False, True):
                found, seconds, wall = search(config, tracked, Path(tmp) / f"{tracked}-{repeat}")
                timings[tracked] += found
                walls[tracked].append(wall)
                background += seconds if tracked else 0.0
    per_trial_background = background / len(timings[True])
    on = statistics.median(walls[True]) / args.trials
    off = statistics.median(walls[False]) / args.trials
    # Paired: the same search (same trials and seeds) with and without tracking, back to back.
    ratio = statistics.median(a / b for a, b in zip(walls[True], walls[False], strict=True))
    outside = statistics.median(t["trial_s"] - t["fit_s"] for t in timings[True])
    outside_off = statistics.median(t["trial_s"] - t["fit_s"] for t in timings[False])
    rows = [
        ("searches per variant x trials per search", f"{args.repeats} x {args.trials}"),
        ("wall time per trial, tracking on (median)", f"{on:.3f} s"),
        ("wall time per trial, tracking off (median)", f"{off:.3f} s"),
        ("tracking on / off, same search (median of ratios; target <= 1.03)", f"{ratio:.3f}"),
        ("framework time outside fit, tracking on (target <= 0.2 s)", f"{outside:.3f} s"),
        ("framework time outside fit, tracking off", f"{outside_off:.3f} s"),
        ("recording process time per tracked trial (runs, metrics, plots, front)", f"{per_trial_background:.3f} s"),
    ]
    for name, value in rows:
        print(f"{name:<60} {value:>10}")
    print(
        json.dumps(
            {
                "trial_on_s": round(on, 4),
                "trial_off_s": round(off, 4),
                "ratio": round(ratio, 4),
                "outside_fit_s": round(outside, 4),
                "outside_fit_off_s": round(outside_off, 4),
                "recording_process_s_per_trial": round(per_trial_background, 4),
            }
        )
    )


if __name__ == "__main__":
    main()

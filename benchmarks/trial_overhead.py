"""What tracking and the framework cost per trial, on top of `model.fit`.

Runs the default sweep's search (synthetic data, 64-64 MLP, 8 epochs) with full MLflow
tracking into a fresh SQLite store, and the very same trials (same seeds) with tracking off,
alternating, after one warm-up trial. Reports medians over trials:

- trial wall time with tracking / without (target <= 1.03);
- framework time per tracked trial outside `fit`: build, compile, test evaluation, logging,
  plots, Pareto refresh (target <= 0.2 s).

    python benchmarks/trial_overhead.py [--trials 6] [--repeats 2]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from exceedance import data as data_module
from exceedance.config import Config
from exceedance.tracking import Tracker


class Untracked:
    """Tracking off: the `Tracker` calls a trial makes, each doing nothing."""

    def start_trial(self, parent_id, trial_id, params):
        return f"off-{trial_id}"

    def log_metrics(self, run_id, metrics, step=0):
        pass

    def log_figure(self, run_id, figure, name):
        pass

    def end_run(self, run_id, status, tags=None):
        pass

    def trial_records(self, parent_id):
        return []

    def flush(self):
        pass


def search(config: Config, tracked: bool, work: Path) -> list[dict[str, float]]:
    from exceedance.search import ExceedanceHyperModel, make_oracle
    from exceedance.sweep import search_key
    from exceedance.trial import TrackedTuner

    dataset = data_module.load(config.data)
    if tracked:
        tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}", config.name)
        parent = tracker.start_search(search_key(config), config, {})
    else:
        tracker, parent = Untracked(), "off"
    tuner = TrackedTuner(
        make_oracle(config),
        ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs),
        config,
        tracker,
        parent,
        directory=str(work / "tuner"),
        project_name="bench",
        overwrite=True,
        report=lambda _: None,
    )
    tuner.search(dataset)
    return tuner.timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    config = Config(name="bench-trial")
    config.search.max_trials = args.trials
    warm = Config(name="bench-warm")
    warm.search.max_trials = 1
    timings: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        search(warm, False, Path(tmp) / "warm")
        for repeat in range(args.repeats):
            for tracked in (True, False):
                timings[tracked] += search(config, tracked, Path(tmp) / f"{tracked}-{repeat}")
    on = statistics.median(t["trial_s"] for t in timings[True])
    off = statistics.median(t["trial_s"] for t in timings[False])
    outside = statistics.median(t["trial_s"] - t["fit_s"] for t in timings[True])
    outside_off = statistics.median(t["trial_s"] - t["fit_s"] for t in timings[False])
    rows = [
        ("trials per variant", f"{len(timings[True])}"),
        ("trial wall time, tracking on (median)", f"{on:.3f} s"),
        ("trial wall time, tracking off (median)", f"{off:.3f} s"),
        ("tracking on / off (target <= 1.03)", f"{on / off:.3f}"),
        ("framework time outside fit, tracking on (target <= 0.2 s)", f"{outside:.3f} s"),
        ("framework time outside fit, tracking off", f"{outside_off:.3f} s"),
    ]
    for name, value in rows:
        print(f"{name:<60} {value:>10}")
    print(
        json.dumps(
            {
                "trial_on_s": round(on, 4),
                "trial_off_s": round(off, 4),
                "ratio": round(on / off, 4),
                "outside_fit_s": round(outside, 4),
                "outside_fit_off_s": round(outside_off, 4),
            }
        )
    )


if __name__ == "__main__":
    main()

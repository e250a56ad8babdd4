"""What tracking and the framework cost per trial, on top of `model.fit`.

Runs short searches of the default sweep's trials (synthetic data, 64-64 MLP, 8 epochs) with
full MLflow tracking into a fresh SQLite store, each right beside the very same search (same
trials, same seeds) with tracking off, after one warm-up trial. Short searches, many times over:
on a shared machine the speed drifts by tens of percent over minutes, and the closer in time
the two trials of a pair run, the less of that drift lands in their ratio. Reports:

- one trial's wall time with tracking / without (target <= 1.03): the median over every pair of
  the same trial, from its start to the end of its bookkeeping on the training thread, with the
  quartiles to show the spread. It takes in the recording process's work for the previous trial
  (its plot, its records), which runs while this one trains. Also the ratio of each trial's
  best time over the repeats, on / off: the figure least touched by other load on the machine;
- the end of a tracked search: the last trial's plot and the final Pareto front, once per search;
- framework time per tracked trial outside `fit` on the training thread: build, compile, test
  evaluation, logging (target <= 0.2 s).

Everything is measured from outside the package's classes: a tuner subclass here times each
trial's hooks, a Keras callback times `fit`, and "tracking off" is the `Discard` sink.

    python benchmarks/trial_overhead.py [--trials 6] [--repeats 8] [--noise-floor]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import keras

from exceedance import data as data_module
from exceedance.config import Config, DataConfig
from exceedance.recording.events import FINISHED, SearchEnded, SearchStarted
from exceedance.recording.process import Discard, Recorder


class FitTimer(keras.callbacks.Callback):
    """Wall time of each `fit` (graph tracing and compilation included)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def search(config: Config, tracked: bool, work: Path) -> tuple[list[dict[str, float]], float]:
    """Run one search; return per-trial timings and the search's wall time from its first trial
    to its last write (its final front included)."""
    from exceedance.oracles import make_oracle
    from exceedance.run_search import search_key
    from exceedance.search import ExceedanceHyperModel
    from exceedance.trial import ExceedanceTuner

    class TimedTuner(ExceedanceTuner):
        """Times each trial from its start to the end of its bookkeeping on the training thread."""

        def on_trial_begin(self, trial):
            self.started = time.perf_counter()
            super().on_trial_begin(trial)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            trial_s.append(time.perf_counter() - self.started)

    dataset = data_module.load(config.data)
    work.mkdir(parents=True)
    recorder = Recorder() if tracked else Discard()
    recorder.send(SearchStarted(f"sqlite:///{work / 'mlflow.db'}", config, search_key(config))).result()
    timer = FitTimer()
    tuner = TimedTuner(
        make_oracle(config),
        ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs, dataset.target),
        config,
        recorder,
        directory=str(work / "tuner"),
        project_name="bench",
        overwrite=True,
        report=lambda _: None,
        callbacks=[timer],
    )
    trial_s: list[float] = []
    started = time.perf_counter()
    tuner.search(dataset)
    tuner.flush()
    recorder.send(SearchEnded(FINISHED)).result()  # what a search does once at the end
    wall = time.perf_counter() - started
    recorder.close()
    timings = [{"trial_s": t, "fit_s": f} for t, f in zip(trial_s, timer.seconds, strict=True)]
    return timings, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="trials per search")
    parser.add_argument("--repeats", type=int, default=8, help="searches per variant")
    parser.add_argument(
        "--noise-floor",
        action="store_true",
        help="track neither variant: shows the ratio this machine gives for no change",
    )
    args = parser.parse_args()
    config = Config(name="bench-trial", data=DataConfig(limit=1.0))
    config.search.max_trials = args.trials
    warm = Config(name="bench-warm", data=DataConfig(limit=1.0))
    warm.search.max_trials = 1
    # One model per trial, whose fit a Keras callback can time (trial_throughput.py measures
    # trials trained several per step).
    config.search.trials_per_step = warm.search.trials_per_step = "1"
    timings: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    ends: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        search(warm, False, Path(tmp) / "warm")
        for repeat in range(args.repeats):
            # Alternate which goes first, so a slow or fast spell of the machine favours neither.
            for tracked in (True, False) if repeat % 2 == 0 else (False, True):
                found, wall = search(config, tracked and not args.noise_floor, Path(tmp) / f"{tracked}-{repeat}")
                timings[tracked] += found
                ends[tracked].append(wall - sum(t["trial_s"] for t in found))
    report(args, timings, ends)


def report(args, timings: dict, ends: dict) -> None:
    """Print the table and the JSON line."""
    # Paired: the same trial (same hyperparameters and seed) with and without tracking. A
    # search's first trial is left out: it has no earlier trial whose records it trains beside.
    pairs = [
        (on["trial_s"], off["trial_s"])
        for i, (on, off) in enumerate(zip(timings[True], timings[False], strict=True))
        if i % args.trials
    ]
    ratios = sorted(on / off for on, off in pairs)
    # Best of the repeats, per trial (as `timeit` does): interference only ever adds time, so
    # the fastest run of a trial is its cost with the least noise in it.
    best = {
        tracked: [min(t["trial_s"] for t in timings[tracked][k :: args.trials]) for k in range(1, args.trials)]
        for tracked in (True, False)
    }
    best_ratio = statistics.median(on / off for on, off in zip(best[True], best[False], strict=True))
    end_on = statistics.median(ends[True]) - statistics.median(ends[False])
    figures = {
        "trial_on_s": statistics.median(on for on, _ in pairs),
        "trial_off_s": statistics.median(off for _, off in pairs),
        "trial_ratio": statistics.median(ratios),
        "trial_ratio_q1": ratios[len(ratios) // 4],
        "trial_ratio_q3": ratios[3 * len(ratios) // 4],
        "trial_best_ratio": best_ratio,
        "search_end_s": end_on,
        "outside_fit_s": statistics.median(t["trial_s"] - t["fit_s"] for t in timings[True]),
        "outside_fit_off_s": statistics.median(t["trial_s"] - t["fit_s"] for t in timings[False]),
    }
    rows = [
        ("searches per variant x trials per search", f"{args.repeats} x {args.trials}"),
        ("one trial, tracking on (median)", f"{figures['trial_on_s']:.3f} s"),
        ("one trial, tracking off (median)", f"{figures['trial_off_s']:.3f} s"),
        (f"one trial on / off (median of {len(pairs)} paired trials; target <= 1.03)", f"{figures['trial_ratio']:.3f}"),
        ("  quartiles of those ratios", f"{figures['trial_ratio_q1']:.3f}-{figures['trial_ratio_q3']:.3f}"),
        (f"one trial on / off, best of {args.repeats} runs each (median over trials)", f"{best_ratio:.3f}"),
        ("end of a tracked search: last plot, final front (once per search)", f"{end_on:.3f} s"),
        ("framework time outside fit, tracking on (target <= 0.2 s)", f"{figures['outside_fit_s']:.3f} s"),
        ("framework time outside fit, tracking off", f"{figures['outside_fit_off_s']:.3f} s"),
    ]
    if args.noise_floor:
        rows.insert(0, ("NOISE FLOOR: both variants untracked", ""))
    for name, value in rows:
        print(f"{name:<70} {value:>11}")
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()

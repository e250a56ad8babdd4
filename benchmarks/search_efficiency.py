"""How well each search maps the front of quality against exceedance rate, at equal trials.

Same data, same budget, several seeds, per method: keras-tuner's `random` and `bayesian`, our
`pareto` (Optuna TPE and NSGA-II behind keras-tuner), `frontier` (target-rate trials), and the
peer: Optuna's own multi-objective TPE driving the same trial function directly. Every trial
trains a real model (a small one, few epochs); nothing is recorded in MLflow (the `Discard`
sink), so the figures are the searches' own.

Prints, per data set and method: the median hypervolume (reference: quality 0, exceedance rate
1) and its spread (min-max over seeds) after 10, 20 and 30 trials; its ratio to random's median;
the regret to the best front any method found (all trials pooled); the same for the region
users pick from (exceedance rate <= 0.1, reference quality: the pooled front's worst quality
there); and trials per minute.

    python benchmarks/search_efficiency.py [--trials 30] [--seeds 5] [--data synthetic,diabetes] [--jobs 2]

About 20 minutes on 2 cores with the defaults. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context

import numpy as np

from exceedance import pareto
from exceedance.config import Config, DataConfig

METHODS = ("random", "bayesian", "pareto-tpe", "pareto-nsga2", "frontier", "optuna-tpe")
CHECKPOINTS = (10, 20, 30)
REGION_RATE = 0.1


def config_for(data: str, method: str, seed: int, trials: int) -> Config:
    config = Config(name="bench", data=DataConfig(name=data, limit=1.0, n_samples=2000, seed=0))
    if data == "diabetes":
        config.data.tolerance = 0.5
    config.model.hidden_units = [16]
    search = config.search
    search.max_trials, search.epochs, search.batch_size, search.seed = trials, 4, 64, seed
    search.intra_op_threads = search.inter_op_threads = 1
    search.oracle = {"pareto-tpe": "pareto", "pareto-nsga2": "pareto", "optuna-tpe": "pareto"}.get(method, method)
    search.sampler = "nsga2" if method == "pareto-nsga2" else "tpe"
    # The frontier's budget is its plan: per form, an unpenalized trial and one per target.
    per_form = max(1, trials // len(config.penalty.forms) - 1)
    search.target_rates = [float(f"{r:.3g}") for r in np.geomspace(0.003, 0.3, per_form)]
    return config


def run_cell(data: str, method: str, seed: int, trials: int) -> dict:
    """One search: every trial's (validation quality, exceedance rate) in trial order, and its time."""
    from exceedance import data as data_module
    from exceedance.fitting import use_threads

    config = config_for(data, method, seed, trials)
    use_threads(config.search)
    dataset = data_module.load(config.data)
    started = time.perf_counter()
    points = peer(config, dataset) if method == "optuna-tpe" else tuned(config, dataset)
    return {"data": data, "method": method, "seed": seed, "points": points, "seconds": time.perf_counter() - started}


def tuned(config: Config, dataset) -> list[tuple[float, float]]:
    from exceedance.oracles import make_oracle
    from exceedance.recording.process import Discard
    from exceedance.search import ExceedanceHyperModel
    from exceedance.trial import ExceedanceTuner

    with tempfile.TemporaryDirectory() as tmp:
        tuner = ExceedanceTuner(
            make_oracle(config),
            ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs, dataset.target),
            config,
            Discard(),
            directory=tmp,
            project_name="bench",
            overwrite=True,
            report=lambda _: None,
        )
        tuner.search(dataset)
        trials = [tuner.oracle.trials[k] for k in sorted(tuner.oracle.trials, key=int)]
    quality_key = f"val_{config.data.quality}"
    found = []
    for trial in trials:
        metrics = trial.metrics
        if trial.status == "COMPLETED":
            found.append((metrics.get_last_value(quality_key), metrics.get_last_value("val_exceedance_rate")))
        else:
            found.append((float("nan"), float("nan")))
    return found


def peer(config: Config, dataset) -> list[tuple[float, float]]:
    """Optuna's multi-objective TPE on the same trial function, without keras-tuner."""
    import keras
    import keras_tuner as kt
    import optuna

    from exceedance.fitting import fit
    from exceedance.oracles import active_values, suggest
    from exceedance.search import ExceedanceHyperModel

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hypermodel = ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs, dataset.target)
    space = hypermodel.declare(kt.HyperParameters())
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=config.search.seed + 1)
    )
    found = []
    for number in range(config.search.max_trials):
        trial = study.ask()
        hp = kt.HyperParameters()
        hp.values = active_values(space.space, partial(suggest, trial))
        keras.utils.set_random_seed(config.search.seed + number)
        model = hypermodel.build(hp)
        fitted = fit(
            model,
            dataset.x_train,
            dataset.y_train,
            epochs=config.search.epochs,
            batch_size=config.search.batch_size,
            on_epoch=lambda *_: None,
            validation=(dataset.x_val, dataset.y_val),
        )
        scores = (fitted.final[f"val_{config.data.quality}"], fitted.final["val_exceedance_rate"])
        if fitted.diverged or not all(np.isfinite(scores)):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            found.append((float("nan"), float("nan")))
        else:
            study.tell(trial, list(scores))
            found.append(scores)
    return found


def hypervolume(points: np.ndarray) -> float:
    return pareto.front_hypervolume(points[:, 0], points[:, 1], "max", 0.0)


def region_hypervolume(points: np.ndarray, reference_quality: float) -> float:
    """Area dominated within exceedance rate <= REGION_RATE and quality >= the reference."""
    inside = points[points[:, 1] <= REGION_RATE]
    if len(inside) == 0:
        return 0.0
    minimized = np.column_stack([-inside[:, 0], inside[:, 1]])
    return pareto.hypervolume_2d(minimized, np.array([-reference_quality, REGION_RATE]))


def spread(figure: tuple[float, float, float]) -> str:
    """Median (min-max)."""
    return f"{figure[0]:.4f} ({figure[1]:.3f}-{figure[2]:.3f})"


def report(cells: list[dict], args) -> dict:
    figures: dict = {}
    for data in args.data:
        mine = [c for c in cells if c["data"] == data]
        pooled = np.array([p for c in mine for p in c["points"]], dtype=float)
        pooled = pooled[~np.isnan(pooled).any(axis=1)]
        best = hypervolume(pooled)
        front = pooled[pareto.front_mask(pooled[:, 0], pooled[:, 1], "max")]
        in_region = front[front[:, 1] <= REGION_RATE]
        reference = float(in_region[:, 0].min()) if len(in_region) else 0.0
        best_region = region_hypervolume(pooled, reference)
        print(
            f"\n{data}: pooled best hypervolume {best:.4f}; region (rate <= {REGION_RATE}, quality >= "
            f"{reference:.3f}) {best_region:.4f}"
        )
        header = ["method"] + [f"hv@{k}" for k in CHECKPOINTS] + ["/random@30", "regret@30"]
        header += [f"region@{k}" for k in CHECKPOINTS] + ["region regret@30", "trials/min"]
        print("  ".join(f"{h:>17}" for h in header))
        random_median = None
        for method in args.methods:
            runs = [c for c in mine if c["method"] == method]
            if not runs:
                continue
            row: dict = {}
            for k in CHECKPOINTS:
                values = [hypervolume(np.array(c["points"][:k], dtype=float)) for c in runs]
                region = [region_hypervolume(np.array(c["points"][:k], dtype=float), reference) for c in runs]
                row[f"hv@{k}"] = (statistics.median(values), min(values), max(values))
                row[f"region@{k}"] = (statistics.median(region), min(region), max(region))
            last = max((k for k in CHECKPOINTS if k <= args.trials), default=CHECKPOINTS[0])
            if method == "random":
                random_median = row[f"hv@{last}"][0]
            row["ratio"] = row[f"hv@{last}"][0] / random_median if random_median else float("nan")
            row["regret"] = best - row[f"hv@{last}"][0]
            row["region_regret"] = best_region - row[f"region@{last}"][0]
            trials = sum(len(c["points"]) for c in runs)
            row["trials_per_min"] = 60 * trials / sum(c["seconds"] for c in runs)
            shown = [method, *(spread(row[f"hv@{k}"]) for k in CHECKPOINTS), f"{row['ratio']:.3f}"]
            shown += [f"{row['regret']:.4f}", *(spread(row[f"region@{k}"]) for k in CHECKPOINTS)]
            shown += [f"{row['region_regret']:.4f}", f"{row['trials_per_min']:.0f}"]
            print("  ".join(f"{c:>17}" for c in shown))
            figures[f"{data}/{method}"] = row
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data", default="synthetic,diabetes")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--jobs", type=int, default=2, help="searches run side by side (one thread each)")
    args = parser.parse_args()
    args.data, args.methods = args.data.split(","), args.methods.split(",")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = [(d, m, s, args.trials) for d in args.data for s in range(args.seeds) for m in args.methods]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        cells = list(pool.map(run_cell, *zip(*work, strict=True)))
    print(f"{len(work)} searches of {args.trials} trials in {time.perf_counter() - started:.0f} s")
    figures = report(cells, args)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

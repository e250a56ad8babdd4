"""Pick one trial from an experiment's Pareto front by a rule, and export its configuration.

Reads the store through `recording.reader` (SQL or REST: no TensorFlow, no mlflow import), so
it starts quickly and runs anywhere the store is reachable; its writes, the `picked` tag and the
experiment's `front` run (with the rule and the pick), go through MLflow's client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from exceedance import names, pareto, plots
from exceedance.certify import upper_bound
from exceedance.config import QUALITY_DIRECTIONS, TrackingConfig, extra_hyperparameters
from exceedance.errors import ConfigError, redact
from exceedance.recording.reader import open_trial_store
from exceedance.stores import check_store, resolve_uri

# The confidence of the bound the pick shows beside each trial's validation exceedance rate.
BOUND_CONFIDENCE = 0.95


@dataclass
class Rule:
    """Exactly one of: best quality under an exceedance cap, least exceedance over a quality
    floor, or the knee of the front."""

    max_exceedance: float | None = None
    min_quality: float | None = None
    knee: bool = False

    def check(self) -> None:
        """Raise `ConfigError` for a bound no trial can be compared with (nan, inf, a rate outside 0..1)."""
        if self.max_exceedance is not None and not 0 <= self.max_exceedance <= 1:
            raise ConfigError(f"--max-exceedance: must be a rate in 0..1, got {self.max_exceedance}")
        if self.min_quality is not None and not np.isfinite(self.min_quality):
            raise ConfigError(f"--min-quality: must be a finite number, got {self.min_quality}")

    def is_set(self) -> bool:
        return self.max_exceedance is not None or self.min_quality is not None or self.knee

    def line(self) -> tuple[str, float] | None:
        """The rule as a line on the front's figure (none for the knee)."""
        if self.max_exceedance is not None:
            return ("max_exceedance", self.max_exceedance)
        if self.min_quality is not None:
            return ("min_quality", self.min_quality)
        return None

    def describe(self) -> str:
        if self.max_exceedance is not None:
            return f"best quality with exceedance rate <= {self.max_exceedance:g}"
        if self.min_quality is not None:
            return f"least exceedance with quality >= {self.min_quality:g}"
        return "knee of the front"


@dataclass
class PickResult:
    """The front (plain rows), the picked row, and the arrays behind the plot."""

    rows: list[dict]
    picked: dict
    quality_name: str
    records: list[pareto.FinishedTrial]
    picked_index: int
    on_front: np.ndarray
    tracking_uri: str = ""
    rule: Rule | None = None


def _choose(rule: Rule, quality: np.ndarray, exceedance: np.ndarray, direction: str) -> int | None:
    if rule.max_exceedance is not None:
        return pareto.pick_under_exceedance(quality, exceedance, direction, rule.max_exceedance)
    if rule.min_quality is not None:
        return pareto.pick_over_quality(quality, exceedance, direction, rule.min_quality)
    return pareto.pick_knee(quality, exceedance, direction)


def pick(records: list[pareto.FinishedTrial], rule: Rule) -> PickResult:
    """Apply `rule` to finished trials (all of one experiment).

    Raises:
        ConfigError: when there are no finished trials, they mix quality metrics, or no trial
            satisfies the rule.
    """
    if not records:
        raise ConfigError("the experiment has no finished trials to pick from")
    qualities = {r.params.get(names.QUALITY, "") for r in records}
    if len(qualities) != 1 or not qualities <= set(QUALITY_DIRECTIONS):
        raise ConfigError(
            f"trials of this experiment use different quality metrics {sorted(qualities)}; "
            "sweep each data set into its own experiment (name=...)"
        )
    quality_name = qualities.pop()
    direction = QUALITY_DIRECTIONS[quality_name]
    quality = np.array([r.quality for r in records])
    exceedance = np.array([r.exceedance_rate for r in records])
    on_front = pareto.front_mask(quality, exceedance, direction)
    index = _choose(rule, quality, exceedance, direction)
    if index is None:
        raise ConfigError(f"no finished trial satisfies the rule ({rule.describe()}); loosen it or run more trials")
    shown = on_front.copy()
    shown[index] = True  # a rule can pick off the front (e.g. among equal trials)
    every = pareto.table(
        [r for r, s in zip(records, shown, strict=True) if s], on_front[shown], names.SEARCHED, direction
    )
    by_run = {r.run_id: r for r in records}
    for row in every:  # the validation rate's confidence bound, and the test rate beside it
        record = by_run[row["run_id"]]
        row["rate_bound"] = rate_bound(record)
        row["test_exceedance_rate"] = record.test_exceedance_rate
        row["test_outside_bound"] = bool(record.test_exceedance_rate > row["rate_bound"])
    rows = [row for row in every if row["pareto"]]
    picked = next(row for row in every if row["run_id"] == records[index].run_id)
    return PickResult(rows, picked, quality_name, records, index, on_front)


def rate_bound(trial: pareto.FinishedTrial) -> float:
    """The upper `BOUND_CONFIDENCE` bound on a trial's exceedance rate on new rows, from its
    validation rate and rows (NaN for a trial recorded without its row count)."""
    rows = trial.params.get(names.VAL_ROWS)
    if rows is None or not np.isfinite(trial.exceedance_rate):
        return float("nan")
    return upper_bound(trial.exceedance_rate, int(float(rows)), 1 - BOUND_CONFIDENCE)


def export_config(
    search_config: str, picked: pareto.FinishedTrial, path: Path, max_exceedance: float | None = None
) -> Path:
    """Write a Hydra config that retrains exactly the picked trial: its search's config (the
    YAML text the search logged) with every searched value fixed and one trial. The pick's
    exceedance cap, when its rule had one, is kept as `search.max_exceedance`: the rate
    `exceedance-train --certify` certifies by default.

    Run it with `exceedance-train PATH`, or as a one-trial search with
    `exceedance-sweep --config-path DIR --config-name picked`.
    """
    config = yaml.safe_load(search_config)
    params = picked.params
    penalty = config["penalty"]
    if names.FORM not in params or names.THRESHOLD_OFFSET not in params:
        raise ConfigError(
            f"trial {picked.trial_id} was recorded without {names.FORM} or {names.THRESHOLD_OFFSET} (by an older "
            "version); pick from a search run with this one"
        )
    penalty["forms"] = [params[names.FORM]]
    for name in (names.THRESHOLD_OFFSET, "lam", *extra_hyperparameters(penalty["forms"])):
        if name in params:  # a target-rate trial has no lam: it learns one
            penalty[name] = {"low": float(params[name]), "high": float(params[name])}
    if names.TARGET_RATE in params:
        target = float(params[names.TARGET_RATE])
        if target < 1:  # lambda learned for the target again
            penalty[names.TARGET_RATE] = target
        else:  # the frontier's unpenalized trial
            penalty[names.TARGET_RATE] = None
            penalty["lam"] = {"low": 0.0, "high": 0.0}
    rate = float(params["learning_rate"])
    # A trial trains with seed search.seed + trial id; the single retrained trial has id 0.
    seed = int(config["search"]["seed"]) + int(picked.trial_id)
    config["search"].update(
        {
            "learning_rate": {"low": rate, "high": rate},
            "max_trials": 1,
            "oracle": "random",
            "seed": seed,
            "max_exceedance": max_exceedance,
        }
    )
    config["name"] = f"{config['name']}-picked"
    header = f"# Trial {picked.trial_id} (MLflow run {picked.run_id}), picked from its Pareto front.\n"
    path.write_text(header + yaml.safe_dump({"defaults": ["base_config", "_self_"], **config}, sort_keys=False))
    return path


def default_rule(search_configs: list[str]) -> Rule:
    """The rule of searches that capped the exceedance rate (`search.max_exceedance=E`): best
    quality with exceedance rate <= E.

    Raises:
        ConfigError: when the searches set no cap, or different ones.
    """
    caps = {(yaml.safe_load(text).get("search") or {}).get("max_exceedance") for text in search_configs} - {None}
    if len(caps) == 1:
        return Rule(max_exceedance=float(caps.pop()))
    why = f"its searches set different search.max_exceedance {sorted(caps)}" if caps else "its searches set no cap"
    raise ConfigError(f"give a rule: --max-exceedance E, --min-quality Q or --knee ({why})")


def _limit(trial: pareto.FinishedTrial) -> float | None:
    try:
        return float(trial.params[names.LIMIT])
    except (KeyError, ValueError):
        return None  # recorded by an older version


def same_limit(trials: list, experiment: str, limit: float | None) -> list:
    """The `(trial, parent)` pairs measured against one evaluation limit: `limit`, or the only one.

    Exceedance against different limits is not comparable, and a sweep over limits puts them in
    one experiment.

    Raises:
        ConfigError: when the trials have several limits and none is given, or none has `limit`.
    """
    limits = sorted({_limit(t) for t, _ in trials} - {None})
    shown = ", ".join(f"{value:g}" for value in limits)
    if limit is not None:
        kept = [(t, parent) for t, parent in trials if _limit(t) == limit]
        if not kept:
            raise ConfigError(f"--limit: no finished trial of {experiment!r} has limit {limit:g}; its limits: {shown}")
        return kept
    if len(limits) > 1:
        raise ConfigError(
            f"trials of {experiment!r} are measured against different limits ({shown}); "
            "pick among the trials of one with --limit L"
        )
    return trials


def run_pick(
    tracking: TrackingConfig, experiment: str, rule: Rule, out_dir: Path, limit: float | None = None
) -> tuple[PickResult, Path, Path]:
    """Pick, tag the picked run `picked=true`, refresh the experiment's `front` run with the pick,
    and write the front plot, its page and the exported config.

    Args:
        limit: pick among the trials of this evaluation limit (needed when they have several).

    Returns:
        The result, the PNG path and the exported config path.
    """
    rule.check()
    check_out_dir(out_dir)
    uri = resolve_uri(tracking)
    check_store(uri, tracking.timeout_s, create=False, experiment=experiment)  # the front run gets artifacts
    store = open_trial_store(uri)
    experiment_id = store.experiment_id(experiment)
    if experiment_id is None:
        raise ConfigError(
            f"experiment {experiment!r} does not exist at {redact(uri)}; run a sweep with name={experiment}"
        )
    trials = same_limit(store.finished_trials(experiment_id), experiment, limit)
    if not rule.is_set() and trials:
        rule = default_rule([store.run_config(parent) for parent in sorted({parent for _, parent in trials})])
        rule.check()
    result = pick([trial for trial, _ in trials], rule)
    result.rule = rule
    records = result.records
    figure = plots.pareto_front(
        np.array([r.quality for r in records]),
        np.array([r.exceedance_rate for r in records]),
        [r.params.get(names.FORM, "") for r in records],
        result.on_front,
        result.quality_name,
        picked=result.picked_index,
        bounds=np.array([rate_bound(r) for r in records]),
        title=f"{experiment}: {len(records)} trials, limit {records[0].params.get(names.LIMIT, '?')}",
        labels=[r.trial_id for r in records],
        rule=rule.line(),
    )
    picked, search_run = trials[result.picked_index]
    config_text = store.run_config(search_run)
    # Files first, the tag last: a pick that could not export leaves the earlier pick standing.
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "pareto.png"
    figure.savefig(png, dpi=100)
    exported = export_config(config_text, picked, out_dir / "picked.yaml", rule.max_exceedance)
    from exceedance.recording import front  # MLflow's client, for the writes
    from exceedance.recording.experiment import Experiment

    tracked = Experiment(uri, experiment)
    tracked.mark_picked(picked.run_id)
    # The experiment's `front` run with the rule and the pick; its page beside picked.yaml too.
    front.publish_locked(tracked, front.Pick(rule.describe(), rule.line(), picked.run_id), out_dir)
    result.tracking_uri = uri
    return result, png, exported


def check_out_dir(out_dir: Path) -> None:
    """Raise `ConfigError` unless `out_dir` is, or can be made, a writable folder."""
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out: {existing} is a file, not a folder; give a folder for pareto.png and picked.yaml")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: {existing} is not writable; give a folder you can write to")

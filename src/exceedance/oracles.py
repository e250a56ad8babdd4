"""The oracles that explore the search space: a registry of keras-tuner oracles by name.

keras-tuner's own `random`, `bayesian`, `grid` and `hyperband` score a trial by one number, the
validation quality. `pareto` asks Optuna's multi-objective samplers instead, so the search aims
at the front of quality against exceedance rate, and still speaks keras-tuner to the tuner.
"""

from __future__ import annotations

import math

import keras_tuner as kt

from exceedance import names
from exceedance.config import Config

RUNNING, COMPLETED = kt.engine.trial.TrialStatus.RUNNING, kt.engine.trial.TrialStatus.COMPLETED
STOPPED, IDLE = kt.engine.trial.TrialStatus.STOPPED, kt.engine.trial.TrialStatus.IDLE
UNPENALIZED = 1.0  # the frontier's first trial per form: a target every model meets
CONSTRAINT = "exceedance_over_cap"  # Optuna constraint: rate - max_exceedance, feasible when <= 0


class ResumableGridSearchOracle(kt.oracles.GridSearchOracle):
    """keras-tuner's grid oracle, made resumable.

    Its saved state leaves out the order in which it walks the grid, so after a reload the
    next `create_trial` fails with a `KeyError` on a trial id it no longer knows. This saves
    that order and the queue of trials waiting for a successor, and restores both.
    """

    def get_state(self) -> dict:
        order = self._ordered_ids
        return {
            **super().get_state(),
            "grid_order": {
                "memory": list(order._memory),
                "next": [[k, v] for k, v in order._next_index.items()],
                "last": order._last_index,
            },
            "grid_populate_next": list(self._populate_next),
        }

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        if "grid_order" not in state:
            return
        order, saved = self._ordered_ids, state["grid_order"]
        order._memory = list(saved["memory"])
        order._data_to_index = {data: i for i, data in enumerate(order._memory)}
        order._next_index.clear()
        order._next_index.update({k: v for k, v in saved["next"]})
        order._last_index = saved["last"]
        self._populate_next = list(state["grid_populate_next"])


def suggest(trial, hp: kt.engine.hyperparameters.HyperParameter):
    """Optuna's suggestion for one keras-tuner hyperparameter, in the same range and scale."""
    hps = kt.engine.hyperparameters
    if isinstance(hp, hps.Fixed):
        return hp.value
    if isinstance(hp, hps.Choice):
        return trial.suggest_categorical(hp.name, list(hp.values))
    if isinstance(hp, hps.Float):
        return trial.suggest_float(hp.name, hp.min_value, hp.max_value, log=hp.sampling == "log")
    if isinstance(hp, hps.Int):
        return trial.suggest_int(hp.name, hp.min_value, hp.max_value, log=hp.sampling == "log")
    if isinstance(hp, hps.Boolean):
        return trial.suggest_categorical(hp.name, [False, True])
    raise TypeError(f"the pareto oracle cannot search a {type(hp).__name__} hyperparameter ({hp.name})")


def active_values(space: list, value_of) -> dict:
    """A value from `value_of(hp)` for every hyperparameter of `space` that is active, in the
    order declared: a conditional one only when its condition holds on the values before it."""
    hps = kt.HyperParameters()
    for hp in space:
        hps.merge([hp])
        if hps.is_active(hp):
            hps.values[hp.name] = value_of(hp)
    return hps.values


class ParetoOracle(kt.Oracle):
    """A keras-tuner oracle whose proposals come from an Optuna multi-objective sampler.

    The objectives are the validation quality (in its direction) and the validation exceedance
    rate on the limit (minimized). Optuna sees the same space as keras-tuner, conditional
    hyperparameters included (a form's own, such as `temperature`, only when that form is
    proposed). A failed trial is told to Optuna as failed, never as a point. Optuna's study lives
    in memory and is rebuilt from keras-tuner's saved trials when a search resumes, so the sampler
    continues from every trial that ended, and a trial cut short is run again (by keras-tuner)
    and told when it ends.

    Args:
        objective: keras-tuner's objective (the validation quality), for its own scoring.
        quality_direction: `max` or `min`.
        sampler: `tpe` or `nsga2`.
        max_exceedance: with a rate, `exceedance_rate <= max_exceedance` is a constraint the
            sampler favours (Optuna's constraints); None for none.
        population_size: NSGA-II's generation size.
        **kwargs: keras-tuner's `Oracle` arguments (`max_trials`, `seed`, ...).
    """

    def __init__(
        self,
        objective: kt.Objective,
        quality_direction: str,
        sampler: str = "tpe",
        max_exceedance: float | None = None,
        population_size: int = 10,
        **kwargs,
    ):
        super().__init__(objective=objective, **kwargs)
        self.quality_direction, self.sampler = quality_direction, sampler
        self.max_exceedance, self.population_size = max_exceedance, population_size
        self._study = self._new_study()
        self._asked: dict = {}  # keras-tuner trial id -> the Optuna trial it was asked as

    def _new_study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.sampler == "nsga2":
            sampler = optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=self.seed)
        else:
            # constant_liar: trials asked together (several per step) are told apart while in flight
            sampler = optuna.samplers.TPESampler(seed=self.seed, constant_liar=True)
        directions = ["maximize" if self.quality_direction == "max" else "minimize", "minimize"]
        return optuna.create_study(directions=directions, sampler=sampler)

    def _ask(self, fixed: dict | None = None) -> tuple[object, dict]:
        """An Optuna trial and its values for every active hyperparameter (`fixed`: replay these)."""
        if fixed is not None:
            self._study.enqueue_trial(fixed)
        trial = self._study.ask()
        return trial, active_values(self.hyperparameters.space, lambda hp: suggest(trial, hp))

    def populate_space(self, trial_id: str) -> dict:
        trial, values = self._ask()
        self._asked[trial_id] = trial
        return {"status": RUNNING, "values": values}

    def end_trial(self, trial) -> None:
        super().end_trial(trial)
        ended = self.trials[trial.trial_id]
        if ended.trial_id in self._retry_queue:
            return  # told when its retry ends
        asked = self._asked.pop(ended.trial_id, None)
        if asked is None:  # a trial that began before the search was resumed
            asked, _ = self._ask(self._active_values(ended))
        self._tell(asked, ended)

    def _active_values(self, trial) -> dict:
        return {name: value for name, value in trial.hyperparameters.values.items() if not name.startswith("tuner/")}

    def _tell(self, asked, trial) -> None:
        from optuna.trial import TrialState

        if trial.status == COMPLETED:
            metrics = trial.metrics
            scores = [metrics.get_last_value(name) for name in (self.objective.name, names.VAL_EXCEEDANCE_RATE)]
            if all(value is not None and math.isfinite(value) for value in scores):
                if self.max_exceedance is not None:  # Optuna's samplers prefer feasible trials
                    asked.set_constraint(CONSTRAINT, scores[1] - self.max_exceedance)
                self._study.tell(asked, scores)
                return
        self._study.tell(asked, state=TrialState.FAIL)

    def reload(self) -> None:
        super().reload()
        self._study, self._asked = self._new_study(), {}
        for trial_id in self.end_order:  # every trial that ended, in the order it ended
            trial = self.trials[trial_id]
            asked, _ = self._ask(self._active_values(trial))
            self._tell(asked, trial)


class FrontierOracle(kt.Oracle):
    """Traces the front directly: one target-rate trial per target and penalty form.

    Per form, the first trial trains unpenalized (target 1.0, so its learned lambda stays 0) and
    measures the rate the model reaches on its own; then one trial per target rate below that
    (a target at or above it is met for free and skipped), from the loosest to the tightest.
    Each lands near its own point of the front. The other hyperparameters are drawn at random from
    the space (seeded), the threshold offset at most 0: a penalty that starts above the limit
    cannot push predictions below it. Its plan is derived from keras-tuner's saved trials, so a
    resumed search goes on where it stopped.

    Args:
        forms: the penalty forms, in order.
        target_rates: the targets below 1, any order.
        **kwargs: keras-tuner's `Oracle` arguments (`objective`, `max_trials`, `seed`, ...).
    """

    def __init__(self, forms: list[str], target_rates: list[float], **kwargs):
        super().__init__(**kwargs)
        self.forms, self.target_rates = list(forms), sorted(target_rates, reverse=True)

    def _plan(self) -> tuple[str, float] | str:
        """The next (form, target) to try; IDLE while the rest waits on a form's unpenalized
        trial in flight (its rate decides which targets are free), STOPPED when all are tried."""
        tried, reached, running = set(), {}, set()
        for trial in self.trials.values():
            values = trial.hyperparameters.values
            key = (values.get(names.FORM), values.get(names.TARGET_RATE))
            tried.add(key)
            if key[1] == UNPENALIZED and trial.status == COMPLETED:
                reached[key[0]] = trial.metrics.get_last_value(names.VAL_EXCEEDANCE_RATE)
            elif key[1] == UNPENALIZED and trial.status == RUNNING:
                running.add(key[0])
        for form in self.forms:
            if (form, UNPENALIZED) not in tried:
                return form, UNPENALIZED
            if form in running:
                continue
            for target in self.target_rates:
                free = form in reached and reached[form] is not None and target >= reached[form]
                if (form, target) not in tried and not free:
                    return form, target
        return IDLE if running else STOPPED

    def populate_space(self, trial_id: str) -> dict:
        planned = self._plan()
        if planned in (IDLE, STOPPED):
            return {"status": planned}
        values = self._random_values()
        if values is None:
            return {"status": STOPPED}
        values[names.FORM], values[names.TARGET_RATE] = planned
        values[names.THRESHOLD_OFFSET] = min(values.get(names.THRESHOLD_OFFSET, 0.0), 0.0)

        def draw(hp):  # what depends on the planned form (its own hyperparameters) is drawn anew
            if hp.name in values:
                return values[hp.name]
            value = hp.random_sample(self._seed_state)
            self._seed_state += 1
            return value

        return {"status": RUNNING, "values": active_values(self.hyperparameters.space, draw)}


def objective(config: Config) -> kt.Objective:
    """The validation quality metric, in its direction."""
    return kt.Objective(names.val_quality(config.data.quality), direction=config.quality_direction)


def _hyperband(config: Config, **common) -> kt.Oracle:
    # Hyperband decides how many trials to run from the epoch budget, not from max_trials.
    search = config.search
    iterations = max(1, math.ceil(search.max_trials / max(1, search.epochs)))
    return kt.oracles.HyperbandOracle(max_epochs=search.epochs, factor=3, hyperband_iterations=iterations, **common)


def _pareto(config: Config, **common) -> kt.Oracle:
    search = config.search
    return ParetoOracle(
        quality_direction=config.quality_direction,
        sampler=search.sampler,
        max_exceedance=search.max_exceedance,
        # NSGA-II needs a few generations within the budget: about a third of it per generation.
        population_size=max(4, min(50, search.max_trials // 3)),
        max_trials=search.max_trials,
        **common,
    )


def _frontier(config: Config, **common) -> kt.Oracle:
    search = config.search
    # Enough trials for the whole plan: an unpenalized trial and every target, per form.
    budget = len(config.penalty.forms) * (1 + len(search.target_rates))
    return FrontierOracle(config.penalty.forms, search.target_rates, max_trials=budget, **common)


# Oracle name -> (config, keras-tuner's common oracle arguments) -> the oracle. `config.ORACLES`
# lists the same names.
ORACLES = {
    "random": lambda config, **common: kt.oracles.RandomSearchOracle(max_trials=config.search.max_trials, **common),
    "bayesian": lambda config, **common: kt.oracles.BayesianOptimizationOracle(
        max_trials=config.search.max_trials, **common
    ),
    "grid": lambda config, **common: ResumableGridSearchOracle(max_trials=config.search.max_trials, **common),
    "hyperband": _hyperband,
    "pareto": _pareto,
    "frontier": _frontier,
}


def make_oracle(config: Config) -> kt.Oracle:
    """The keras-tuner oracle named by `search.oracle` (a name in `ORACLES`)."""
    search = config.search
    if search.oracle not in ORACLES:
        raise ValueError(f"unknown oracle {search.oracle!r}; allowed: {', '.join(ORACLES)}")
    return ORACLES[search.oracle](
        config,
        objective=objective(config),
        # keras-tuner replaces a falsy seed (our default 0) with a random one: shift by one so
        # every seed, 0 included, gives the same proposals on every run.
        seed=search.seed + 1,
        # One above ours: the tuner stops first, with a clear message and the run recorded.
        max_consecutive_failed_trials=search.max_consecutive_failures + 1,
    )

"""The search space (a keras-tuner HyperModel) and the oracle that explores it.

The HyperModel only declares hyperparameters and builds a compiled model from them; running
trials and tracking them is `trial.ExceedanceTuner`'s job.
"""

from __future__ import annotations

import math

import keras
import keras_tuner as kt
import numpy as np
from hydra.utils import get_method

from exceedance.config import PENALTY_FORMS, Config, Range, extra_hyperparameters
from exceedance.data import TargetScale
from exceedance.losses import PenalizedLoss
from exceedance.metrics import training_metrics
from exceedance.names import FORM, THRESHOLD_OFFSET


def _grid(r: Range, points: int, log: bool) -> list[float]:
    values = np.geomspace(r.low, r.high, points) if log else np.linspace(r.low, r.high, points)
    return sorted({float(f"{v:.4g}") for v in values})


class ExceedanceHyperModel(kt.HyperModel):
    """Declares the penalty form, threshold offset, lambda, the form's own hyperparameters
    (`config.PENALTY_FORMS`, e.g. temperature) and the learning rate; builds the model.

    Args:
        config: the search's configuration.
        n_features: input width of the data.
        n_outputs: output width of the data.
        target: how the data's targets are scaled for training (`Dataset.target`).
    """

    def __init__(self, config: Config, n_features: int, n_outputs: int, target: TargetScale | None = None):
        super().__init__(name="exceedance")
        self.config = config
        self.n_features = n_features
        self.n_outputs = n_outputs
        self.target = target or TargetScale()

    @property
    def offset(self) -> float:
        """The threshold offset of a config with it fixed (a retrain's)."""
        return float(self.config.penalty.threshold_offset.low)

    @property
    def model_limit(self) -> float:
        """The evaluation limit in the units the model trains in."""
        return float(self.target.to_model(self.config.data.limit))

    def threshold(self, offset: float) -> float:
        """The training threshold in the user's units, for an offset in target standard deviations."""
        return float(self.config.data.limit + offset * self.target.scale)

    def _value(self, hp: kt.HyperParameters, name: str, r: Range, log: bool) -> float:
        if r.low == r.high:
            return hp.Fixed(name, float(r.low))
        if self.config.search.oracle == "grid":
            return hp.Choice(name, _grid(r, self.config.search.grid_points, log))
        return hp.Float(name, r.low, r.high, sampling="log" if log else "linear")

    def trial_params(self, hp: kt.HyperParameters) -> dict[str, float | str]:
        """Declare the trial's hyperparameters and return their values, with the training
        threshold they give in the user's units (`threshold`) and only the extras of its form."""
        penalty = self.config.penalty
        offset = self._value(hp, THRESHOLD_OFFSET, penalty.threshold_offset, log=False)
        params: dict[str, float | str] = {
            FORM: hp.Choice(FORM, list(penalty.forms)),
            THRESHOLD_OFFSET: offset,
            "threshold": self.threshold(offset),
            "lam": self._value(hp, "lam", penalty.lam, log=penalty.lam.low > 0),
        }
        for extra in extra_hyperparameters(penalty.forms):
            using = [form for form in penalty.forms if extra in PENALTY_FORMS[form]]
            with hp.conditional_scope(FORM, using):
                value = self._value(hp, extra, getattr(penalty, extra), log=True)
            if params[FORM] in using:
                params[extra] = value
        params["learning_rate"] = self._value(hp, "learning_rate", self.config.search.learning_rate, log=True)
        return params

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        params = self.trial_params(hp)
        model_cfg = self.config.model
        builder = get_method(model_cfg._target_)
        model = builder(
            self.n_features,
            self.n_outputs,
            hidden_units=list(model_cfg.hidden_units),
            activation=model_cfg.activation,
            output_activation=model_cfg.output_activation,
            **dict(model_cfg.options),
        )
        form = str(params[FORM])
        loss = PenalizedLoss(
            self.config.penalty.base_loss,
            form,
            self.model_limit + float(params[THRESHOLD_OFFSET]),
            float(params["lam"]),
            {extra: float(params[extra]) for extra in PENALTY_FORMS[form]},
        )
        data = self.config.data
        model.compile(
            optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
            loss=loss,
            metrics=training_metrics(loss, self.model_limit, data.quality, data.tolerance, self.target.scale),
            jit_compile=self.config.search.jit_compile,
        )
        return model


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


def objective(config: Config) -> kt.Objective:
    """The validation quality metric, in its direction."""
    return kt.Objective(f"val_{config.data.quality}", direction=config.quality_direction)


def _hyperband(config: Config, **common) -> kt.Oracle:
    # Hyperband decides how many trials to run from the epoch budget, not from max_trials.
    search = config.search
    iterations = max(1, math.ceil(search.max_trials / max(1, search.epochs)))
    return kt.oracles.HyperbandOracle(max_epochs=search.epochs, factor=3, hyperband_iterations=iterations, **common)


# Oracle name -> (config, keras-tuner's common oracle arguments) -> the oracle. `config.ORACLES`
# lists the same names.
ORACLES = {
    "random": lambda config, **common: kt.oracles.RandomSearchOracle(max_trials=config.search.max_trials, **common),
    "bayesian": lambda config, **common: kt.oracles.BayesianOptimizationOracle(
        max_trials=config.search.max_trials, **common
    ),
    "grid": lambda config, **common: ResumableGridSearchOracle(max_trials=config.search.max_trials, **common),
    "hyperband": _hyperband,
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

"""The search space: a keras-tuner HyperModel that declares the hyperparameters and builds a
compiled model from them. Exploring the space is the oracles' job (`oracles`), running and
recording trials the tuner's (`trial`).
"""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
from hydra.utils import get_method

from exceedance.config import PENALTY_FORMS, Config, Range, extra_hyperparameters
from exceedance.data import TargetScale
from exceedance.losses import PenalizedLoss
from exceedance.metrics import ExceedanceRate, training_metrics
from exceedance.names import FORM, TARGET_RATE, THRESHOLD_OFFSET
from exceedance.stacking import Copies, model_fields, stack_builder, stackable
from exceedance.target_rate import DualAscent
from exceedance.trial_stack import SlotTrial, TrialStack

STACK_MEMORY = 1 << 30  # bytes of activations a stack of trials may hold


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
        offsets = penalty.threshold_offset
        if penalty.target_rate is not None:  # a penalty above the limit cannot meet a target
            offsets = Range(offsets.low, min(offsets.high, 0.0))
        offset = self._value(hp, THRESHOLD_OFFSET, offsets, log=False)
        params: dict[str, float | str] = {
            FORM: hp.Choice(FORM, list(penalty.forms)),
            THRESHOLD_OFFSET: offset,
            "threshold": self.threshold(offset),
        }
        target = self._target_rate(hp)
        if target is None:
            params["lam"] = self._value(hp, "lam", penalty.lam, log=penalty.lam.low > 0)
        else:  # lambda is learned during training (target_rate.py)
            params[TARGET_RATE] = target
        for extra in extra_hyperparameters(penalty.forms):
            using = [form for form in penalty.forms if extra in PENALTY_FORMS[form]]
            with hp.conditional_scope(FORM, using):
                value = self._value(hp, extra, getattr(penalty, extra), log=True)
            if params[FORM] in using:
                params[extra] = value
        params["learning_rate"] = self._value(hp, "learning_rate", self.config.search.learning_rate, log=True)
        return params

    def declare(self, hp: kt.HyperParameters) -> kt.HyperParameters:
        """Declare the whole space in `hp`: every form's branch, so each form's own
        hyperparameters are declared under its condition. No model is built."""
        for form in self.config.penalty.forms:
            hp.values[FORM] = form
            hp.ensure_active_values()
            self.trial_params(hp)
        return hp

    def _target_rate(self, hp: kt.HyperParameters) -> float | None:
        """The trial's target exceedance rate, when lambda is learned rather than searched."""
        search, penalty = self.config.search, self.config.penalty
        if search.oracle == "frontier":  # one trial per target; 1.0 is the unpenalized first trial
            return hp.Choice(TARGET_RATE, [1.0, *sorted(search.target_rates, reverse=True)], ordered=False)
        if penalty.target_rate is not None:
            return hp.Fixed(TARGET_RATE, float(penalty.target_rate))
        return None

    def network(self) -> keras.Model:
        """A new model from the configured builder, uncompiled."""
        model = self.config.model
        return get_method(model._target_)(self.n_features, self.n_outputs, **model_fields(model))

    def slots(self, budget: int | None, rows: int) -> int:
        """Trials per step (`search.trials_per_step`), `auto` resolved for this search: 16 of the
        stacked MLP or 8 copies of another model; for the model-based oracles (bayesian,
        pareto) at most a quarter of the budget, so they still learn from results between
        steps; no more than the oracle's budget or than fit in `STACK_MEMORY` bytes of
        activations for `rows` rows."""
        search, model = self.config.search, self.config.model
        if search.trials_per_step != "auto":
            return int(search.trials_per_step)
        slots = 16 if stackable(model) else 8
        if search.oracle in ("bayesian", "pareto"):
            slots = min(slots, max(2, search.max_trials // 4))
        if budget:
            slots = min(slots, budget)
        widths = [self.n_features, *model.hidden_units, self.n_outputs]
        per_slot = 3 * 4 * rows * sum(widths)  # float32 activations, kept for the backward pass
        return max(1, min(slots, STACK_MEMORY // per_slot))

    def slot_trial(self, hp: kt.HyperParameters, seed: int, epochs: int) -> SlotTrial:
        """A trial's hyperparameters as one slot of a `TrialStack` takes them."""
        params = self.trial_params(hp)
        form = str(params[FORM])
        target = params.get(TARGET_RATE)
        return SlotTrial(
            form=form,
            threshold=self.model_limit + float(params[THRESHOLD_OFFSET]),
            lam=float(params.get("lam", 0.0)),
            learning_rate=float(params["learning_rate"]),
            epochs=epochs,
            seed=seed,
            extras={extra: float(params[extra]) for extra in PENALTY_FORMS[form]},
            target_rate=None if target is None else float(target),
        )

    def stack(self, slots: int) -> TrialStack:
        """`slots` trials side by side: the built-in MLP stacked, any other model as copies.
        With `search.jit_compile` unset, copies are compiled with XLA (4x faster steps, measured)
        and the stacked MLP is not (its steps gain less than XLA's compile time costs a search)."""
        model_cfg, data = self.config.model, self.config.data
        jit = self.config.search.jit_compile
        stack = stack_builder(model_cfg)
        if stack is not None:
            network = stack(slots, self.n_features, self.n_outputs, **model_fields(model_cfg))
        else:
            network = Copies(slots, self.network)
        return TrialStack(
            network,
            self.config.penalty.base_loss,
            self.model_limit,
            data.quality,
            data.tolerance,
            self.target.scale,
            (stack is None) if jit is None else jit,
        )

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        params = self.trial_params(hp)
        model = self.network()
        form, penalty = str(params[FORM]), self.config.penalty
        loss = PenalizedLoss(
            penalty.base_loss,
            form,
            self.model_limit + float(params[THRESHOLD_OFFSET]),
            float(params.get("lam", 0.0)),  # a learned lambda starts at 0: unpenalized
            {extra: float(params[extra]) for extra in PENALTY_FORMS[form]},
        )
        data = self.config.data
        metrics = training_metrics(loss, self.model_limit, data.quality, data.tolerance, self.target.scale)
        model.compile(
            optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
            loss=loss,
            metrics=metrics,
            jit_compile=bool(self.config.search.jit_compile),
        )
        if TARGET_RATE in params:
            rate = next(m for m in metrics if isinstance(m, ExceedanceRate))
            model.dual_ascent = DualAscent(
                loss.lam,
                rate,
                float(params[TARGET_RATE]),
                penalty.dual_lr,
                self.model_limit,
                seed=self.config.data.seed,
            )
        return model

"""Typed configuration schemas and their validation.

Every value a user can set lives in one of these dataclasses. They are registered in Hydra's
ConfigStore so a typo'd key or a wrong type fails at composition time, and `validate` checks
ranges and cross-field rules before any data is loaded, anything is trained or anything is
written to MLflow. This module must stay cheap to import: no Keras, no TensorFlow, no MLflow.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from exceedance.errors import ConfigError

# The names of each extension point, cheap to check before Keras is imported. Each is implemented
# by a registry in its own module, and tests/test_config.py checks both list the same names:
# penalty form -> the hyperparameters of its own, each searched on a log scale from the
# `PenaltyConfig` range of that name (`losses.FORMS`);
PENALTY_FORMS = {"l1": (), "l2": (), "sigmoid_count": ("temperature",)}
ORACLES = ("random", "bayesian", "hyperband", "grid", "pareto", "frontier")  # `oracles.ORACLES`
SAMPLERS = ("tpe", "nsga2")  # Optuna's multi-objective samplers behind oracle=pareto
DATASETS = ("synthetic", "diabetes", "breast_cancer", "file")  # `data.LOADERS`
# quality metric -> the direction in which it improves (`metrics.QUALITIES`).
QUALITY_DIRECTIONS = {"within_tolerance": "max", "accuracy": "max", "mae": "min", "mse": "min"}
# The worst value of a bounded quality: the quality of the hypervolume's reference point. An
# unbounded one (mae, mse) takes it from search.reference_quality.
WORST_QUALITY = {"within_tolerance": 0.0, "accuracy": 0.0}
OUTPUT_ACTIVATIONS = ("linear", "sigmoid")
# Names Keras resolves (`keras.losses.get`, `keras.activations.get`), checked here so a typo fails
# before TensorFlow starts; tests/test_config.py checks each one resolves in Keras.
BASE_LOSSES = ("mse", "mae", "huber", "log_cosh", "msle", "binary_crossentropy")
ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "elu", "selu", "gelu", "silu", "swish", "softplus", "softsign",
    "leaky_relu", "relu6", "mish", "hard_sigmoid", "exponential", "linear",
)  # fmt: skip
# An experiment name becomes a folder name (tuner, Hydra, picks) and part of MLflow filter
# strings: letters, digits, '.', '_' and '-', starting with a letter or digit.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Seeds go to NumPy, Python and TensorFlow; trial i trains with search.seed + i.
MAX_SEED = 2**31 - 1


@dataclass
class Range:
    """A closed interval searched by the tuner; `low == high` fixes the value."""

    low: float = MISSING
    high: float = MISSING


@dataclass
class DataConfig:
    """Which data set to train on, and the evaluation limit every trial is measured against."""

    name: str = "synthetic"
    # Every data option sets it; for your own file it is required, in your targets' units.
    limit: float = MISSING
    quality: str = "within_tolerance"
    # within_tolerance: a prediction within this many target standard deviations of the truth
    # (in the targets' own units when scale_targets is false)
    tolerance: float = 0.25
    # Train on standardized targets (one mean and standard deviation over all outputs of the
    # training rows), so the penalty's threshold offset, lambda and the tolerance mean the same
    # for any data; everything is reported in your units. Off for outputs bounded in (0, 1).
    scale_targets: bool = True
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    # synthetic only
    n_samples: int = 6000
    n_features: int = 8
    n_outputs: int = 4
    exceed_share: float = 0.3
    # file only: a .csv with a header row, or a .npz of named arrays. `targets` and `features`
    # take a list of names or a single name. Features: csv columns (default: every column that
    # is not a target), npz arrays (default: the array `x`).
    path: str = ""
    targets: Any = field(default_factory=list)
    features: Any = field(default_factory=list)

    def __post_init__(self) -> None:
        self.targets = _names(self.targets)
        self.features = _names(self.features)


@dataclass
class ModelConfig:
    """A model builder called as `_target_(n_features, n_outputs, **fields)`."""

    _target_: str = "exceedance.models.build_mlp"
    hidden_units: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "relu"
    output_activation: str = "linear"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PenaltyConfig:
    """The penalty's search space: forms, where it starts, how much it weighs, how soft it is.

    The training threshold is searched as an offset from the evaluation limit in target standard
    deviations (`data.scale_targets`): -0.5 starts the penalty half a standard deviation below
    the limit, whatever the data's units. Trials record the threshold itself in your units.
    """

    forms: list[str] = field(default_factory=lambda: list(PENALTY_FORMS))
    base_loss: str = "mse"
    threshold_offset: Range = field(default_factory=lambda: Range(-0.5, 0.2))
    lam: Range = field(default_factory=lambda: Range(0.01, 10.0))
    # Target-rate training: with a rate E, lambda is not searched but learned during training so
    # the exceedance rate on the limit meets E (see target_rate.py): dual_lr is the step of its
    # update, dual_rows the share of training rows held out to estimate the rate on (0: the
    # training batches themselves).
    target_rate: float | None = None
    dual_lr: float = 4.0
    dual_rows: float = 0.0
    # sigmoid_count's own: how soft its step is (see `PENALTY_FORMS`)
    temperature: Range = field(default_factory=lambda: Range(0.02, 0.5))


@dataclass
class SearchConfig:
    """How keras-tuner explores the space and how long each trial trains."""

    oracle: str = "random"
    # oracle=pareto: the Optuna sampler, and an optional cap on the exceedance rate it treats as a
    # constraint (it searches where trials meet it; exceedance-pick's default rule uses it too)
    sampler: str = "tpe"
    max_exceedance: float | None = None
    # oracle=frontier: one target-rate trial per target and penalty form (after an unpenalized
    # one that measures the rate a model reaches on its own); its budget, not max_trials
    target_rates: list[float] = field(default_factory=lambda: [0.005, 0.01, 0.02, 0.05, 0.1, 0.2])
    max_trials: int = 12
    epochs: int = 8
    batch_size: int = 128
    learning_rate: Range = field(default_factory=lambda: Range(1e-3, 1e-2))
    grid_points: int = 3
    seed: int = 0
    overwrite: bool = False
    directory: str = "mlruns/tuner"
    max_consecutive_failures: int = 3
    # XLA compiles each new model for ~2 s on CPU, which doubles a small model's trial
    # (benchmarks/trial_overhead.py); worth it only when a trial trains for minutes.
    jit_compile: bool = False
    # TensorFlow's thread pools; 0 = its default (one thread per core). With several parallel
    # jobs on one machine, 1 and 1 avoid oversubscribing the cores (see the README's Performance).
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # The quality of the front's reference point (with exceedance rate 1) for its hypervolume:
    # required for an unbounded quality (mae, mse), in your units; bounded ones default to their
    # worst value (0 for within_tolerance and accuracy).
    reference_quality: float | None = None


@dataclass
class TrackingConfig:
    """Where MLflow writes. An empty `uri` means MLFLOW_TRACKING_URI, else SQLite under mlruns/."""

    uri: str = ""
    store_dir: str = "mlruns"
    timeout_s: float = 5.0
    # tracking=server: connect to (or start) `mlflow server` on host:port, store under store_dir
    server: bool = False
    host: str = "127.0.0.1"
    port: int = 5000
    start_timeout_s: float = 90.0


@dataclass
class Config:
    """One search: `name` is the MLflow experiment all its runs go to."""

    name: str = "exceedance"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def quality_direction(self) -> str:
        return QUALITY_DIRECTIONS[self.data.quality]

    @property
    def reference_quality(self) -> float:
        """The quality of the hypervolume's reference point (see `SearchConfig.reference_quality`)."""
        given = self.search.reference_quality
        return float(given) if given is not None else WORST_QUALITY[self.data.quality]


def extra_hyperparameters(forms: list[str]) -> list[str]:
    """The hyperparameters of their own that `forms` search (e.g. `["temperature"]`)."""
    return sorted({extra for form in forms for extra in PENALTY_FORMS.get(form, ())})


def _names(value: Any) -> list:
    """`data.targets=peak` and `data.targets=[peak]` mean the same."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def safe_name(value: Any, field_name: str = "name") -> str:
    """`value` if it is usable as an experiment name and a folder name; else `ConfigError`.

    Example:
        `safe_name("../../x")` raises ``name: '../../x' cannot name an experiment; ...``.
    """
    text = str(value)
    _require(
        NAME_PATTERN.fullmatch(text) is not None,
        field_name,
        f"{text!r} cannot name an experiment; use up to 100 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit",
    )
    return text


def register_configs() -> None:
    """Register the schema so `conf/config.yaml` can start from it (`defaults: [base_config]`),
    and the `safe_name` resolver its output folders go through (`${safe_name:${name}}`)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="base_config", node=Config)
    OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


def _one_of(value: str, allowed: tuple[str, ...], field_name: str) -> None:
    _require(value in allowed, field_name, f"unknown value {value!r}; allowed: {', '.join(allowed)}")


def _finite(value: float, field_name: str) -> None:
    _require(math.isfinite(value), field_name, f"must be a finite number, got {value}")


def _range(r: Range, field_name: str, *, positive: bool = False, non_negative: bool = False) -> None:
    for side in ("low", "high"):
        _finite(getattr(r, side), f"{field_name}.{side}")
    if non_negative:
        _require(r.low >= 0, f"{field_name}.low", f"must be >= 0, got {r.low}")
    if positive:
        _require(r.low > 0, f"{field_name}.low", f"must be > 0, got {r.low}")
    _require(r.low <= r.high, field_name, f"low ({r.low}) must be <= high ({r.high})")


def validate(config: Config) -> None:
    """Check every range and cross-field rule; raise `ConfigError` naming the first bad field.

    Args:
        config: the composed configuration.

    Raises:
        ConfigError: with a one-line message such as
            ``penalty.temperature.low: must be > 0, got 0.0``.
    """
    data, penalty, search = config.data, config.penalty, config.search
    safe_name(config.name)
    for name, seed in (("data.seed", data.seed), ("search.seed", search.seed)):
        _require(0 <= seed <= MAX_SEED, name, f"must be in 0..{MAX_SEED}, got {seed}")
    _one_of(data.name, DATASETS, "data.name")
    _finite(data.limit, "data.limit")
    _one_of(data.quality, tuple(QUALITY_DIRECTIONS), "data.quality")
    _require(data.tolerance > 0, "data.tolerance", f"must be > 0, got {data.tolerance}")
    for name in ("val_fraction", "test_fraction"):
        value = getattr(data, name)
        _require(0 < value < 0.5, f"data.{name}", f"must be in (0, 0.5), got {value}")
    _require(0 < data.exceed_share < 1, "data.exceed_share", f"must be in (0, 1), got {data.exceed_share}")
    for name in ("n_samples", "n_features", "n_outputs"):
        _require(getattr(data, name) >= 1, f"data.{name}", f"must be >= 1, got {getattr(data, name)}")
    if data.name == "file":
        _require(bool(data.path), "data.path", "is required when data.name=file (a .csv or .npz file)")
        _require(bool(data.targets), "data.targets", "is required when data.name=file, e.g. data.targets=peak or [a,b]")
    for name in ("targets", "features"):
        values = getattr(data, name)
        _require(
            all(isinstance(v, str) and v for v in values),
            f"data.{name}",
            f"expected column or array names, got {values}",
        )
        duplicated = sorted({v for v in values if values.count(v) > 1})
        _require(not duplicated, f"data.{name}", f"names {duplicated} are given twice")
    both = sorted(set(data.targets) & set(data.features))
    _require(not both, "data.features", f"{both} are also targets; a target cannot be a feature")

    _one_of(config.model.output_activation, OUTPUT_ACTIVATIONS, "model.output_activation")
    _one_of(config.model.activation, ACTIVATIONS, "model.activation")
    _require(
        not (data.scale_targets and config.model.output_activation == "sigmoid"),
        "data.scale_targets",
        "must be false with model.output_activation=sigmoid (outputs in (0, 1) learn targets as they are)",
    )
    _one_of(penalty.base_loss, BASE_LOSSES, "penalty.base_loss")
    _require(
        all(u >= 1 for u in config.model.hidden_units),
        "model.hidden_units",
        f"every layer needs >= 1 unit, got {list(config.model.hidden_units)}",
    )

    _require(len(penalty.forms) > 0, "penalty.forms", f"needs at least one of {', '.join(PENALTY_FORMS)}")
    for form in penalty.forms:
        _one_of(form, PENALTY_FORMS, "penalty.forms")
    _range(penalty.threshold_offset, "penalty.threshold_offset")
    _range(penalty.lam, "penalty.lam", non_negative=True)
    if penalty.lam.low < penalty.lam.high:
        _require(
            penalty.lam.low > 0,
            "penalty.lam.low",
            "must be > 0 when lambda is searched (log scale); set low == high to fix it at 0",
        )
    if penalty.target_rate is not None or search.oracle == "frontier":
        rate = penalty.target_rate
        _require(rate is None or 0 < rate < 1, "penalty.target_rate", f"must be a rate in (0, 1), got {rate}")
        _require(
            penalty.threshold_offset.low <= 0,
            "penalty.threshold_offset.low",
            "must be <= 0 with a target rate (a penalty that starts above the limit cannot push predictions "
            f"below it; offsets above 0 are left out of the search), got {penalty.threshold_offset.low}",
        )
    dual_lr = penalty.dual_lr
    _require(math.isfinite(dual_lr) and dual_lr > 0, "penalty.dual_lr", f"must be a finite number > 0, got {dual_lr}")
    _require(0 <= penalty.dual_rows < 0.5, "penalty.dual_rows", f"must be in [0, 0.5), got {penalty.dual_rows}")
    for extra in extra_hyperparameters(penalty.forms):
        _range(getattr(penalty, extra), f"penalty.{extra}", positive=True)

    _one_of(search.oracle, ORACLES, "search.oracle")
    _one_of(search.sampler, SAMPLERS, "search.sampler")
    _require(
        len(search.target_rates) > 0 and all(0 < r < 1 for r in search.target_rates),
        "search.target_rates",
        f"needs rates in (0, 1), got {list(search.target_rates)}",
    )
    if search.max_exceedance is not None:
        _require(
            0 <= search.max_exceedance <= 1,
            "search.max_exceedance",
            f"must be a rate in 0..1, got {search.max_exceedance}",
        )
    for name in ("max_trials", "epochs", "batch_size", "grid_points", "max_consecutive_failures"):
        value = getattr(search, name)
        _require(value >= 1, f"search.{name}", f"must be >= 1, got {value}")
    _range(search.learning_rate, "search.learning_rate", positive=True)
    if search.reference_quality is None:
        _require(
            data.quality in WORST_QUALITY,
            "search.reference_quality",
            f"is required with data.quality={data.quality}: the worst {data.quality} a front may count, in "
            f"your targets' units (the hypervolume's reference point), e.g. search.reference_quality=1.0",
        )
    else:
        _finite(search.reference_quality, "search.reference_quality")
    for name in ("intra_op_threads", "inter_op_threads"):
        value = getattr(search, name)
        _require(value >= 0, f"search.{name}", f"must be >= 0 (0 = TensorFlow's default), got {value}")
    _require(1 <= config.tracking.port <= 65535, "tracking.port", f"must be in 1..65535, got {config.tracking.port}")
    _require(
        not (config.tracking.server and config.tracking.uri),
        "tracking.uri",
        "must be empty with tracking=server (the server's address is tracking.host:tracking.port)",
    )
    _require(config.tracking.timeout_s > 0, "tracking.timeout_s", f"must be > 0, got {config.tracking.timeout_s}")
    check_builder(config.model)


def check_builder(model: ModelConfig) -> None:
    """Raise `ConfigError` unless `model._target_` is a function that takes the model fields and
    `model.options` (imports its module, which for `exceedance.models` does not import Keras)."""
    module_name, _, function = model._target_.rpartition(".")
    hint = "give a function as package.module.function, e.g. exceedance.models.build_mlp"
    _require(bool(module_name), "model._target_", f"{model._target_!r} is not a dotted path; {hint}")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # an ImportError, or whatever the user's module raises on import
        raise ConfigError(f"model._target_: cannot import {module_name!r} ({err}); {hint}") from None
    builder = getattr(module, function, None)
    _require(callable(builder), "model._target_", f"{module_name!r} has no function {function!r}; {hint}")
    fields = {"hidden_units": list(model.hidden_units), "activation": model.activation}
    fields["output_activation"] = model.output_activation
    try:
        inspect.signature(builder).bind(1, 1, **fields, **dict(model.options))
    except TypeError as err:
        raise ConfigError(
            f"model.options: {model._target_} cannot take {sorted(model.options)} ({err}); "
            f"it takes {list(inspect.signature(builder).parameters)[2:]}"
        ) from None

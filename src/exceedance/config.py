"""Typed configuration schemas, and the names of every extension point.

Every value a user can set lives in one of these dataclasses. They are registered in Hydra's
ConfigStore so a typo'd key or a wrong type fails at composition time; `validation.validate`
checks ranges and cross-field rules before any data is loaded, anything is trained or anything
is written to MLflow. This module must stay cheap to import: no Keras, no TensorFlow, no MLflow.
"""

from __future__ import annotations

import re
import sys
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
# Models train and predict in float32: every input value, limit and setting that reaches a tensor
# must be a number it can hold (`numpy.finfo(numpy.float32).max`, without importing NumPy here).
FLOAT32_MAX = 3.4028234663852886e38


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
    # Rows no search or pick ever reads: exceedance-train --certify bounds the shipped model's
    # exceedance rate on them (their labels are not used).
    calibration_fraction: float = 0.15
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
    # Trials trained side by side in one compiled step: `auto` (16 for the built-in MLP, 8 copies
    # of a model._target_, fewer for bayesian and pareto so they learn between steps, and within
    # the budget and memory), a number, or 1 for one model per trial (keras-tuner's own loop).
    trials_per_step: str = "auto"
    # XLA. Unset: on for copies of a model._target_ trained several per step (compiled once per
    # search, their steps run 4x faster: benchmarks/trial_throughput.py); off for the stacked
    # MLP (its steps gain less than the compile costs a search of a few hundred trials) and for
    # one model per trial (~2 s per new model on CPU, doubling a small trial:
    # benchmarks/trial_overhead.py). true or false sets it for all.
    jit_compile: bool | None = None
    # TensorFlow's thread pools; 0 = its default (one thread per core). With several parallel
    # jobs on one machine, 1 and 1 avoid oversubscribing the cores (see the README's Performance).
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # The quality of the front's reference point (with exceedance rate 1) for its hypervolume:
    # required for an unbounded quality (mae, mse), in your units; bounded ones default to their
    # worst value (0 for within_tolerance and accuracy).
    reference_quality: float | None = None
    # Worker processes sharing this search (`workers.py`): one oracle, served over gRPC by this
    # command (keras-tuner's chief), proposes; each worker trains its own trials. With more
    # than 1, `listen` is where the oracle is served (port 0: any free one); on another host,
    # `join=HOST:PORT` starts `workers` more workers on the search served there.
    workers: int = 1
    listen: str = "127.0.0.1:0"
    join: str = ""


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
    if NAME_PATTERN.fullmatch(text) is None:
        raise ConfigError(
            f"{field_name}: {text!r} cannot name an experiment; use up to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return text


def to_config(cfg: Any, source: str) -> Config:
    """The composed Hydra config `cfg` as a `Config`; `ConfigError` naming `source` (the file the
    user gave) when it does not start from the schema, so its values were never typed or checked.

    Example:
        A `picked.yaml` whose `defaults: [base_config, _self_]` line was deleted raises
        ``config: picked.yaml does not start from the schema (its first line must be ...)``.
    """
    from omegaconf import OmegaConf

    config = OmegaConf.to_object(cfg)
    if not isinstance(config, Config):
        raise ConfigError(
            f"config: {source} does not start from the schema (its first line must be "
            "'defaults: [base_config, _self_]'); add that line, or export the file again with exceedance-pick"
        )
    return config


def register_configs() -> None:
    """Register the schema so `conf/config.yaml` can start from it (`defaults: [base_config]`),
    and the `safe_name` resolver its output folders go through (`${safe_name:${name}}`)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # Numbers come from the user's own command line and files: one of thousands of digits must
    # reach `validate` (one line naming its field), not stop Hydra's or YAML's parser on Python's
    # cap on int() of long strings (a ValueError and a traceback).
    sys.set_int_max_str_digits(0)
    ConfigStore.instance().store(name="base_config", node=Config)
    OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)

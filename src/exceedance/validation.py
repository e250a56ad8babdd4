"""Ranges and cross-field rules of a composed config, checked before anything is loaded or trained.

`validate` raises a `ConfigError` naming the first bad field, the value, and what is allowed.
Cheap to import: no Keras, no TensorFlow, no MLflow (a model builder's module is imported to
check its signature; `exceedance.models` imports Keras only when it builds).
"""

from __future__ import annotations

import importlib
import inspect
import math
import re

from exceedance.config import (
    ACTIVATIONS,
    BASE_LOSSES,
    DATASETS,
    FLOAT32_MAX,
    MAX_SEED,
    ORACLES,
    OUTPUT_ACTIVATIONS,
    PENALTY_FORMS,
    QUALITY_DIRECTIONS,
    SAMPLERS,
    WORST_QUALITY,
    Config,
    ModelConfig,
    Range,
    extra_hyperparameters,
    safe_name,
)
from exceedance.errors import ConfigError

# Whole-number fields and their closed bounds. Each upper bound is where a larger value would fail
# later, after TensorFlow has started (memory, TensorFlow's int32 settings, a port) or is beyond
# any use; tests/test_config.py tries a huge and a negative value for every numeric field.
WHOLE_NUMBERS: dict[str, tuple[int, int]] = {
    "data.seed": (0, MAX_SEED),
    "search.seed": (0, MAX_SEED),
    "data.n_samples": (1, 10**8),
    "data.n_features": (1, 10**5),
    "data.n_outputs": (1, 10**4),
    "search.max_trials": (1, 10**6),
    "search.epochs": (1, 10**6),
    "search.batch_size": (1, 2**20),
    "search.grid_points": (1, 100),
    "search.max_consecutive_failures": (1, 10**6),
    "search.intra_op_threads": (0, 1024),  # 0 = TensorFlow's default
    "search.inter_op_threads": (0, 1024),
    "search.workers": (1, 256),
    "tracking.port": (1, 65535),
}
# Synthetic data is drawn in memory: at most this many values (rows x (features + outputs)).
MAX_SYNTHETIC_VALUES = 10**8
MAX_UNITS, MAX_LAYERS = 65536, 100
MAX_TRIALS_PER_STEP = 1024
MAX_TIMEOUT_S = 86400.0
# Text that reads as a whole number: ASCII digits only (str.isdigit() also takes '²' and '٣'),
# and few enough of them for int() (which refuses more than 4,300).
_DIGITS = re.compile(r"[0-9]{1,18}")


def whole_number(text: str) -> int | None:
    """`text` as a whole number if it is one written in ASCII digits, else None.

    Example:
        `whole_number("16")` is 16; `whole_number("²")`, `whole_number("-2")` and
        `whole_number("1e3")` are None.
    """
    return int(text) if _DIGITS.fullmatch(text) else None


def _shown(value) -> str:
    """`value` for a message, cut short when it is thousands of digits or characters long."""
    if isinstance(value, int) and abs(value) >= 10**30:
        digits = math.floor(math.log10(abs(value))) + 1
        digits -= 10 ** (digits - 1) > abs(value)  # log10 rounds up just below a power of ten
        return f"a whole number of {digits} digits"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else f"{text[:20]}... ({len(text)} characters)"


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


def _one_of(value: str, allowed: tuple[str, ...], field_name: str) -> None:
    _require(value in allowed, field_name, f"unknown value {value!r}; allowed: {', '.join(allowed)}")


def _finite(value: float, field_name: str) -> None:
    """A number float32 holds: finite and within its range."""
    _require(
        math.isfinite(value) and abs(value) <= FLOAT32_MAX,
        field_name,
        f"must be a finite number, got {value}; a float32 model holds numbers within +-{FLOAT32_MAX:.4g}",
    )


def _field(config: Config, dotted: str):
    section, _, name = dotted.partition(".")
    return getattr(getattr(config, section), name)


def _range(r: Range, field_name: str, *, positive: bool = False, non_negative: bool = False) -> None:
    for side in ("low", "high"):
        _finite(getattr(r, side), f"{field_name}.{side}")
    if non_negative:
        _require(r.low >= 0, f"{field_name}.low", f"must be >= 0, got {r.low}")
    if positive:
        _require(r.low > 0, f"{field_name}.low", f"must be > 0, got {r.low}")
    _require(r.low <= r.high, field_name, f"low ({r.low}) must be <= high ({r.high})")


def address(field_name: str, value: str, any_port: bool = False) -> tuple[str, int]:
    """`HOST:PORT` split, once both parts are usable (`any_port`: 0 for any free port)."""
    host, _, text = str(value).rpartition(":")
    lowest, port = (0 if any_port else 1), whole_number(text)
    _require(
        bool(host) and port is not None and lowest <= port <= 65535,
        field_name,
        f"must be HOST:PORT with a port in {lowest}..65535, got {_shown(str(value))}",
    )
    return host, port


def validate(config: Config) -> None:
    """Check every range and cross-field rule; raise `ConfigError` naming the first bad field.

    Every numeric field has both of its bounds here (`WHOLE_NUMBERS` for the whole numbers), so
    a huge value is one line before TensorFlow starts, not a crash after.

    Args:
        config: the composed configuration (`config.to_config`).

    Raises:
        ConfigError: with a one-line message such as
            ``penalty.temperature.low: must be > 0, got 0.0``.
    """
    _require(isinstance(config, Config), "config", "is not an exceedance config; compose it from base_config")
    data, penalty, search = config.data, config.penalty, config.search
    safe_name(config.name)
    for name, (low, high) in WHOLE_NUMBERS.items():
        value = _field(config, name)
        _require(low <= value <= high, name, f"must be in {low}..{high}, got {_shown(value)}")
    _one_of(data.name, DATASETS, "data.name")
    _finite(data.limit, "data.limit")
    _one_of(data.quality, tuple(QUALITY_DIRECTIONS), "data.quality")
    _finite(data.tolerance, "data.tolerance")
    _require(data.tolerance > 0, "data.tolerance", f"must be > 0, got {data.tolerance}")
    for name in ("val_fraction", "test_fraction"):
        value = getattr(data, name)
        _require(0 < value < 0.5, f"data.{name}", f"must be in (0, 0.5), got {value}")
    _require(
        0 <= data.calibration_fraction < 0.5,
        "data.calibration_fraction",
        f"must be in [0, 0.5), got {data.calibration_fraction}",
    )
    held = data.val_fraction + data.test_fraction + data.calibration_fraction
    _require(
        held <= 0.8,
        "data.calibration_fraction",
        f"val, test and calibration fractions take {held:.3g} of the rows; leave at least 0.2 to train on",
    )
    _require(0 < data.exceed_share < 1, "data.exceed_share", f"must be in (0, 1), got {data.exceed_share}")
    if data.name == "synthetic":
        values = data.n_samples * (data.n_features + data.n_outputs)
        _require(
            values <= MAX_SYNTHETIC_VALUES,
            "data.n_samples",
            f"{data.n_samples} rows of {data.n_features} features and {data.n_outputs} outputs are {values:.3g} "
            f"values; synthetic data is drawn in memory, at most {MAX_SYNTHETIC_VALUES:.0e}",
        )
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
    steps = str(search.trials_per_step)
    per_step = whole_number(steps)
    _require(
        steps == "auto" or (per_step is not None and 1 <= per_step <= MAX_TRIALS_PER_STEP),
        "search.trials_per_step",
        f"expected auto or a whole number in 1..{MAX_TRIALS_PER_STEP}, got {_shown(steps)}",
    )
    units = list(config.model.hidden_units)
    _require(
        len(units) <= MAX_LAYERS and all(1 <= u <= MAX_UNITS for u in units),
        "model.hidden_units",
        f"every layer needs 1..{MAX_UNITS} units, at most {MAX_LAYERS} layers, got [{', '.join(map(_shown, units))}]",
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
    _finite(penalty.dual_lr, "penalty.dual_lr")
    _require(penalty.dual_lr > 0, "penalty.dual_lr", f"must be a finite number > 0, got {penalty.dual_lr}")
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
    address("search.listen", search.listen, any_port=True)
    if search.join:
        address("search.join", search.join)
    _require(
        not (config.tracking.server and config.tracking.uri),
        "tracking.uri",
        "must be empty with tracking=server (the server's address is tracking.host:tracking.port)",
    )
    for name in ("timeout_s", "start_timeout_s"):
        value = getattr(config.tracking, name)
        _require(
            0 < value <= MAX_TIMEOUT_S, f"tracking.{name}", f"must be in (0, {MAX_TIMEOUT_S:g}] seconds, got {value}"
        )
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

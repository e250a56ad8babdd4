"""Ranges and cross-field rules of a composed config, checked before anything is loaded or trained.

`validate` raises a `ConfigError` naming the first bad field, the value, and what is allowed.
Cheap to import: no Keras, no TensorFlow, no MLflow (a model builder's module is imported to
check its signature; `exceedance.models` imports Keras only when it builds).
"""

from __future__ import annotations

import importlib
import inspect
import math

from exceedance.config import (
    ACTIVATIONS,
    BASE_LOSSES,
    DATASETS,
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


def address(field_name: str, value: str, any_port: bool = False) -> tuple[str, int]:
    """`HOST:PORT` split, once both parts are usable (`any_port`: 0 for any free port)."""
    host, _, port = str(value).rpartition(":")
    lowest = 0 if any_port else 1
    _require(
        bool(host) and port.isdigit() and lowest <= int(port) <= 65535,
        field_name,
        f"must be HOST:PORT with a port in {lowest}..65535, got {value!r}",
    )
    return host, int(port)


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
    steps = str(search.trials_per_step)
    _require(
        steps == "auto" or (steps.isdigit() and 1 <= int(steps) <= 1024),
        "search.trials_per_step",
        f"expected auto or a whole number in 1..1024, got {steps!r}",
    )
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
    _require(1 <= search.workers <= 256, "search.workers", f"must be in 1..256, got {search.workers}")
    address("search.listen", search.listen, any_port=True)
    if search.join:
        address("search.join", search.join)
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

"""Retrain a picked configuration on train+val, test it, and ship it to the model registry.

A config exported by `exceedance-pick` has every searched value fixed. Retraining it on the
training and validation rows uses all labelled data except the test rows, which stay unseen so
the registered model's test figures are honest. The shipped model takes raw features: the
standardization the trials trained behind is folded into the model as its first layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from exceedance import data as data_module
from exceedance import names
from exceedance.certify import Certificate, CertificateFails, certify, check, hb_p_value, require_rate
from exceedance.config import PENALTY_FORMS, Config, Range
from exceedance.data_files import read_features
from exceedance.errors import ConfigError
from exceedance.quiet import import_tensorflow
from exceedance.recording.experiment import Experiment
from exceedance.registry import load_model, register_model
from exceedance.stores import connect
from exceedance.validation import validate

CHAMPION = "champion"


@dataclass
class TrainResult:
    """Where the model went and how it scored on the held-out test rows."""

    run_id: str
    model_uri: str
    version: str
    test: dict[str, float]
    rows: int
    reload_max_abs_diff: float
    tracking_uri: str
    certificate: Certificate | None = None
    test_before_offset: dict[str, float] | None = None


def require_fixed(config: Config) -> None:
    """Raise `ConfigError` unless the config names one trial: one penalty form, fixed values.

    Raises:
        ConfigError: naming the first searched field, e.g.
            ``penalty.lam: exceedance-train needs a fixed value (low == high), got 0.01..10``.
    """
    forms = list(config.penalty.forms)
    if len(forms) != 1:
        raise ConfigError(
            f"penalty.forms: exceedance-train needs exactly one penalty form, got {forms}; "
            "train a config exported by exceedance-pick"
        )
    searched: dict[str, Range] = {
        "penalty.threshold_offset": config.penalty.threshold_offset,
        "search.learning_rate": config.search.learning_rate,
    }
    if config.penalty.target_rate is None:  # else lambda is learned, not searched
        searched["penalty.lam"] = config.penalty.lam
    for extra in PENALTY_FORMS.get(forms[0], ()):
        searched[f"penalty.{extra}"] = getattr(config.penalty, extra)
    for name, r in searched.items():
        if r.low != r.high:
            raise ConfigError(
                f"{name}: exceedance-train needs a fixed value (low == high), got {r.low:g}..{r.high:g}; "
                "train a config exported by exceedance-pick"
            )


def check_registry_names(model_name: str, alias: str, name_option: str = "--model-name") -> None:
    """Raise `ConfigError` unless MLflow's registry takes `model_name` and `alias` (its own rules,
    checked before anything trains or is registered); `name_option` names where the name came
    from (`--model-name`, or the config's `name` when the user gave none)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (
        _validate_model_alias_name,
        _validate_model_alias_name_reserved,
        _validate_model_name,
    )

    for option, value, checks in (
        (name_option, model_name, [_validate_model_name]),
        ("--alias", alias, [_validate_model_alias_name, _validate_model_alias_name_reserved]),
    ):
        try:
            for check in checks:
                check(value)
        except MlflowException as err:
            raise ConfigError(f"{option}: {err.message}") from None


def default_model_name(config: Config) -> str:
    """The sweep's experiment name: an exported config is named `<sweep>-picked`."""
    return config.name.removesuffix("-picked")


def for_serving(model, dataset: data_module.Dataset, hypermodel, offset: float = 0.0):
    """`model` as users call it: raw features in (a fixed standardization layer first), targets in
    their units out (the training-time target scaling undone last, and a certified `offset`
    subtracted in the same layer), compiled with the loss and metrics in those units, so its
    saved compile config and its scores read as the user's."""
    import keras

    from exceedance.losses import PenalizedLoss
    from exceedance.metrics import training_metrics

    mean, std, target = dataset.feature_mean, dataset.feature_std, dataset.target
    inputs = keras.Input(shape=(len(mean),), name="features")
    scaled = keras.layers.Normalization(mean=mean, variance=np.square(std), name="standardize")(inputs)
    outputs = keras.layers.Rescaling(target.scale, target.shift - offset, name="to_target_units")(model(scaled))
    shipped = keras.Model(inputs, outputs, name=f"{model.name}_standardized")
    trained = model.loss
    loss = PenalizedLoss(
        trained.base, trained.form, hypermodel.threshold(hypermodel.offset), trained.get_config()["lam"], trained.extras
    )
    data = hypermodel.config.data
    metrics = training_metrics(loss, data.limit, data.quality, data.tolerance * target.scale)
    # A fresh optimizer of the same settings: the shipped model is for serving, not for resuming.
    # Built now, so the saved file holds all its slots and loading it does not warn.
    optimizer = type(model.optimizer).from_config(model.optimizer.get_config())
    optimizer.build(shipped.trainable_variables)
    shipped.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return shipped


def check_certifiable(rows: int, max_exceedance: float, confidence: float) -> None:
    """Raise `ConfigError` unless `rows` calibration rows are enough to certify `max_exceedance`
    at `confidence` (even with no exceedance among them), before anything trains."""
    require_rate("--certify", max_exceedance)
    require_rate("--confidence", confidence)
    if hb_p_value(0.0, max_exceedance, rows) > 1 - confidence:
        needed = math.ceil(math.log(1 - confidence) / math.log1p(-max_exceedance))
        raise ConfigError(
            f"--certify: {rows} calibration rows cannot certify an exceedance rate <= {max_exceedance:g} at "
            f"confidence {confidence:g} (it takes at least {needed}); raise data.calibration_fraction or lower "
            "--confidence"
        )


def require_holds(certificate: Certificate, tested: Certificate) -> None:
    """Raise `CertificateFails` unless `certificate` holds and the test rows' exceedance rate
    (`tested`, never used to choose the offset; outputs that are not finite count as above the
    limit) is within its bound: a model whose own check fails is never registered."""
    broken = f", {tested.non_finite} of them not finite numbers" if tested.non_finite else ""
    if not certificate.holds() or tested.rate > certificate.upper_bound:
        raise CertificateFails(
            f"--certify: the certificate does not hold: on the test rows {tested.exceedances} outputs are above the "
            f"limit {tested.limit:g}{broken}, rate {tested.rate:.4g}, outside the certified bound "
            f"{certificate.upper_bound:.4g} (exceedance rate <= {certificate.max_exceedance:g}); nothing was "
            "registered (the training run ends FAILED); certify on rows drawn like those the model will see"
        )


def train(
    config: Config,
    model_name: str,
    alias: str = CHAMPION,
    report: Callable[[str], None] = print,
    max_exceedance: float | None = None,
    confidence: float = 0.95,
    calibration_data: str | None = None,
) -> TrainResult:
    """Train `config` on train+val, evaluate on test, log and register the model, set `alias`;
    with `max_exceedance`, certify it on the calibration rows (and the features of the file
    `calibration_data`) first (`certify.certify`) and ship it with the offset that makes the
    certificate hold.

    Everything that can be wrong with the input is checked before TensorFlow is imported and
    before anything is written to MLflow.

    Args:
        config: a config with every searched value fixed (see `require_fixed`).
        model_name: the registered model's name.
        alias: the alias pointed at the new version.
        report: receives progress lines.

    Returns:
        A `TrainResult`; `reload_max_abs_diff` compares the model loaded back by alias with the
        one just trained, on the test rows.
    """
    validate(config)
    require_fixed(config)
    check_registry_names(model_name, alias)
    dataset = data_module.load(config.data)
    extra = np.zeros((0, dataset.n_features), np.float32)  # unlabelled calibration rows, in raw units
    if calibration_data is not None:
        extra = read_features(calibration_data, "--calibration-data", dataset.n_features)
    if max_exceedance is not None:
        check_certifiable(len(dataset.x_cal) + len(extra), max_exceedance, confidence)
    uri = connect(config.tracking, config.name)

    import_tensorflow()
    import keras
    import keras_tuner as kt
    from mlflow.models import infer_signature

    from exceedance.fitting import fit, use_threads
    from exceedance.search import ExceedanceHyperModel
    from exceedance.target_rate import training_rows

    use_threads(config.search)
    experiment = Experiment(uri, config.name)
    run_id = experiment.start_training(config, {names.MODEL_NAME: model_name})
    try:
        keras.utils.set_random_seed(config.search.seed)
        hypermodel = ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs, dataset.target)
        model = hypermodel.build(kt.HyperParameters())
        x = np.concatenate([dataset.x_train, dataset.x_val])
        y = np.concatenate([dataset.y_train, dataset.y_val])
        report(f"training on {len(x)} rows (train+val) for {config.search.epochs} epochs")
        x_fit, y_fit, control = training_rows(model, x, y, config.penalty.dual_rows)
        fitted = fit(
            model,
            x_fit,
            y_fit,
            epochs=config.search.epochs,
            batch_size=config.search.batch_size,
            on_epoch=lambda metrics, step: experiment.log_metrics(run_id, metrics, step),
            callbacks=control,
        )
        if fitted.diverged:
            raise ConfigError(f"{fitted.diverged}; lower search.learning_rate or penalty.lam and train again")
        shipped = for_serving(model, dataset, hypermodel)
        x_test, y_test = dataset.raw(dataset.x_test), dataset.target.to_user(dataset.y_test)
        test = shipped.evaluate(x_test, y_test, batch_size=1024, verbose=0, return_dict=True)
        certificate, before = None, None
        if max_exceedance is not None:
            rows = np.concatenate([dataset.raw(dataset.x_cal), extra.astype(np.float32)])
            outputs = shipped.predict(rows, batch_size=1024, verbose=0)
            certificate = certify(outputs, config.data.limit, max_exceedance, 1 - confidence)
            report(
                f"certified on {certificate.rows} calibration rows: exceedance rate <= {max_exceedance:g} at "
                f"confidence {confidence:g} with an output offset of {certificate.offset:.4g} "
                f"(outputs above the limit after it: {certificate.exceedances}; bound {certificate.upper_bound:.4g})"
            )
            if certificate.offset > 0:
                shipped, before = for_serving(model, dataset, hypermodel, certificate.offset), test
                test = shipped.evaluate(x_test, y_test, batch_size=1024, verbose=0, return_dict=True)
                experiment.log_metrics(
                    run_id, {f"test_before_offset/{k}": v for k, v in before.items()}, step=config.search.epochs
                )
            experiment.set_tags({run_id: certificate.as_tags(names.CERTIFICATE)})
        experiment.log_metrics(run_id, {f"{names.TEST}{k}": v for k, v in test.items()}, step=config.search.epochs)
        predictions = shipped.predict(x_test, batch_size=1024, verbose=0)
        if certificate is not None:
            require_holds(certificate, check(predictions, config.data.limit, max_exceedance, 1 - confidence))
        signature = infer_signature(x_test, predictions)
        version, model_uri = register_model(experiment, run_id, shipped, signature, model_name, alias)
        if certificate is not None:
            for key, value in certificate.as_tags(names.CERTIFICATE).items():
                experiment.client.set_model_version_tag(model_name, version, key, value)
    except BaseException:
        experiment.end_run(run_id, "FAILED")
        raise
    reloaded = load_model(experiment.uri, model_uri)
    diff = float(np.max(np.abs(reloaded.predict(x_test, batch_size=1024, verbose=0) - predictions)))
    scores = {k: float(v) for k, v in test.items()}
    before = None if before is None else {k: float(v) for k, v in before.items()}
    return TrainResult(run_id, model_uri, version, scores, len(x), diff, uri, certificate, before)

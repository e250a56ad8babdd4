"""`exceedance-certify`: re-check a registered model's exceedance rate on new inputs, no labels needed.

Scores the file's features with the model, bounds the rate at which its outputs exceed the
limit (the Hoeffding-Bentkus bound of `exceedance.certify`), prints PASS or FAIL with the
reason, and logs a run with the figures in the model's experiment. Exit code 0 on PASS, 3 on
FAIL, so a monitoring job can alert on it; bad input is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exceedance import names
from exceedance.cli.errors import exit_on_user_error
from exceedance.config import TrackingConfig
from exceedance.errors import ConfigError
from exceedance.stores import check_store, resolve_uri

COMMAND = "exceedance-certify"
FAILED = 3


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    p.add_argument("model", help="a registered model: models:/NAME@ALIAS or models:/NAME/VERSION")
    p.add_argument("--data", required=True, type=Path, help="new inputs: a .csv of feature columns, or a .npz with x")
    p.add_argument("--max-exceedance", type=float, default=None, metavar="E", help="default: the model's certificate")
    p.add_argument("--confidence", type=float, default=None, help="default: the model's certificate's, else 0.95")
    p.add_argument("--tracking-uri", default="", help="default: MLFLOW_TRACKING_URI, else sqlite under ./mlruns")
    return p


@dataclass
class Recheck:
    """What a re-check found, and where it was logged."""

    certificate: object  # certify.Certificate
    run_id: str

    @property
    def passed(self) -> bool:
        return self.certificate.holds()


def parse_model_uri(model: str) -> tuple[str, str, str]:
    """`(name, alias, version)` of a `models:/NAME@ALIAS` or `models:/NAME/VERSION` URI."""
    name, _, alias = model.removeprefix("models:/").partition("@")
    name, _, version = name.partition("/")
    if not model.startswith("models:/") or not name or bool(alias) == bool(version):
        raise ConfigError(f"model: {model!r} is not a registered model URI; use models:/NAME@ALIAS or models:/NAME/N")
    return name, alias, version


def _version(client, model: str):
    """The model version a `models:/` URI names."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(model)
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as err:
        raise ConfigError(f"model: {model} is not in the registry ({err.message.splitlines()[0]})") from None


def recheck(model: str, data: Path, max_exceedance: float | None, confidence: float | None, uri: str) -> Recheck:
    """Score `data` with `model` and bound its exceedance rate; log the re-check in MLflow."""
    from exceedance.certify import check
    from exceedance.data import read_file

    parse_model_uri(model)
    x, _ = read_file(str(data), [])  # features only; checked before the model is loaded
    if len(x) == 0 or not np.isfinite(x).all():
        raise ConfigError(f"--data: {data} has no rows, or values that are not finite numbers (nan, inf); clean it")
    check_store(uri, TrackingConfig().timeout_s, create=False)
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    version = _version(client, model)
    tags = version.tags
    limit = tags.get(f"{names.CERTIFICATE}limit")
    if limit is None:
        raise ConfigError(f"model: {model} carries no certificate (train it with exceedance-train --certify)")
    rate = max_exceedance if max_exceedance is not None else float(tags[f"{names.CERTIFICATE}max_exceedance"])
    if confidence is None:
        confidence = 1 - float(tags.get(f"{names.CERTIFICATE}delta", 0.05))
    for option, value in (("--max-exceedance", rate), ("--confidence", confidence)):
        if not 0 < value < 1:
            raise ConfigError(f"{option}: must be a rate in (0, 1), got {value:g}")

    import mlflow
    import mlflow.keras

    import exceedance.losses
    import exceedance.metrics  # noqa: F401

    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.keras.load_model(model)
    finally:
        mlflow.set_tracking_uri(None)
    width = loaded.input_shape[-1]
    if x.shape[1] != width:
        raise ConfigError(f"--data: {data} has {x.shape[1]} feature columns; the model takes {width}")
    outputs = loaded.predict(x.astype("float32"), batch_size=1024, verbose=0)
    certificate = check(outputs, float(limit), rate, 1 - confidence)
    experiment = client.get_run(version.run_id).info.experiment_id
    run = client.create_run(
        experiment,
        run_name=f"certify-{version.name}-v{version.version}",
        tags={names.ROLE: "certification", "mlflow.parentRunId": version.run_id, "model": model},
    )
    run_id = run.info.run_id
    for key, value in certificate.as_tags(names.CERTIFICATE).items():
        client.set_tag(run_id, key, value)
    client.set_tag(run_id, f"{names.CERTIFICATE}result", "PASS" if certificate.holds() else "FAIL")
    client.log_param(run_id, "data", data.name)
    client.log_metric(run_id, "exceedance_rate", certificate.rate)
    client.log_metric(run_id, "upper_bound", certificate.upper_bound)
    client.set_terminated(run_id)
    return Recheck(certificate, run_id)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser().parse_args(argv)
    uri = exit_on_user_error(COMMAND, resolve_uri, TrackingConfig(uri=args.tracking_uri))
    done = exit_on_user_error(COMMAND, recheck, args.model, args.data, args.max_exceedance, args.confidence, uri)
    cert = done.certificate
    print(
        f"{args.model} on {cert.rows} rows of {args.data.name}: {cert.exceedances} outputs above the limit "
        f"{cert.limit:g}, rate {cert.rate:.4g}; upper bound {cert.upper_bound:.4g} at confidence {1 - cert.delta:g}"
    )
    if done.passed:
        print(f"PASS: the bound {cert.upper_bound:.4g} is within exceedance rate <= {cert.max_exceedance:g}")
        return
    print(
        f"FAIL: the bound {cert.upper_bound:.4g} exceeds {cert.max_exceedance:g}: these inputs may make the model "
        "exceed the limit more often than certified"
    )
    sys.exit(FAILED)


if __name__ == "__main__":
    main()

"""`exceedance-certify`: re-check a registered model's exceedance rate on new inputs, no labels needed.

Scores the file's features with the model, bounds the rate at which its outputs exceed the
limit (the Hoeffding-Bentkus bound of `exceedance.certify`), prints PASS or FAIL with the
reason, and logs a run with the figures in the model's experiment. Exit code 0 on PASS, 3 on
FAIL, so a monitoring job can alert on it; bad input is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from exceedance import names
from exceedance.certify import Certificate
from exceedance.cli.errors import exit_on_user_error
from exceedance.config import TrackingConfig
from exceedance.errors import ConfigError
from exceedance.quiet import quiet_libraries
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
    p.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's and MLflow's own log lines too")
    return p


@dataclass
class Recheck:
    """What a re-check found, and where it was logged."""

    certificate: Certificate
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


def _certificate_number(model: str, tags: dict[str, str], name: str) -> float:
    """A figure of the certificate a model version carries, refused in one line if an edit or a
    damaged store left it missing or not a number a float32 model compares with."""
    from exceedance.config import FLOAT32_MAX

    text = tags.get(f"{names.CERTIFICATE}{name}")
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise ConfigError(
            f"model: {model} carries a damaged certificate (its {names.CERTIFICATE}{name} tag is {text!r}, not a "
            "finite number); certify it again with exceedance-train --certify"
        )
    return value


def recheck(model: str, data: Path, max_exceedance: float | None, confidence: float | None, uri: str) -> Recheck:
    """Score `data` with `model` and bound its exceedance rate; log the re-check in MLflow."""
    from exceedance.certify import check, require_rate
    from exceedance.data_files import read_features

    parse_model_uri(model)
    x = read_features(str(data), "--data")  # checked before the model is loaded
    check_store(uri, TrackingConfig().timeout_s, create=False)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(uri)
    version = _version(client, model)
    tags = version.tags
    if f"{names.CERTIFICATE}limit" not in tags:
        raise ConfigError(f"model: {model} carries no certificate (train it with exceedance-train --certify)")
    limit = _certificate_number(model, tags, "limit")
    rate = max_exceedance if max_exceedance is not None else _certificate_number(model, tags, "max_exceedance")
    if confidence is None:
        confidence = 1 - (_certificate_number(model, tags, "delta") if f"{names.CERTIFICATE}delta" in tags else 0.05)
    require_rate("--max-exceedance", rate)
    require_rate("--confidence", confidence)

    import exceedance.losses
    import exceedance.metrics  # noqa: F401  (the shipped model's loss and metrics)
    from exceedance.registry import load_model

    loaded = load_model(uri, model, "model")
    if x.shape[1] != loaded.input_shape[-1]:
        raise ConfigError(f"--data: {data} has {x.shape[1]} feature columns; the model takes {loaded.input_shape[-1]}")
    certificate = check(loaded.predict(x, batch_size=1024, verbose=0), limit, rate, 1 - confidence)
    experiment = client.get_run(version.run_id).info.experiment_id
    run_tags = {names.ROLE: "certification", "mlflow.parentRunId": version.run_id, "model": model}
    run_id = client.create_run(
        experiment, run_name=f"certify-{version.name}-v{version.version}", tags=run_tags
    ).info.run_id
    result = {f"{names.CERTIFICATE}result": "PASS" if certificate.holds() else "FAIL"}
    now = int(time.time() * 1000)
    client.log_batch(  # one call: the figures, the data file's name, the certificate
        run_id,
        metrics=[
            Metric("exceedance_rate", certificate.rate, now, 0),
            Metric("upper_bound", certificate.upper_bound, now, 0),
        ],
        params=[Param("data", data.name)],
        tags=[RunTag(k, v) for k, v in {**certificate.as_tags(names.CERTIFICATE), **result}.items()],
    )
    client.set_terminated(run_id)
    return Recheck(certificate, run_id)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = parser().parse_args(argv)
    quiet_libraries(args.verbose)
    uri = exit_on_user_error(COMMAND, resolve_uri, TrackingConfig(uri=args.tracking_uri))
    done = exit_on_user_error(COMMAND, recheck, args.model, args.data, args.max_exceedance, args.confidence, uri)
    cert = done.certificate
    broken = f" ({cert.non_finite} of them not finite numbers: the model overflows)" if cert.non_finite else ""
    print(
        f"{args.model} on {cert.rows} rows of {args.data.name}: {cert.exceedances} outputs above the limit "
        f"{cert.limit:g}{broken}, rate {cert.rate:.4g}; upper bound {cert.upper_bound:.4g} at confidence "
        f"{1 - cert.delta:g}"
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

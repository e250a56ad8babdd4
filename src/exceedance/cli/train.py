"""`exceedance-train`: retrain a picked config on train+val, test it, register it as the champion."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exceedance.cli.errors import exit_on_user_error, one_line
from exceedance.cli.guard import keep_secrets_from_hydra
from exceedance.config import Config, register_configs, to_config
from exceedance.errors import ConfigError, redact
from exceedance.quiet import quiet_libraries
from exceedance.signals import end_like_ctrl_c
from exceedance.train import CHAMPION, TrainResult, check_registry_names, default_model_name, train

COMMAND = "exceedance-train"
PICKS_RATE = -1.0  # --certify without a rate: the one the pick's rule capped


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument("config", type=Path, help="a config exported by exceedance-pick: mlruns/picks/NAME/picked.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. tracking.uri=http://127.0.0.1:5000")
    p.add_argument("--model-name", default=None, help="registered model name (default: the sweep's name)")
    p.add_argument("--alias", default=CHAMPION, help=f"alias set on the new version (default: {CHAMPION})")
    p.add_argument(
        "--certify",
        nargs="?",
        type=float,
        const=PICKS_RATE,
        default=None,
        metavar="E",
        help="certify an exceedance rate <= E on the calibration rows and ship the model with the output offset "
        "that makes it hold (default E: the pick's --max-exceedance)",
    )
    p.add_argument("--confidence", type=float, default=0.95, help="the certificate's confidence (default: 0.95)")
    p.add_argument(
        "--calibration-data",
        default=None,
        metavar="FILE",
        help="more calibration rows for --certify: a .csv of feature columns or a .npz with x (no labels)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show TensorFlow's and MLflow's own log lines too")
    return p


def compose_file(path: Path, overrides: list[str]) -> Config:
    """Compose one config file (with its `defaults`) and `overrides` through Hydra."""
    import yaml
    from hydra import compose, initialize_config_dir

    if path.suffix != ".yaml" or not path.is_file():
        raise ConfigError(f"config: no such .yaml file {str(path)!r}; export one with exceedance-pick")
    register_configs()  # first: it lets YAML read numbers of any length, for validate to refuse
    try:
        parsed = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"config: {path} is not valid YAML ({one_line(err)}); export it again with exceedance-pick"
        ) from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"config: {path} is not a mapping of settings; export it again with exceedance-pick")
    with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base="1.3"):
        return to_config(compose(config_name=path.stem, overrides=overrides), str(path))


def _compose_and_train(args: argparse.Namespace) -> tuple[Config, TrainResult]:
    config = compose_file(args.config, keep_secrets_from_hydra(args.overrides))
    model_name = args.model_name or default_model_name(config)
    name_option = "--model-name" if args.model_name else "name"  # the default name is the config's
    check_registry_names(model_name, args.alias, name_option)
    rate = args.certify
    if rate == PICKS_RATE:
        rate = config.search.max_exceedance
        if rate is None:
            raise ConfigError(
                "--certify: the picked config records no exceedance cap (its pick's rule had none); "
                "give the rate, e.g. --certify 0.02"
            )
    return config, train(
        config,
        model_name,
        args.alias,
        max_exceedance=rate,
        confidence=args.confidence,
        calibration_data=args.calibration_data,
    )


def certificate_lines(result: TrainResult) -> str:
    """The certificate, and what the offset did on the test rows (never used to choose it)."""
    cert, test = result.certificate, result.test
    before = result.test_before_offset or test
    within = "within" if test["exceedance_rate"] <= cert.upper_bound else "OUTSIDE"
    quality = next(k for k in test if k not in ("loss", "base_loss", "penalty", "exceedance_count", "exceedance_rate"))
    return (
        f"Certificate: exceedance rate <= {cert.max_exceedance:g} with confidence {1 - cert.delta:g} "
        f"(bound {cert.upper_bound:.4g} on {cert.rows} calibration rows, output offset {cert.offset:.4g})\n"
        f"Test rows before / after the offset: {quality} {before[quality]:.4g} / {test[quality]:.4g}, "
        f"exceedance_rate {before['exceedance_rate']:.4g} / {test['exceedance_rate']:.4g} "
        f"({within} the certified bound)"
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    end_like_ctrl_c()  # SIGTERM or SIGHUP ends the training run as Ctrl-C does (FAILED), with one line
    args = parser().parse_intermixed_args(argv)  # overrides before or after the options
    quiet_libraries(args.verbose)
    config, result = exit_on_user_error(COMMAND, _compose_and_train, args)
    scores = " ".join(f"{k}={v:.4g}" for k, v in result.test.items() if k != "loss")
    print(f"\nTest rows (limit {config.data.limit:g}): {scores}")
    print(f"Registered {result.model_uri} (version {result.version}, run {result.run_id})")
    print(f"Loaded back by alias: predictions match to {result.reload_max_abs_diff:.2g}")
    if result.certificate is not None:
        print(certificate_lines(result))
    print(
        "Use it: import exceedance.losses, exceedance.metrics, mlflow, mlflow.keras; "
        f'mlflow.set_tracking_uri("{redact(result.tracking_uri)}"); '
        f'model = mlflow.keras.load_model("{result.model_uri}")'
    )


if __name__ == "__main__":
    sys.exit(main())

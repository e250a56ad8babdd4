"""`exceedance-train`: retrain a picked config on train+val, test it, register it as the champion."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from exceedance.cli.errors import exit_on_user_error, one_line
from exceedance.config import Config, register_configs
from exceedance.errors import ConfigError, redact
from exceedance.train import CHAMPION, TrainResult, check_registry_names, default_model_name, train

COMMAND = "exceedance-train"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    p.add_argument("config", type=Path, help="a config exported by exceedance-pick: mlruns/picks/NAME/picked.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. tracking.uri=http://127.0.0.1:5000")
    p.add_argument("--model-name", default=None, help="registered model name (default: the sweep's name)")
    p.add_argument("--alias", default=CHAMPION, help=f"alias set on the new version (default: {CHAMPION})")
    return p


def compose_file(path: Path, overrides: list[str]) -> Config:
    """Compose one config file (with its `defaults`) and `overrides` through Hydra."""
    import yaml
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    if path.suffix != ".yaml" or not path.is_file():
        raise ConfigError(f"config: no such .yaml file {str(path)!r}; export one with exceedance-pick")
    try:
        parsed = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"config: {path} is not valid YAML ({one_line(err)}); export it again with exceedance-pick"
        ) from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"config: {path} is not a mapping of settings; export it again with exceedance-pick")
    register_configs()
    with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name=path.stem, overrides=overrides))


def _compose_and_train(args: argparse.Namespace) -> tuple[Config, TrainResult]:
    config = compose_file(args.config, args.overrides)
    model_name = args.model_name or default_model_name(config)
    check_registry_names(model_name, args.alias)
    return config, train(config, model_name, args.alias)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser().parse_intermixed_args(argv)  # overrides before or after the options
    config, result = exit_on_user_error(COMMAND, _compose_and_train, args)
    scores = " ".join(f"{k}={v:.4g}" for k, v in result.test.items() if k != "loss")
    print(f"\nTest rows (limit {config.data.limit:g}): {scores}")
    print(f"Registered {result.model_uri} (version {result.version}, run {result.run_id})")
    print(f"Loaded back by alias: predictions match to {result.reload_max_abs_diff:.2g}")
    print(
        "Use it: import exceedance.losses, exceedance.metrics, mlflow, mlflow.keras; "
        f'mlflow.set_tracking_uri("{redact(result.tracking_uri)}"); '
        f'model = mlflow.keras.load_model("{result.model_uri}")'
    )


if __name__ == "__main__":
    sys.exit(main())

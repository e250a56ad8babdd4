"""What Hydra must never see, and where it may write: checked before it writes a byte.

Hydra copies a run's overrides and its composed config into its run folder (`.hydra/`, the job's
log) and the sweep tags its parent run with the overrides, so a secret that reaches Hydra is
stored in five places. A credentialed `tracking.uri=` on the command line is therefore taken out
of the overrides and passed as MLflow itself takes it, in `MLFLOW_TRACKING_URI`; a secret in a
config file is refused before Hydra writes anything (`BeforeHydraWrites`, a callback every
sweep's command line adds, whatever its config file).

The same callback validates the composed config before Hydra creates its run folder (a refused
config writes nothing), and sends a config that names no run folder (an exported `picked.yaml`
before it carried one, a user's own file) to `mlruns/hydra/` instead of Hydra's `./outputs/`.
A job refused later (a data file, a store) removes what Hydra wrote for it (`forget_job_folder`).
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from exceedance.errors import ConfigError, has_credentials, redact

# Hydra's own defaults for its folders (hydra/conf/__init__.py), kept when a config names none.
HYDRA_RUN_DIR = "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"
HYDRA_SWEEP_DIR = "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}"
OUR_RUN_DIR = "mlruns/hydra/${safe_name:${name}}/${now:%Y-%m-%d_%H-%M-%S}"
OUR_SWEEP_DIR = "mlruns/hydra/${safe_name:${name}}/multirun-${now:%Y-%m-%d_%H-%M-%S}"
CALLBACK_OVERRIDE = f"++hydra.callbacks.before_hydra_writes._target_={__name__}.BeforeHydraWrites"
TRACKING_URI = "tracking.uri"


def keep_secrets_from_hydra(argv: list[str]) -> list[str]:
    """Take a credentialed `tracking.uri=` out of the overrides and pass it in
    `MLFLOW_TRACKING_URI` (taken whole: no quoting is needed for Hydra's grammar).

    Raises:
        ConfigError: for a password or token in any other override.
    """
    kept = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if not has_credentials(value):
            kept.append(arg)
        elif key.lstrip("+~") == TRACKING_URI:
            os.environ["MLFLOW_TRACKING_URI"] = _unquoted(value)
        else:
            raise ConfigError(f"{key}: {redact(value)!r} holds a password; only tracking.uri may carry credentials")
    return kept


def _unquoted(value: str) -> str:
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def refuse_secrets(cfg: DictConfig) -> None:
    """Raise `ConfigError` naming the first value of the config (as written, interpolations
    unresolved) that holds a password or a token: it would be copied into Hydra's run folder."""
    values = OmegaConf.to_container(cfg, resolve=False)
    for key, value in _leaves(values, ""):
        if isinstance(value, str) and has_credentials(value):
            raise ConfigError(
                f"{key}: {redact(value)!r} holds a password in a config file, which Hydra would copy into its run "
                "folder; put the URI in MLFLOW_TRACKING_URI instead (or write tracking.uri: ${oc.env:YOUR_VARIABLE})"
            )


def _leaves(node, prefix: str):
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "hydra":
                yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), node


def _folder(cfg: DictConfig, section: str) -> str:
    return OmegaConf.to_container(cfg.hydra[section], resolve=False)["dir"]


class BeforeHydraWrites(Callback):
    """Hydra calls `on_run_start` / `on_multirun_start` with the composed config before it
    creates a folder or writes a file."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from exceedance.cli.errors import exit_on_user_error

        exit_on_user_error("exceedance-sweep", _check, config)
        if _folder(config, "run") == HYDRA_RUN_DIR:
            config.hydra.run.dir = OUR_RUN_DIR

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from exceedance.cli.errors import exit_on_user_error

        # Only secrets here: a multirun's swept values are not in this config (a required value
        # may come from them), so each job validates its own.
        exit_on_user_error("exceedance-sweep", refuse_secrets, config)
        if _folder(config, "sweep") == HYDRA_SWEEP_DIR:
            # The launcher makes the sweep's folder from this config; each job is composed again
            # from the command line's Hydra overrides, which must carry the folder too.
            config.hydra.sweep.dir = OUR_SWEEP_DIR
            config.hydra.sweep.dir = str(config.hydra.sweep.dir)  # resolved once: one time stamp for all
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={config.hydra.sweep.dir}")


def _check(cfg: DictConfig) -> None:
    from exceedance.config import Config
    from exceedance.validation import validate

    refuse_secrets(cfg)
    without_hydra = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    config: Config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), without_hydra))
    validate(config)


def forget_job_folder(output_dir: str, log_name: str, sweep_dir: str | None = None) -> None:
    """Remove what Hydra wrote for a job that was then refused: its `.hydra/` files and its log
    (and a multirun's own two files when no other job has a folder), then the folders that are
    left empty (`mlruns/` too, when this job made it). Nothing else is touched."""
    folder = Path(output_dir).resolve()
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (folder / ".hydra" / name).unlink(missing_ok=True)
    (folder / f"{log_name}.log").unlink(missing_ok=True)
    _remove_if_empty(folder / ".hydra")
    if sweep_dir is not None:
        _remove_if_empty(folder)
        folder = Path(sweep_dir).resolve()
        if not any(path.is_dir() for path in folder.iterdir()):
            for name in ("multirun.yaml", "jobs.lock"):
                (folder / name).unlink(missing_ok=True)
    for empty in (folder, *folder.parents):
        if empty == Path.cwd() or not _remove_if_empty(empty):
            break


def _remove_if_empty(folder: Path) -> bool:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        return True
    return False

"""The MLflow model registry: log a trained model, register it, alias it, load it back.

MLflow logs and loads models through its fluent API, which reads a process-wide tracking URI;
`_fluent_store` scopes that URI to one call so nothing leaks into later runs or subprocesses.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from importlib import metadata

from exceedance.errors import ConfigError
from exceedance.recording.experiment import Experiment


@contextmanager
def _fluent_store(uri: str):
    """Point MLflow's fluent API at `uri` for one block.

    `mlflow.set_tracking_uri` also sets environment variables that every later subprocess
    inherits; they are put back as they were afterwards.
    """
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def register_model(experiment: Experiment, run_id: str, model, signature, name: str, alias: str) -> tuple[str, str]:
    """Log a Keras model to `run_id`, register it as a new version of `name`, point `alias` at
    that version, and end the run (FINISHED, or FAILED if logging raises).

    Returns:
        The registered version and the `models:/NAME@ALIAS` URI that loads it.
    """
    import mlflow
    import mlflow.keras

    with _fluent_store(experiment.uri), mlflow.start_run(run_id=run_id):
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=signature,
            registered_model_name=name,
            # Given explicitly, they spare MLflow's requirement inference, which reloads the
            # model in a subprocess. Loading also needs this package (its custom loss and
            # metrics), installed from its source.
            pip_requirements=[f"{p}=={metadata.version(p)}" for p in ("keras", "tensorflow-cpu")],
        )
    version = str(info.registered_model_version)
    experiment.client.set_registered_model_alias(name, alias, version)
    return version, f"models:/{name}@{alias}"


def load_model(uri: str, model_uri: str, option: str = "model"):
    """Load a Keras model from the store at `uri`, e.g. `models:/NAME@champion`.

    Raises:
        ConfigError: naming `option` (how the user gave the model) when its files are gone or
            damaged, or are not a Keras model's.
    """
    import mlflow.keras

    from exceedance.quiet import import_tensorflow

    import_tensorflow()
    try:
        with _fluent_store(uri):
            return mlflow.keras.load_model(model_uri)
    except Exception as err:  # MLflow's, the file system's, zip's and Keras's errors alike
        reason = str(getattr(err, "message", err)).strip().splitlines()
        raise ConfigError(
            f"{option}: cannot load {model_uri}: its files are missing or damaged ({type(err).__name__}: "
            f"{reason[0] if reason else 'no message'}); register it again with exceedance-train"
        ) from None

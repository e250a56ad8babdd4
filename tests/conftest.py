"""Shared fixtures: tiny real configs composed by Hydra, and a temporary MLflow store."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from exceedance.cli.sweep import CONF_DIR
from exceedance.config import Config, register_configs

register_configs()

TINY = [
    "data.n_samples=300",
    "search.max_trials=2",
    "search.epochs=2",
    "search.batch_size=64",
    "model.hidden_units=[8]",
]


def compose_config(overrides: list[str], config_dir: Path = CONF_DIR) -> Config:
    """Compose `conf/` with Hydra exactly as the command does and convert to the schema."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_object(cfg)


def free_port() -> int:
    """A TCP port nobody listens on right now, for a test's own MLflow server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    """Overrides that point tracking and the tuner directory into a temp dir."""
    return [f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db", f"search.directory={tmp_path}/tuner"]


@pytest.fixture
def tiny(store: list[str]) -> list[str]:
    return [*TINY, *store]

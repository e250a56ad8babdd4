"""Hydra search-path plugin: makes the repository's `sweeps/` folder the config group `sweeps`,
so `exceedance-sweep -m +sweeps=penalty_forms` finds `sweeps/penalty_forms.yaml`."""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ROOT = Path(__file__).resolve().parents[2]


class ExceedanceSweepsPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # Only for exceedance's own app: other Hydra apps in the environment are left alone.
        if any(entry.path == str(ROOT / "conf") for entry in search_path.get_path()):
            search_path.append(provider="exceedance-sweeps", path=f"file://{ROOT}")

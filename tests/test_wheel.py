"""The package as users install it: a wheel built from a clean clone, installed non-editable."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import TINY

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=900, env=env, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_a_wheel_from_a_clean_clone_runs_a_sweep_a_multirun_and_a_pick_anywhere(tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "--quiet", str(REPO), str(clone)], tmp_path)
    # No build isolation: the build uses the setuptools already installed (no network here).
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", "dist", "."], clone
    )
    wheel = next((clone / "dist").glob("exceedance-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for source in [*(clone / "conf").rglob("*.yaml"), *(clone / "sweeps").glob("*.yaml")]:
        relative = source.relative_to(clone)
        inside = Path("exceedance") / (relative if relative.parts[0] == "conf" else Path("conf") / relative)
        assert str(inside) in shipped, f"{relative} is not in the wheel"

    # A fresh venv that reuses the installed dependencies, with the wheel installed in it.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)
    where = run(
        [str(venv / "bin" / "python"), "-c", "import exceedance.conf; print(exceedance.conf.__file__)"], elsewhere, env
    )
    assert where.stdout.startswith(str(venv)), where.stdout

    store = f"tracking.uri=sqlite:///{elsewhere}/mlruns/mlflow.db"
    sweep = run(["exceedance-sweep", *TINY, store, "name=wheel"], elsewhere, env)
    assert "2 finished trials in experiment 'wheel'" in sweep.stdout
    multirun = run(
        ["exceedance-sweep", "-m", "+sweeps=penalty_forms", "penalty=l1,l2", *TINY, store, "search.max_trials=1"],
        elsewhere,
        env,
    )
    assert multirun.stdout.count("] 1 finished trials, ") == 2  # one line per job
    assert "penalty_forms: 2 finished trials of 2 searches" in multirun.stdout  # the joint summary
    pick = run(["exceedance-pick", "wheel", "--knee", "--tracking-uri", store.split("=", 1)[1]], elsewhere, env)
    assert " * " in pick.stdout and (elsewhere / "mlruns" / "picks" / "wheel" / "picked.yaml").is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["mlruns"], "nothing written outside mlruns/"

"""Nothing is written outside `mlruns/`, whatever config a command is given, and a refused config
writes nothing at all: not a store, not a tuner folder, not Hydra's run folder.

Through the real command lines, in a fresh work folder each: what is left in it is the assertion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY, command, last_line, tensorflow_imported

pytestmark = pytest.mark.slow

OWN_CONFIG = (
    "defaults:\n  - base_config\n  - _self_\nname: mine\ndata:\n  limit: 1.0\n"  # names no run folder of its own
)


def left_in(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_the_readmes_rerun_of_a_pick_writes_under_mlruns_only(tmp_path):
    assert command("sweep", TINY, tmp_path).returncode == 0
    assert command("pick", ["exceedance", "--knee"], tmp_path).returncode == 0
    rerun = command(
        "sweep", ["--config-path", str(tmp_path / "mlruns/picks/exceedance"), "--config-name", "picked"], tmp_path
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert left_in(tmp_path) == {"mlruns"}
    (folder,) = (tmp_path / "mlruns/hydra/exceedance-picked").iterdir()
    assert (folder / ".hydra/config.yaml").is_file()


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
def test_a_users_own_config_file_writes_under_mlruns_only(tmp_path, multirun):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/mine.yaml").write_text(OWN_CONFIG)
    flags, seeds = (["-m"], ["search.seed=1,2"]) if multirun else ([], [])
    options = ["--config-dir", str(tmp_path / "conf"), "--config-name", "mine"]
    done = command("sweep", [*flags, *options, *TINY, *seeds], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert left_in(tmp_path) == {"conf", "mlruns"}
    (folder,) = (tmp_path / "mlruns/hydra/mine").iterdir()
    assert folder.name.startswith("multirun-") == multirun


REFUSED = {
    "a value out of range": ([*TINY, "search.max_trials=0"], "search.max_trials: must be in 1..1000000, got 0"),
    "a missing data file": (
        [*TINY, "data=file", "data.path=missing.csv", "data.limit=1", "data.targets=y"],
        "data.path: file 'missing.csv' does not exist",
    ),
    "a multirun's first job": (["-m", *TINY, "search.max_trials=0,1"], "search.max_trials: must be in 1..1000000"),
    "a named sweep's job": (["-m", "+sweeps=penalty_forms", *TINY, "search.epochs=0"], "search.epochs: must be in"),
    "a config file's value": (
        ["--config-dir", "conf", "--config-name", "bad", *TINY],
        "search.max_exceedance: ",
    ),
}


@pytest.mark.parametrize(("args", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_config_writes_nothing_at_all(tmp_path, args, message):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/bad.yaml").write_text(OWN_CONFIG + "search:\n  max_exceedance: 2.0\n")
    done = command("sweep", args, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in last_line(done)
    assert not tensorflow_imported(done)
    assert left_in(tmp_path) == {"conf"}

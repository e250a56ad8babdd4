"""Bad input on the real command line: one line naming the field, exit 2, nothing in MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def make_files(tmp: Path) -> None:
    (tmp / "ok.csv").write_text("a,b,peak\n" + "".join(f"{i},{i % 7},{i % 3}\n" for i in range(40)))
    (tmp / "nan.csv").write_text("a,b,peak\n" + "".join(f"{i},nan,{i % 3}\n" for i in range(40)))
    np.savez(tmp / "ok.npz", x=np.ones((40, 3)), y=np.zeros(40))


BAD = [
    ("penalty=l3", "Could not find 'penalty/l3'"),
    ("penalty.forms=[hard_count]", "penalty.forms: unknown value 'hard_count'; allowed: l1, l2, sigmoid_count"),
    ("penalty.lam.low=-0.5", "penalty.lam.low: must be >= 0, got -0.5"),
    ("penalty.lam.high=inf", "penalty.lam.high: must be a finite number, got inf"),
    ("penalty.temperature.low=0", "penalty.temperature.low: must be > 0, got 0.0"),
    ("penalty.threshold_offset.low=-inf", "penalty.threshold_offset.low: must be a finite number, got -inf"),
    ("data.limit=nan", "data.limit: must be a finite number, got nan"),
    ("penalty.threshold_offset.low=1.5", "penalty.threshold_offset: low (1.5) must be <= high (0.2)"),
    ("search.max_trials=0", "search.max_trials: must be in 1..1000000, got 0"),
    ("search.epochs=0", "search.epochs: must be in 1..1000000, got 0"),
    ("search.intra_op_threads=-1", "search.intra_op_threads: must be in 0..1024, got -1"),
    ("search.max_trials=many", "search.max_trials: Value 'many' of type 'str' could not be converted to Integer"),
    ("search.max_exceedance=most", "search.max_exceedance: Value 'most' of type 'str' could not be converted to Float"),
    (
        "penalty.target_rate=0.05 penalty.threshold_offset.low=0.1",
        "penalty.threshold_offset.low: must be <= 0 with a target rate",
    ),
    ("search=frontier penalty.threshold_offset.low=0.1", "penalty.threshold_offset.low: must be <= 0 with a target"),
    ("data=mnist", "Could not find 'data/mnist'"),
    ("data.name=mnist", "data.name: unknown value 'mnist'"),
    (
        "data=file data.path=missing.csv data.targets=[peak] data.limit=1",
        "data.path: file 'missing.csv' does not exist",
    ),
    ("data=file data.path=ok.csv data.targets=[nope] data.limit=1", "data.targets: columns ['nope'] not in"),
    ("data=file data.path=ok.npz data.targets=[z] data.limit=1", "data.targets: arrays ['z'] not in"),
    (
        "data=file data.path=nan.csv data.targets=[peak] data.limit=1",
        "data.path: column 'b' of nan.csv holds nan in row 2, which a float32 model cannot take",
    ),
    ("tracking.uri=ftp://example/x", "tracking.uri: unsupported tracking URI 'ftp://example/x'"),
    ("tracking.uri=http://127.0.0.1:9", "tracking.uri: no MLflow server answers at http://127.0.0.1:9"),
    ("no_such_key=1", "Could not override 'no_such_key'"),
    ("-m --cfg job", "Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, overrides, message):
    make_files(tmp_path)
    probe = (
        "import sys\n"
        "from exceedance.cli.sweep import main\n"
        "try:\n    main()\n"
        "finally:\n    print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *overrides.split()], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"exceedance-sweep: error: {done.stderr.split(': error: ')[1].strip()}"]
    assert message in done.stderr
    assert "tensorflow imported: False" in done.stdout
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--data", "ok.csv"], "model: 'nope' is not a registered model URI; use models:/NAME@ALIAS"),
        (["models:/m@a", "--data", "missing.csv"], "--data: file 'missing.csv' does not exist"),
        (["models:/m@a", "--data", "nan.csv"], "--data: column 'b' of nan.csv holds nan in row 2"),
        (["models:/m@champion", "--data", "ok.csv"], "no MLflow store at"),
    ],
)
def test_certify_refuses_bad_input_in_one_line_before_tensorflow(tmp_path, args, message):
    from conftest import command, last_line, tensorflow_imported

    make_files(tmp_path)
    done = command("certify", args, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in last_line(done)
    assert not tensorflow_imported(done)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()

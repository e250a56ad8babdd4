"""Hostile values on the real command line (#23): numbers a float32 model cannot hold, numbers
beyond what a field can take, whole numbers that are not ASCII digits, and edited picked files.

Every case is one line naming the option or field the user gave, exit code 2, no traceback,
TensorFlow not imported, nothing written (as in test_hostile.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_hostile import PICKED, csv

from conftest import command, last_line, tensorflow_imported

pytestmark = pytest.mark.slow

NINES = "9" * 20  # beyond every field's upper bound, and beyond int64
LONG = "9" * 5000  # beyond Python's int() of a string (4,300 digits): it stopped Hydra's and YAML's parsers


def make_values(tmp: Path) -> None:
    """Files with one value a float32 model cannot take, each in another place."""
    rows = [f"{i},{i % 7},{i % 3}" for i in range(40)]
    for name, row, cell in (("over32", 1, "1e39,1,2"), ("nan", 5, "1,nan,2"), ("neginf", 9, "1,2,-inf")):
        csv(tmp / f"{name}.csv", "a,b,peak", [*rows[:row], cell, *rows[row + 1 :]])
    x = np.ones((40, 8))
    x[3, 6] = np.inf
    np.savez(tmp / "inf.npz", x=x, y=np.zeros(40))
    wide = [",".join(["1"] * 8)] * 40
    csv(tmp / "cal_over32.csv", ",".join(f"f{i}" for i in range(8)), [*wide[:2], "3e39," + ",".join(["1"] * 7)])
    csv(tmp / "cal_nan.csv", ",".join(f"f{i}" for i in range(8)), ["1,1,1,1,1,1,1,NaN", *wide])


def picked(tmp: Path, name: str, text: str) -> None:
    """A picked.yaml (`PICKED`, a fixed tiny config) as a user may have edited it."""
    store = tmp / "mlruns" / "mlflow.db"
    (tmp / "edited").mkdir(exist_ok=True)
    (tmp / "edited" / name).write_text(text.replace("{store}", str(store)))


def edited_files(tmp: Path) -> None:
    base = PICKED.replace("{{", "{").replace("}}", "}")
    picked(tmp, "picked.yaml", base)
    picked(tmp, "nodefaults.yaml", base.replace("defaults: [base_config, _self_]\n", ""))
    picked(tmp, "selfonly.yaml", base.replace("[base_config, _self_]", "[_self_]"))
    picked(tmp, "batch.yaml", base.replace("  epochs: 1\n", f"  epochs: 1\n  batch_size: {NINES}\n"))
    picked(tmp, "steps.yaml", base.replace("  epochs: 1\n", "  epochs: 1\n  trials_per_step: '\u00b2'\n"))
    picked(tmp, "long.yaml", base.replace("  epochs: 1\n", f"  epochs: {LONG}\n"))
    picked(tmp, "samples.yaml", base.replace("n_samples: 300", "n_samples: 1000000000000"))
    picked(tmp, "units.yaml", base.replace("hidden_units: [8]", "hidden_units: [8, 10000000000]"))
    picked(tmp, "limit.yaml", base.replace("limit: 1.0", "limit: 1.0e+39"))
    data_file = "name: file, limit: 1.0, path: nan.csv, targets: [peak]"
    picked(tmp, "datafile.yaml", base.replace("name: synthetic, limit: 1.0, n_samples: 300", data_file))


def refused(done, command_name: str, message: str, tmp: Path, inputs: set[Path]) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    line = last_line(done)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert line.startswith(f"exceedance-{command_name}: error: ") and message in line, line
    assert not tensorflow_imported(done)
    assert {p.name for p in set(tmp.iterdir()) - inputs} <= {"mlruns", "outputs"}
    assert not list(tmp.rglob("mlflow.db")), "a store was created"


SWEEP = [
    # whole numbers that are not ASCII digits: str.isdigit() takes them, int() takes some
    (
        ["search.trials_per_step='\u00b2'"],
        "search.trials_per_step: expected auto or a whole number in 1..1024, got '²'",
    ),
    (
        ["search.trials_per_step='\u0663'"],
        "search.trials_per_step: expected auto or a whole number in 1..1024, got '٣'",
    ),
    (["search.trials_per_step='\uff18'"], "search.trials_per_step: expected auto or a whole number"),
    (["search.listen='127.0.0.1:\u00b2'"], "search.listen: must be HOST:PORT with a port in 0..65535"),
    (["search.listen='127.0.0.1:\u0664\u0664'"], "search.listen: must be HOST:PORT with a port in 0..65535"),
    (["search.join='10.0.0.1:\u00b9'"], "search.join: must be HOST:PORT with a port in 1..65535"),
    ([f"search.join=10.0.0.1:{NINES}"], "search.join: must be HOST:PORT with a port in 1..65535"),
    # upper bounds of numbers that failed after TensorFlow started (or ran out of memory)
    ([f"search.batch_size={LONG}"], "search.batch_size: must be in 1..1048576, got a whole number of 5000 digits"),
    ([f"search.trials_per_step={LONG}"], "search.trials_per_step: expected auto or a whole number in 1..1024, got '99"),
    ([f"search.listen=127.0.0.1:{LONG}"], "search.listen: must be HOST:PORT with a port in 0..65535, got '127.0.0.1:9"),
    (
        ["--config-path", "{edited}", "--config-name", "long"],
        "search.epochs: must be in 1..1000000, got a whole number of 5000 digits",
    ),
    ([f"search.batch_size={NINES}"], f"search.batch_size: must be in 1..1048576, got {NINES}"),
    (["data.n_samples=1000000000000"], "data.n_samples: must be in 1..100000000, got 1000000000000"),
    (["data.n_samples=50000000", "data.n_features=100"], "data.n_samples: 50000000 rows of 100 features"),
    ([f"search.epochs={NINES}"], "search.epochs: must be in 1..1000000"),
    ([f"search.max_trials={NINES}"], "search.max_trials: must be in 1..1000000"),
    (["search.inter_op_threads=4294967297"], "search.inter_op_threads: must be in 0..1024"),
    (["search.workers=1000"], "search.workers: must be in 1..256"),
    (["tracking.port=70000"], "tracking.port: must be in 1..65535, got 70000"),
    (["model.hidden_units=[8,10000000000]"], "model.hidden_units: every layer needs 1..65536 units"),
    (["data.limit=1e39"], "data.limit: must be a finite number, got 1e+39"),
    (["search.learning_rate.high=1e300"], "search.learning_rate.high: must be a finite number, got 1e+300"),
    # values of a data file a float32 model cannot take: the file, the column, the row
    (
        ["data=file", "data.limit=1", "data.path=nan.csv", "data.targets=peak"],
        "data.path: column 'b' of nan.csv holds nan in row 7",
    ),
    (
        ["data=file", "data.limit=1", "data.path=neginf.csv", "data.targets=peak"],
        "column 'peak' of neginf.csv holds -inf in row 11",
    ),
    (
        ["data=file", "data.limit=1", "data.path=inf.npz", "data.targets=y"],
        "holds inf in row 3 (counting from 0), column 6",
    ),
    # picked files as users edit them, rerun as the sweep's config
    (
        ["--config-path", "{edited}", "--config-name", "nodefaults"],
        "config: nodefaults.yaml does not start from the schema",
    ),
    (
        ["--config-path", "{edited}", "--config-name", "selfonly"],
        "config: selfonly.yaml does not start from the schema",
    ),
    (["--config-path", "{edited}", "--config-name", "batch"], "search.batch_size: must be in 1..1048576"),
    (
        ["--config-path", "{edited}", "--config-name", "steps"],
        "search.trials_per_step: expected auto or a whole number",
    ),
]


@pytest.mark.parametrize(("args", "message"), SWEEP, ids=[" ".join(a) for a, _ in SWEEP])
def test_sweep_refuses_a_value_in_one_line(tmp_path, args, message):
    make_values(tmp_path)
    edited_files(tmp_path)
    inputs = set(tmp_path.iterdir())
    args = [a.replace("{edited}", str(tmp_path / "edited")) for a in args]
    store = f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db"
    refused(command("sweep", [*args, store], tmp_path), "sweep", message, tmp_path, inputs)


TRAIN = [
    (["nodefaults.yaml"], "config: {edited}/nodefaults.yaml does not start from the schema"),
    (["batch.yaml"], f"search.batch_size: must be in 1..1048576, got {NINES}"),
    (["steps.yaml"], "search.trials_per_step: expected auto or a whole number in 1..1024, got '²'"),
    (["samples.yaml"], "data.n_samples: must be in 1..100000000, got 1000000000000"),
    (["units.yaml"], "model.hidden_units: every layer needs 1..65536 units"),
    (["limit.yaml"], "data.limit: must be a finite number, got 1e+39"),
    (["picked.yaml", f"search.epochs={NINES}"], "search.epochs: must be in 1..1000000"),
    (["long.yaml"], "search.epochs: must be in 1..1000000, got a whole number of 5000 digits"),
    (
        ["picked.yaml", f"search.max_trials={LONG}"],
        "search.max_trials: must be in 1..1000000, got a whole number of 5000",
    ),
    # the rows that made a certificate with offset 0 and still registered the model
    (
        ["picked.yaml", "--certify", "0.5", "--calibration-data", "{tmp}/cal_over32.csv"],
        "--calibration-data: column 'f0' of {tmp}/cal_over32.csv holds 3e+39 in row 4",
    ),
    (
        ["picked.yaml", "--certify", "0.5", "--calibration-data", "{tmp}/cal_nan.csv"],
        "--calibration-data: column 'f7' of {tmp}/cal_nan.csv holds nan in row 2",
    ),
    (
        ["picked.yaml", "--certify", "0.5", "--calibration-data", "{tmp}/inf.npz"],
        "--calibration-data: array 'x' of {tmp}/inf.npz holds inf in row 3",
    ),
    (
        ["picked.yaml", "--certify", "0.5", "--calibration-data", "{tmp}/gone.csv"],
        "--calibration-data: file '{tmp}/gone.csv' does not exist",
    ),
    (["picked.yaml", "--certify", "nan"], "--certify: must be a rate in (0, 1), got nan"),
    (["picked.yaml", "--confidence", "inf", "--certify", "0.5"], "--confidence: must be a rate in (0, 1), got inf"),
]


@pytest.mark.parametrize(("args", "message"), TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_refuses_a_value_in_one_line(tmp_path, args, message):
    make_values(tmp_path)
    edited_files(tmp_path)
    inputs = set(tmp_path.iterdir())
    edited = tmp_path / "edited"
    args = [str(edited / args[0]), *(a.replace("{tmp}", str(tmp_path)) for a in args[1:])]
    message = message.replace("{edited}", str(edited)).replace("{tmp}", str(tmp_path))
    done = command("train", args, tmp_path)
    refused(done, "train", message, tmp_path, inputs)
    assert "--model-name" not in done.stderr  # never named when the user did not give it


def test_train_of_a_data_file_with_nan_names_data_path_file_column_and_row(tmp_path):
    make_values(tmp_path)
    edited_files(tmp_path)
    inputs = set(tmp_path.iterdir())
    done = command("train", [str(tmp_path / "edited" / "datafile.yaml")], tmp_path)
    refused(done, "train", "data.path: column 'b' of nan.csv holds nan in row 7", tmp_path, inputs)


CERTIFY = [
    ("over32.csv", "--data: column 'a' of {tmp}/over32.csv holds 1e+39 in row 3, which a float32 model cannot take"),
    ("nan.csv", "--data: column 'b' of {tmp}/nan.csv holds nan in row 7"),
    ("neginf.csv", "--data: column 'peak' of {tmp}/neginf.csv holds -inf in row 11"),
    ("inf.npz", "--data: array 'x' of {tmp}/inf.npz holds inf in row 3 (counting from 0), column 6"),
    ("gone.csv", "--data: file '{tmp}/gone.csv' does not exist"),
]


@pytest.mark.parametrize(("data", "message"), CERTIFY)
def test_certify_refuses_rows_a_float32_model_cannot_take(tmp_path, data, message):
    make_values(tmp_path)
    inputs = set(tmp_path.iterdir())
    done = command("certify", ["models:/m@champion", "--data", str(tmp_path / data)], tmp_path)
    refused(done, "certify", message.replace("{tmp}", str(tmp_path)), tmp_path, inputs)

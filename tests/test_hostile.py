"""Hostile input on the real command line, one parametrized test per class of input.

Every case ends in one line that says what is wrong (and what to do), a non-zero exit code, no
traceback, TensorFlow not imported, and nothing written: no store created or changed, no file
outside `mlruns/`, no `./mlflow.db`.
"""

from __future__ import annotations

import hashlib
import http.server
import sqlite3
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import command, free_port, last_line, tensorflow_imported
from exceedance.stores import schema_revisions

pytestmark = pytest.mark.slow

FILE = ["data=file", "data.limit=1"]


def csv(path: Path, header: str, rows: list[str]) -> None:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def npz(path: Path, **arrays) -> None:
    np.savez(path, **arrays)


def good_rows(n: int = 40) -> list[str]:
    return [f"{i},{i % 7},{i % 3}" for i in range(n)]


def make_data(tmp: Path) -> None:
    """One file per way a data file can be unusable."""
    csv(tmp / "ok.csv", "a,b,peak", good_rows())
    csv(tmp / "only_target.csv", "peak", [str(i % 3) for i in range(40)])
    (tmp / "latin1.csv").write_bytes(b"a,b,peak\n" + b"\xe9t\xe9,1,2\n" * 40)
    (tmp / "garbage.npz").write_bytes(np.random.default_rng(0).bytes(3000))
    npz(tmp / "whole.npz", x=np.ones((40, 3)), y=np.zeros(40))
    whole = (tmp / "whole.npz").read_bytes()
    (tmp / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    npz(tmp / "objects.npz", x=np.array([{"a": 1}] * 40, dtype=object), y=np.zeros(40))
    npz(tmp / "scalar.npz", x=np.float64(3.0), y=np.zeros(40))
    npz(tmp / "complex.npz", x=np.ones((40, 3)) * (1 + 2j), y=np.zeros(40))
    npz(tmp / "text.npz", x=np.array([["a", "b"]] * 40), y=np.zeros(40))
    csv(tmp / "huge.csv", "a,b,peak", [f"{i}e300,{i},{i % 3}" for i in range(40)])
    csv(tmp / "over32.csv", "a,b,peak", [f"{i}e39,{i},{i % 3}" for i in range(40)])
    csv(tmp / "twice.csv", "a,peak,peak", good_rows())
    csv(tmp / "na.csv", "id,b,peak", ["NA,1,2", *good_rows(39)])
    csv(tmp / "ragged.csv", "a,b,peak", [*good_rows(20), "1,2", *good_rows(20)])
    (tmp / "empty.csv").write_text("")
    (tmp / "header.csv").write_text("a,b,peak\n")
    (tmp / "nul.csv").write_bytes(b"a,b,peak\n" + b"1,\x00,2\n" * 40)
    npz(tmp / "cube.npz", x=np.ones((40, 2, 2)), y=np.zeros(40))
    with zipfile.ZipFile(tmp / "notnpy.npz", "w") as archive:
        archive.writestr("x.npy", b"not an array")


# (overrides, the line's message). One row per case; the classes are the comments.
BEFORE_TENSORFLOW = [
    # Names that would become paths outside mlruns/ or break an MLflow filter
    (["name=../../x"], "name: '../../x' cannot name an experiment"),
    (["name=/tmp/exceedance-absolute-name"], "name: '/tmp/exceedance-absolute-name' cannot name an experiment"),
    (['name="it\'s"'], 'name: "it\'s" cannot name an experiment'),
    (["name=a/b"], "name: 'a/b' cannot name an experiment"),
    # Seeds
    (["data.seed=-1"], "data.seed: must be in 0..2147483647, got -1"),
    (["search.seed=-1"], "search.seed: must be in 0..2147483647, got -1"),
    (["search.seed=4294967296"], "search.seed: must be in 0..2147483647, got 4294967296"),
    # Splits
    (["data.calibration_fraction=0.6"], "data.calibration_fraction: must be in [0, 0.5), got 0.6"),
    (
        ["data.calibration_fraction=0.45"],
        "data.calibration_fraction: val, test and calibration fractions take 0.85 of the rows; leave at least 0.2",
    ),
    # Trials per step
    (["search.trials_per_step=0"], "search.trials_per_step: expected auto or a whole number in 1..1024, got '0'"),
    (["search.trials_per_step=many"], "search.trials_per_step: expected auto or a whole number in 1..1024, got 'many'"),
    (["search.trials_per_step=-2"], "search.trials_per_step: expected auto or a whole number in 1..1024, got '-2'"),
    # Names a trial would only reject once TensorFlow runs
    (["model.activation=relux"], "model.activation: unknown value 'relux'"),
    (["penalty.base_loss=msee"], "penalty.base_loss: unknown value 'msee'"),
    (["model._target_=nope.build"], "model._target_: cannot import 'nope'"),
    (["model._target_=exceedance.models.nope"], "model._target_: 'exceedance.models' has no function 'nope'"),
    (["model._target_=build_mlp"], "model._target_: 'build_mlp' is not a dotted path"),
    (["+model.options.widthx=3"], "model.options: exceedance.models.build_mlp cannot take ['widthx']"),
    # Your own data: what it needs
    (["data=file", "data.path=ok.csv", "data.targets=peak"], "data.limit: is required"),
    (["data=file", "data.path=ok.csv", "data.limit=1"], "data.targets: is required"),
    ([*FILE, "data.path=ok.csv", "data.targets=[peak,peak]"], "data.targets: names ['peak'] are given twice"),
    ([*FILE, "data.path=ok.csv", "data.targets=peak", "data.features=[peak]"], "data.features: ['peak'] are also"),
    ([*FILE, "data.path=ok.csv", "data.targets=peak", "data.features=[c]"], "data.features: columns ['c'] not in"),
    # Data files we cannot use
    ([*FILE, "data.path=only_target.csv", "data.targets=peak"], "has no feature columns besides the targets"),
    ([*FILE, "data.path=latin1.csv", "data.targets=peak"], "latin1.csv is not UTF-8 text"),
    ([*FILE, "data.path=garbage.npz", "data.targets=y"], "garbage.npz is not a readable .npz archive"),
    ([*FILE, "data.path=truncated.npz", "data.targets=y"], "truncated.npz is not a readable .npz archive"),
    ([*FILE, "data.path=notnpy.npz", "data.targets=x"], "notnpy.npz is not a readable .npz archive"),
    ([*FILE, "data.path=objects.npz", "data.targets=y"], "objects.npz is not a readable .npz archive"),
    ([*FILE, "data.path=scalar.npz", "data.targets=y"], "array 'x' of scalar.npz has shape ()"),
    ([*FILE, "data.path=complex.npz", "data.targets=y"], "array 'x' of complex.npz holds complex128 values"),
    ([*FILE, "data.path=text.npz", "data.targets=y"], "array 'x' of text.npz holds <U1 values"),
    ([*FILE, "data.path=huge.csv", "data.targets=peak"], "data.path: column 'a' of huge.csv holds 1e+300 in row 3"),
    ([*FILE, "data.path=over32.csv", "data.targets=peak"], "column 'a' of over32.csv holds 1e+39 in row 3"),
    ([*FILE, "data.path=twice.csv", "data.targets=peak"], "twice.csv names columns ['peak'] more than once"),
    ([*FILE, "data.path=na.csv", "data.targets=peak"], "column 'id' of na.csv has a non-numeric value 'NA' in row 2"),
    ([*FILE, "data.path=ragged.csv", "data.targets=peak"], "row 22 of ragged.csv has 2 cells, the header 3"),
    (["name="], "name: '' cannot name an experiment"),
    ([*FILE, "data.path=.", "data.targets=peak"], "data.path: '.' is a folder"),
    ([*FILE, "data.path=empty.csv", "data.targets=peak"], "data.path: empty.csv is empty"),
    ([*FILE, "data.path=header.csv", "data.targets=peak"], "data: need at least 10 rows to split, got 0"),
    ([*FILE, "data.path=nul.csv", "data.targets=peak"], "column 'b' of nul.csv has a non-numeric value"),
    ([*FILE, "data.path=cube.npz", "data.targets=y"], "array 'x' of cube.npz has shape (40, 2, 2)"),
    # Stores that name no file
    (["tracking.uri=sqlite://mlflow.db"], "tracking.uri: 'sqlite://mlflow.db' names no database file"),
    (["tracking.uri=sqlite:///:memory:"], "tracking.uri: 'sqlite:///:memory:' names no database file"),
    # A tuner directory that cannot be used
    (["search.directory=ok.csv"], "search.directory: cannot create"),
]


@pytest.mark.parametrize(("overrides", "message"), BEFORE_TENSORFLOW, ids=[" ".join(c[0]) for c in BEFORE_TENSORFLOW])
def test_bad_input_is_one_line_before_tensorflow_and_writes_nothing(tmp_path, overrides, message):
    make_data(tmp_path)
    inputs = set(tmp_path.iterdir())
    done = command("sweep", overrides, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    line = last_line(done)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert line.startswith("exceedance-sweep: error: ") and message in line, line
    assert not tensorflow_imported(done)
    assert set(tmp_path.iterdir()) == inputs, "something was written"  # no store, tuner or Hydra folder
    assert not Path("/tmp/exceedance-absolute-name").exists()


def _digest(path: Path) -> str:
    if path.is_dir():
        return "dir:" + ",".join(sorted(p.name for p in path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mlflow_store(path: Path) -> None:
    MlflowClient(f"sqlite:///{path}").search_experiments()  # MLflow creates its schema


def _set_revision(path: Path, revision: str) -> None:
    _mlflow_store(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def _older_revision() -> str:
    migrations = Path(__import__("mlflow").__file__).parent / "store" / "db_migrations" / "versions"
    head, _ = schema_revisions()
    text = next(f.read_text() for f in migrations.glob("*.py") if f'revision = "{head}"' in f.read_text())
    return text.split("down_revision = ")[1].split("\n")[0].strip("'\"() ,")


def _tables(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)


STORES = {
    "another application's database": (
        lambda p: _tables(p, "CREATE TABLE users (name TEXT)", "INSERT INTO users VALUES ('ann')"),
        "is not an MLflow store (it holds the tables users)",
    ),
    "a table named like MLflow's": (
        lambda p: _tables(p, "CREATE TABLE experiments (x INTEGER)"),
        "is not an MLflow store (it holds the tables experiments)",
    ),
    "an older MLflow schema": (
        lambda p: _set_revision(p, _older_revision()),
        "has an older MLflow schema",
    ),
    "an unknown schema revision": (
        lambda p: _set_revision(p, "0123456789ab"),
        "a schema revision this MLflow does not",
    ),
    "garbage": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(5000)), "is not a SQLite database"),
    "a truncated store": (
        lambda p: (_mlflow_store(p), p.write_bytes(p.read_bytes()[:8192])),
        "cannot open the store",
    ),
    "a directory": (lambda p: p.mkdir(), "is a directory, not a SQLite file"),
}


@pytest.mark.parametrize("case", list(STORES))
def test_a_store_that_is_not_ours_or_not_usable_is_refused_before_anything_is_written(tmp_path, case):
    make, message = STORES[case]
    store = tmp_path / "their.db"
    make(store)
    before = _digest(store)
    done = command("sweep", [f"tracking.uri=sqlite:///{store}"], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    line = last_line(done)
    assert message in line, line
    assert not tensorflow_imported(done)
    assert _digest(store) == before, "the store was written to"
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        # The driver (psycopg) is installed with the test extra: nothing listens on port 1.
        (
            "postgresql://alice:s3cretpw@127.0.0.1:1/mlflow",
            "cannot open the store postgresql://alice:***@127.0.0.1:1/mlflow",
        ),
        ("mysql://alice:s3cretpw@127.0.0.1:1/mlflow", "the mysql driver is not installed"),
        ("ftp://alice:s3cretpw@example.org/x", "unsupported tracking URI 'ftp://alice:***@example.org/x'"),
        ("http://alice:s3cretpw@127.0.0.1:9", "no MLflow server answers at http://alice:***@127.0.0.1:9"),
    ],
)
def test_unusable_uris_are_one_line_without_their_password(tmp_path, uri, message):
    for name, args in (
        ("sweep", [f"tracking.uri={uri}"]),
        ("pick", ["exp", "--knee", "--tracking-uri", uri]),
    ):
        done = command(name, args, tmp_path)
        assert done.returncode == 2, done.stderr[-3000:]
        assert message in last_line(done)
        assert "s3cretpw" not in done.stderr + done.stdout
        assert not tensorflow_imported(done)
    assert not any(tmp_path.iterdir()) or {p.name for p in tmp_path.iterdir()} <= {"mlruns"}
    assert not list(tmp_path.rglob("*.db"))


class _NotMlflow(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_server_that_is_not_mlflow_is_refused_and_not_reported_as_a_missing_experiment(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        port = server.server_address[1]
        for name, args in (
            ("sweep", [f"tracking.uri={uri}"]),
            ("sweep", ["tracking=server", f"tracking.port={port}"]),  # something else holds the port
            ("pick", ["exp", "--knee", "--tracking-uri", uri]),
        ):
            done = command(name, args, tmp_path)
            assert done.returncode == 2, done.stderr[-3000:]
            line = last_line(done)
            assert f"{uri} answers, but not as an MLflow tracking server" in line, line
            assert "does not exist" not in line
    finally:
        server.shutdown()


def test_pick_out_that_is_a_file_is_one_line(tmp_path):
    _mlflow_store(tmp_path / "s.db")
    (tmp_path / "taken").write_text("")
    done = command(
        "pick", ["exp", "--knee", "--tracking-uri", f"sqlite:///{tmp_path}/s.db", "--out", "taken/x"], tmp_path
    )
    assert done.returncode == 2
    assert "--out: " in last_line(done) and "is a file, not a folder" in last_line(done)


PICKED = """\
defaults: [base_config, _self_]
name: shipit-picked
data: {{name: synthetic, limit: 1.0, n_samples: 300}}
model: {{hidden_units: [8]}}
penalty:
  forms: [l2]
  threshold_offset: {{low: 0.0, high: 0.0}}
  lam: {{low: 1.0, high: 1.0}}
search:
  epochs: 1
  learning_rate: {{low: 0.01, high: 0.01}}
tracking: {{uri: "sqlite:///{store}"}}
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["picked.yaml", "--alias", "v1"], "--alias: Version alias name 'v1' is reserved"),
        (["picked.yaml", "--alias", "Latest"], "--alias: 'latest' alias name (case insensitive) is reserved"),
        (["picked.yaml", "--alias", "no spaces"], "--alias: Invalid alias name: 'no spaces'"),
        (["picked.yaml", "--model-name", "a/b"], "--model-name: Invalid model name 'a/b'"),
        (["picked.yaml", "--model-name", " "], "--model-name: Missing value for required parameter 'name'"),
        (["picked.yaml", "search.epochs=2", "--alias", "v2"], "--alias: Version alias name 'v2' is reserved"),
        (["picked.yaml", "--alias", "v3", "search.epochs=2"], "--alias: Version alias name 'v3' is reserved"),
        (["broken.yaml"], "config: broken.yaml is not valid YAML"),
        (["list.yaml"], "config: list.yaml is not a mapping of settings"),
    ],
)
def test_train_refuses_bad_names_and_files_before_training(tmp_path, args, message):
    store = tmp_path / "mlruns" / "mlflow.db"
    (tmp_path / "picked.yaml").write_text(PICKED.format(store=store))
    (tmp_path / "broken.yaml").write_text("defaults: [base_config\nname: x: y\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    done = command("train", args, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert message in last_line(done), last_line(done)
    assert not tensorflow_imported(done)
    assert not store.exists() and not (tmp_path / "mlflow.db").exists()

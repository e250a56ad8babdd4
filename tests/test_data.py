"""Data sets, splits and the file loader."""

from __future__ import annotations

import numpy as np
import pytest

from exceedance.config import ConfigError, DataConfig
from exceedance.data import load, synthetic
from exceedance.data_files import read_features


def test_synthetic_has_the_requested_share_above_the_limit():
    _, y = synthetic(5000, 6, 3, limit=1.5, exceed_share=0.3, seed=0)
    assert (y > 1.5).mean() == pytest.approx(0.3, abs=0.01)


def test_split_is_deterministic_and_disjoint():
    a, b = load(DataConfig(n_samples=200, limit=1.0)), load(DataConfig(n_samples=200, limit=1.0))
    np.testing.assert_array_equal(a.x_val, b.x_val)
    np.testing.assert_array_equal(a.x_cal, b.x_cal)
    assert (len(a.x_train), len(a.x_val), len(a.x_test), len(a.x_cal)) == (90, 40, 40, 30)
    assert a.x_train.dtype == np.float32 and a.y_train.shape == (90, 4)
    assert abs(a.x_train.mean()) < 0.05
    # no row in two parts (the features of distinct rows differ)
    everything = np.concatenate([a.x_train, a.x_val, a.x_test, a.x_cal])
    assert len(np.unique(everything, axis=0)) == 200


@pytest.mark.parametrize(("name", "rows", "outputs"), [("diabetes", 442, 1), ("breast_cancer", 569, 1)])
def test_bundled_sklearn_sets(name, rows, outputs):
    data = load(DataConfig(name=name, limit=1.0))
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) + len(data.x_cal) == rows
    assert data.n_outputs == outputs


def write_csv(path, rows):
    path.write_text("a,b,peak\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")


def test_csv_with_named_target(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path, [(i, i * 2, i % 3) for i in range(30)])
    data = load(DataConfig(name="file", limit=1.0, path=str(path), targets=["peak"]))
    assert (data.n_features, data.n_outputs) == (2, 1)


def test_npz_with_named_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((20, 5)), y1=np.zeros(20), y2=np.zeros((20, 2)))
    data = load(DataConfig(name="file", limit=1.0, path=str(path), targets=["y1", "y2"]))
    assert (data.n_features, data.n_outputs) == (5, 3)


@pytest.mark.parametrize(
    ("content", "targets", "message"),
    [
        (None, ["peak"], "data.path: file"),
        ([(1, 2, 3)] * 20, ["nope"], "data.targets: columns ['nope'] not in"),
        ([(1, "nan", 3)] * 20, ["peak"], "data.path: column 'b' of "),
        ([(1, 2, 3)] * 5, ["peak"], "data: need at least 10 rows"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, content, targets, message):
    path = tmp_path / "d.csv"
    if content is not None:
        write_csv(path, content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(DataConfig(name="file", limit=1.0, path=str(path), targets=targets))


def test_an_unknown_data_set_raises_instead_of_loading_another():
    with pytest.raises(ConfigError, match=r"data\.name: unknown data set 'mnist'"):
        load(DataConfig(name="mnist", limit=1.0))


def _csv(path, cell: str, at_row: int = 7, column: str = "b", width: int = 3) -> str:
    names = ["a", "b", "peak"][:width]
    rows = [[str(i), str(i % 5), str(i % 3)][:width] for i in range(30)]
    rows[at_row][names.index(column)] = cell
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return str(path)


# Every value a float32 model cannot take, as the file writes it and as the line shows it.
UNHOLDABLE = [("nan", "nan"), ("NaN", "nan"), ("inf", "inf"), ("-Infinity", "-inf"), ("1e39", "1e+39")]
UNHOLDABLE += [("-3.5e38", "-3.5e+38"), ("1e308", "1e+308")]


@pytest.mark.parametrize(("cell", "shown"), UNHOLDABLE)
@pytest.mark.parametrize("column", ["a", "peak"])
def test_a_training_file_value_float32_cannot_hold_names_option_file_column_and_row(tmp_path, cell, shown, column):
    path = _csv(tmp_path / "d.csv", cell, column=column)
    with pytest.raises(ConfigError) as err:
        load(DataConfig(name="file", limit=1.0, path=path, targets=["peak"]))
    assert str(err.value).startswith(f"data.path: column {column!r} of {path} holds {shown} in row 9, which a float32")


@pytest.mark.parametrize(("cell", "shown"), UNHOLDABLE)
@pytest.mark.parametrize("option", ["--data", "--calibration-data"])
def test_rows_without_labels_refuse_what_float32_cannot_hold_naming_the_option(tmp_path, cell, shown, option):
    path = _csv(tmp_path / "new.csv", cell, at_row=0, width=2)
    with pytest.raises(ConfigError) as err:
        read_features(path, option, width=2)
    assert str(err.value).startswith(f"{option}: column 'b' of {path} holds {shown} in row 2, which a float32 model")
    values = np.ones((20, 3))
    values[4, 2] = float(cell)
    np.savez(tmp_path / "new.npz", x=values)
    with pytest.raises(ConfigError) as err:
        read_features(str(tmp_path / "new.npz"), option)
    assert f"{option}: array 'x' of {tmp_path / 'new.npz'} holds {shown} in row 4 (counting from 0), column 2 " in str(
        err.value
    )


def test_the_largest_values_float32_holds_are_taken(tmp_path):
    path = _csv(tmp_path / "edge.csv", "3.4e38", at_row=0, width=2)
    assert read_features(path, "--data").dtype == np.float32
    spread = np.tile([[3e19, 1.0], [-3e19, 2.0]], (10, 1))  # variance 9e38: beyond float32
    np.savez(tmp_path / "wide.npz", x=spread, y=np.zeros(20))
    # within float32, but a variance the shipped model's float32 standardization cannot hold
    with pytest.raises(ConfigError, match=r"^data: features reach 3e\+19; the shipped model standardizes"):
        load(DataConfig(name="file", limit=1.0, path=str(tmp_path / "wide.npz"), targets=["y"]))


def test_the_options_the_user_gave_are_named(tmp_path):
    for option in ("--data", "--calibration-data"):
        with pytest.raises(ConfigError, match=rf"^{option}: file 'gone.csv' does not exist$"):
            read_features("gone.csv", option)
        np.savez(tmp_path / "noarray.npz", z=np.ones((20, 2)))
        with pytest.raises(ConfigError, match=rf"^{option}: arrays \['x'\] not in"):
            read_features(str(tmp_path / "noarray.npz"), option)


def test_a_file_with_no_rows_is_refused_for_its_size_not_its_values(tmp_path):
    (tmp_path / "header.csv").write_text("a,b,peak\n")
    with pytest.raises(ConfigError, match=r"^data: need at least 10 rows to split, got 0$"):
        load(DataConfig(name="file", limit=1.0, path=str(tmp_path / "header.csv"), targets=["peak"]))
    with pytest.raises(ConfigError, match=r"^--data: .*header.csv has no rows"):
        read_features(str(tmp_path / "header.csv"), "--data")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3)))
    with pytest.raises(ConfigError, match=r"^--calibration-data: .*empty.npz has no rows"):
        read_features(str(tmp_path / "empty.npz"), "--calibration-data")

"""Data sets, splits and the file loader."""

from __future__ import annotations

import numpy as np
import pytest

from exceedance.config import ConfigError, DataConfig
from exceedance.data import load, synthetic


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
        ([(1, "nan", 3)] * 20, ["peak"], "data: features or targets contain NaN or inf"),
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

"""Datasets and deterministic train/validation/test splits (NumPy and scikit-learn only).

Every loader returns plain float32 arrays; features are standardized with training-split
statistics. Nothing is downloaded: the real data sets ship inside scikit-learn.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exceedance.config import ConfigError, DataConfig


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays; targets are always 2-D `(rows, outputs)`.

    Features are standardized with the training rows' `feature_mean` and `feature_std`, kept so
    a model shipped for serving can take raw features (see `train.with_standardization`).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_mean: np.ndarray
    feature_std: np.ndarray

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Undo the standardization: the features as the user has them."""
        return (x * self.feature_std + self.feature_mean).astype(np.float32)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.y_train.shape[1]


def synthetic(
    n_samples: int, n_features: int, n_outputs: int, limit: float, exceed_share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth nonlinear multi-output regression where about `exceed_share` of targets exceed `limit`.

    The targets are shifted so the share above the limit is right by construction; a model that
    fits them perfectly therefore exceeds the limit that often, which is the trade-off to study.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, n_features))
    w1 = rng.normal(size=(n_features, n_outputs)) / np.sqrt(n_features)
    w2 = rng.normal(size=(n_features, n_outputs)) / np.sqrt(n_features)
    signal = x @ w1 + 0.5 * np.sin(2.0 * (x @ w2))
    raw = signal + 0.1 * rng.normal(size=signal.shape)
    raw = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    # Place the limit at the (1 - exceed_share) quantile of every output.
    y = raw - np.quantile(raw, 1.0 - exceed_share, axis=0) + limit
    return x, y


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "diabetes":
        x, y = datasets.load_diabetes(return_X_y=True)
        # Targets in standard deviations, so a limit of 1.0 means "one sd above the mean".
        return x, (y - y.mean()) / y.std()
    x, y = datasets.load_breast_cancer(return_X_y=True)
    return x, y


def _read_csv(path: Path, targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ConfigError(f"data.path: {path} is empty; expected a header row of column names")
        rows = list(reader)
    missing = [t for t in targets if t not in header]
    if missing:
        raise ConfigError(f"data.targets: columns {missing} not in {path}; columns are {header}")
    try:
        table = np.asarray(rows, dtype=np.float64)
    except ValueError as err:
        raise ConfigError(f"data.path: {path} has a non-numeric value ({err})") from None
    target_idx = [header.index(t) for t in targets]
    feature_idx = [i for i in range(len(header)) if i not in target_idx]
    return table[:, feature_idx], table[:, target_idx]


def _read_npz(path: Path, features: str, targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        missing = [t for t in [features, *targets] if t not in arrays.files]
        if missing:
            raise ConfigError(f"data.targets: arrays {missing} not in {path}; arrays are {arrays.files}")
        x = arrays[features]
        columns = [arrays[t].reshape(len(arrays[t]), -1) for t in targets]
    return x, np.concatenate(columns, axis=1)


def read_file(path: str, targets: list[str], features: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """Load features and targets from a `.csv` (header row) or `.npz` (arrays by name).

    Args:
        path: the file.
        targets: target column names (csv) or array names (npz).
        features: npz only: the name of the feature array.

    Returns:
        `(x, y)` as arrays with rows first.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"data.path: file {path!r} does not exist")
    if file.suffix == ".csv":
        return _read_csv(file, list(targets))
    if file.suffix == ".npz":
        return _read_npz(file, features, list(targets))
    raise ConfigError(f"data.path: {path!r} must end in .csv or .npz")


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = y.reshape(len(y), -1) if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2:
        raise ConfigError(f"data: features must be 2-D and targets 1-D or 2-D, got {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ConfigError(f"data: {len(x)} feature rows but {len(y)} target rows")
    if len(x) < 10:
        raise ConfigError(f"data: need at least 10 rows to split, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("data: features or targets contain NaN or inf; clean or impute them first")
    return x, y


def split(x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    """Shuffle with `seed`, split, and standardize features with training statistics."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, round(len(x) * test_fraction))
    n_val = max(1, round(len(x) * val_fraction))
    test, val, train = np.split(order, [n_test, n_test + n_val])
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    std[std == 0] = 1.0

    def part(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ((x[idx] - mean) / std).astype(np.float32), y[idx].astype(np.float32)

    return Dataset(*part(train), *part(val), *part(test), feature_mean=mean, feature_std=std)


def load(config: DataConfig) -> Dataset:
    """Load and split the data set a config names; raise `ConfigError` on bad data.

    Args:
        config: the `data` section.

    Returns:
        The split, scaled `Dataset`.
    """
    if config.name == "synthetic":
        x, y = synthetic(
            config.n_samples, config.n_features, config.n_outputs, config.limit, config.exceed_share, config.seed
        )
    elif config.name == "file":
        x, y = read_file(config.path, config.targets, config.features)
    else:
        x, y = _sklearn(config.name)
    x, y = _check(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return split(x, y, config.val_fraction, config.test_fraction, config.seed)

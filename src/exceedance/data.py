"""Datasets and deterministic train/validation/test splits (NumPy and scikit-learn only).

Every loader returns plain float32 arrays; features are standardized with training-split
statistics. Nothing is downloaded: the real data sets ship inside scikit-learn.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exceedance.config import FLOAT32_MAX, ConfigError, DataConfig


@dataclass(frozen=True)
class TargetScale:
    """How targets are scaled for training: `model = (user - shift) / scale`.

    The identity when `data.scale_targets` is false. Limits, thresholds and predictions go
    through it both ways, so models train in standard deviations and users read their units.
    """

    shift: float = 0.0
    scale: float = 1.0

    def to_model(self, values):
        """From the user's units to the units the model trains in."""
        return (values - self.shift) / self.scale

    def to_user(self, values):
        """From the model's units back to the user's."""
        return values * self.scale + self.shift


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test arrays; targets are always 2-D `(rows, outputs)`.

    Features are standardized with the training rows' `feature_mean` and `feature_std`, kept so
    a model shipped for serving can take raw features (see `train.with_standardization`).
    Targets are in the model's units (`target`): `target.to_user` gives them back in the user's.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target: TargetScale = TargetScale()
    # Features of the calibration rows, which no search trains, validates or tests on.
    x_cal: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

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


def _diabetes(config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    x, y = datasets.load_diabetes(return_X_y=True)
    # Targets in standard deviations, so a limit of 1.0 means "one sd above the mean".
    return x, (y - y.mean()) / y.std()


def _breast_cancer(config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    return datasets.load_breast_cancer(return_X_y=True)


FIX_FEATURES = "name the feature columns with data.features=[a,b] (every other column is left out)"


def _holdable(values: np.ndarray, option: str, where: str, row_label) -> None:
    """Refuse the first value a float32 model cannot take (NaN, inf, or beyond float32's range),
    naming the option the user gave, the file, the column and the row: the one check every row
    read from a file passes on its way to a model (training data, `--data`, `--calibration-data`)."""
    values = np.asarray(values, dtype=np.float64)
    values = values if values.ndim == 2 else values[:, None]  # 1-D or 2-D (checked): no reshape of 0 rows
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(values) <= FLOAT32_MAX)  # NaN compares false: it is bad too
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        part = f", column {column} (counting from 0)" if values.shape[1] > 1 else ""
        raise ConfigError(
            f"{option}: {where} holds {values[row, column]:g} in {row_label(row)}{part}, which a float32 model "
            f"cannot take (finite numbers within +-{FLOAT32_MAX:.4g} only); clean or rescale it"
        )


def _read_csv(
    path: Path, targets: list[str], features: list[str], option: str, fields: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ConfigError(f"{option}: {path} is empty; expected a header row of column names")
        rows = list(reader)
    header = [name.strip() for name in header]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise ConfigError(f"{option}: {path} names columns {twice} more than once; column names must be unique")
    for field_name, names in (("targets", targets), ("features", features)):
        missing = [t for t in names if t not in header]
        if missing:
            raise ConfigError(f"{fields[field_name]}: columns {missing} not in {path}; columns are {header}")
    short = next((i for i, row in enumerate(rows) if len(row) != len(header)), None)
    if short is not None:
        raise ConfigError(f"{option}: row {short + 2} of {path} has {len(rows[short])} cells, the header {len(header)}")
    features = features or [name for name in header if name not in targets]
    if not features:
        raise ConfigError(f"{option}: {path} has no feature columns besides the targets {targets}")

    def column(name: str) -> np.ndarray:
        i = header.index(name)
        try:
            values = np.array([float(row[i]) for row in rows])
        except ValueError:
            bad = next(n for n, row in enumerate(rows) if not _is_number(row[i]))
            hint = "" if name in targets else f", or {FIX_FEATURES}"
            raise ConfigError(
                f"{option}: column {name!r} of {path} has a non-numeric value {rows[bad][i]!r} in row {bad + 2}; "
                f"clean it{hint}"
            ) from None
        _holdable(values, option, f"column {name!r} of {path}", lambda n: f"row {n + 2}")  # the file's line
        return values

    y = np.stack([column(t) for t in targets], axis=1) if targets else np.zeros((len(rows), 0))
    return np.stack([column(f) for f in features], axis=1), y


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_npz(
    path: Path, features: list[str], targets: list[str], option: str, fields: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    features = features or ["x"]
    with np.load(path, allow_pickle=False) as arrays:
        for field_name, names in (("targets", targets), ("features", features)):
            missing = [t for t in names if t not in arrays.files]
            if missing:
                raise ConfigError(f"{fields[field_name]}: arrays {missing} not in {path}; arrays are {arrays.files}")
        loaded = {name: arrays[name] for name in [*features, *targets]}
    for name, array in loaded.items():
        if array.ndim == 0 or array.ndim > 2:
            raise ConfigError(
                f"{option}: array {name!r} of {path} has shape {array.shape}; expected rows first, 1-D or 2-D"
            )
        if not _real(array):
            raise ConfigError(f"{option}: array {name!r} of {path} holds {array.dtype} values; expected real numbers")
        _holdable(array, option, f"array {name!r} of {path}", lambda n: f"row {n} (counting from 0)")

    def columns(names: list[str]) -> np.ndarray:
        rows = {len(loaded[n]) for n in names}
        if len(rows) > 1:
            raise ConfigError(f"{option}: arrays {names} of {path} have different row counts {sorted(rows)}")
        return np.concatenate([loaded[n] if loaded[n].ndim == 2 else loaded[n][:, None] for n in names], axis=1)

    x = columns(features)
    return x, columns(targets) if targets else np.zeros((len(x), 0))


def _real(array: np.ndarray) -> bool:
    return array.dtype.kind in "biuf"  # bool, integers, floats: not complex, text, objects or dates


def read_file(
    path: str, targets: list[str], features: list[str] = (), option: str = "data.path"
) -> tuple[np.ndarray, np.ndarray]:
    """Load features and targets from a `.csv` (header row) or `.npz` (arrays by name).

    Every way a file can be unusable (unreadable, undecodable, not the format its name says,
    truncated, non-numeric, a value a float32 model cannot take) raises `ConfigError` naming
    `option`, the option the user gave the file with, and the file (and the column and row).

    Args:
        path: the file.
        targets: target column names (csv) or array names (npz); none for a file of features only.
        features: feature column names (csv; default every non-target column) or array names
            (npz; default `x`).
        option: how the user gave the file: `data.path`, `--data`, `--calibration-data`.

    Returns:
        `(x, y)` as float64 arrays with rows first.
    """
    file = Path(path)
    # Names of columns the user did not give by hand: the file's own option says what is missing.
    fields = {"targets": "data.targets", "features": "data.features"}
    if option != "data.path":
        fields = {"targets": option, "features": option}
    if file.is_dir():
        raise ConfigError(f"{option}: {path!r} is a folder; give the .csv or .npz file in it")
    if not file.is_file():
        raise ConfigError(f"{option}: file {path!r} does not exist")
    if file.suffix not in (".csv", ".npz"):
        raise ConfigError(f"{option}: {path!r} must end in .csv or .npz")
    try:
        if file.suffix == ".csv":
            return _read_csv(file, list(targets), list(features), option, fields)
        return _read_npz(file, list(features), list(targets), option, fields)
    except ConfigError:
        raise
    except UnicodeDecodeError as err:
        raise ConfigError(f"{option}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{option}: cannot read {path} ({err.strerror or err})") from None
    except Exception as err:  # zip, pickle and format errors of a damaged or foreign file
        kind = "CSV file" if file.suffix == ".csv" else ".npz archive"
        raise ConfigError(f"{option}: {path} is not a readable {kind} ({type(err).__name__}: {err})") from None


def read_features(path: str, option: str, width: int | None = None) -> np.ndarray:
    """The features of a file without labels (a `.csv` of feature columns or a `.npz` with `x`),
    as the float32 rows a model takes, raising `ConfigError` for a file `read_file` refuses, no
    rows, or (given `width`) another number of columns."""
    x, _ = read_file(path, [], option=option)
    if len(x) == 0:
        raise ConfigError(f"{option}: {path} has no rows; give a file with at least one row of features")
    if width is not None and x.shape[1] != width:
        raise ConfigError(f"{option}: {path} has {x.shape[1]} feature columns; the model takes {width}")
    return x.astype(np.float32)


# The shipped model standardizes raw features in float32 (train.for_serving): their variance must
# fit it too, or the layer divides by inf and the feature silently drops out.
MAX_FEATURE = FLOAT32_MAX**0.5 / 2


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every array a loader returns passes here: shapes, dtypes and ranges training can use."""
    x, y = np.asarray(x), np.asarray(y)
    for name, array in (("features", x), ("targets", y)):
        if not _real(array):
            raise ConfigError(f"data: {name} hold {array.dtype} values; expected real numbers")
    y = y.reshape(len(y), -1) if y.ndim == 1 else y
    if x.ndim != 2 or y.ndim != 2:
        raise ConfigError(f"data: features must be 2-D and targets 1-D or 2-D, got {x.shape} and {y.shape}")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ConfigError(f"data: need at least one feature and one target column, got {x.shape[1]} and {y.shape[1]}")
    if len(x) != len(y):
        raise ConfigError(f"data: {len(x)} feature rows but {len(y)} target rows")
    if len(x) < 10:
        raise ConfigError(f"data: need at least 10 rows to split, got {len(x)}")
    x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError("data: features or targets contain NaN or inf; clean or impute them first")
    with np.errstate(over="ignore", invalid="ignore"):
        spread = np.max(np.abs(x), axis=0) + np.std(x, axis=0)
    if not (np.isfinite(spread).all() and max(np.abs(x).max(), np.abs(y).max()) < FLOAT32_MAX):
        raise ConfigError(
            f"data: values too large to train on (beyond {FLOAT32_MAX:.3g}, the float32 range); rescale them first"
        )
    if np.abs(x).max() > MAX_FEATURE:
        raise ConfigError(
            f"data: features reach {np.abs(x).max():.3g}; the shipped model standardizes them in float32, whose "
            f"range holds their variance only up to +-{MAX_FEATURE:.3g}: rescale them first"
        )
    return x, y


def split(
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    scale_targets: bool = False,
    calibration_fraction: float = 0.0,
) -> Dataset:
    """Shuffle with `seed`, split (test, validation, calibration, training rows), standardize
    features with training statistics and, with `scale_targets`, targets with one mean and
    standard deviation over all training outputs."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, round(len(x) * test_fraction))
    n_val = max(1, round(len(x) * val_fraction))
    n_cal = round(len(x) * calibration_fraction)
    test, val, cal, train = np.split(order, [n_test, n_test + n_val, n_test + n_val + n_cal])
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    std[std == 0] = 1.0
    target = TargetScale()
    if scale_targets:
        spread = float(y[train].std())
        target = TargetScale(float(y[train].mean()), spread if spread > 0 else 1.0)

    def part(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = ((x[idx] - mean) / std).astype(np.float32)
        if not np.isfinite(scaled).all():
            raise ConfigError("data: a feature column cannot be standardized (its spread is too small for its values)")
        return scaled, target.to_model(y[idx]).astype(np.float32)

    return Dataset(
        *part(train), *part(val), *part(test), feature_mean=mean, feature_std=std, target=target, x_cal=part(cal)[0]
    )


# Data set name -> its loader: the `data` section in, features and targets out (any shapes and
# dtypes; `load` checks and splits them). `config.DATASETS` lists the same names.
LOADERS = {
    "synthetic": lambda c: synthetic(c.n_samples, c.n_features, c.n_outputs, c.limit, c.exceed_share, c.seed),
    "diabetes": _diabetes,
    "breast_cancer": _breast_cancer,
    "file": lambda c: read_file(c.path, c.targets, c.features),
}


def load(config: DataConfig) -> Dataset:
    """Load and split the data set a config names; raise `ConfigError` on bad data.

    Args:
        config: the `data` section.

    Returns:
        The split, scaled `Dataset`.
    """
    if config.name not in LOADERS:
        raise ConfigError(f"data.name: unknown data set {config.name!r}; allowed: {', '.join(LOADERS)}")
    x, y = LOADERS[config.name](config)
    x, y = _check(x, y)
    return split(
        x, y, config.val_fraction, config.test_fraction, config.seed, config.scale_targets, config.calibration_fraction
    )

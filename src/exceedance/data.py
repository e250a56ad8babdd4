"""Datasets and deterministic train/validation/test splits (NumPy and scikit-learn only).

Every loader returns plain float32 arrays; features are standardized with training-split
statistics. Nothing is downloaded: the real data sets ship inside scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from exceedance.config import FLOAT32_MAX, ConfigError, DataConfig
from exceedance.data_files import is_real, read_file


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


# The shipped model standardizes raw features in float32 (train.for_serving): their variance must
# fit it too, or the layer divides by inf and the feature silently drops out.
MAX_FEATURE = FLOAT32_MAX**0.5 / 2


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every array a loader returns passes here: shapes, dtypes and ranges training can use."""
    x, y = np.asarray(x), np.asarray(y)
    for name, array in (("features", x), ("targets", y)):
        if not is_real(array):
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

"""The user's data files (`.csv` with a header, `.npz`) read into the float32 rows a model takes.

Every value read from a file passes one check on its way to a model (training data, `--data`,
`--calibration-data`): a value float32 cannot hold is refused in one line naming the option the
user gave, the file, the column and the row (NumPy only, no TensorFlow).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from exceedance.config import FLOAT32_MAX, ConfigError

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
        if not is_real(array):
            raise ConfigError(f"{option}: array {name!r} of {path} holds {array.dtype} values; expected real numbers")
        _holdable(array, option, f"array {name!r} of {path}", lambda n: f"row {n} (counting from 0)")

    def columns(names: list[str]) -> np.ndarray:
        rows = {len(loaded[n]) for n in names}
        if len(rows) > 1:
            raise ConfigError(f"{option}: arrays {names} of {path} have different row counts {sorted(rows)}")
        return np.concatenate([loaded[n] if loaded[n].ndim == 2 else loaded[n][:, None] for n in names], axis=1)

    x = columns(features)
    return x, columns(targets) if targets else np.zeros((len(x), 0))


def is_real(array: np.ndarray) -> bool:
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

"""Pareto fronts, hypervolume and pick rules over plain arrays (NumPy only).

Every objective is minimized: callers negate maximized objectives on the way in (see
`to_minimization`). No Keras, no MLflow: this module is imported by commands that never train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TABLE_PARAMS = ("penalty", "threshold", "lam", "temperature", "learning_rate")


@dataclass
class TrialRecord:
    """One finished trial, as plain values: where it lives, what it tried, how it scored."""

    run_id: str
    trial_id: str
    params: dict[str, Any]
    quality: float
    exceedance_rate: float


def to_minimization(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Return `(n, k)` values with every `max` column negated, so smaller is better everywhere.

    Args:
        values: `(n_trials, n_objectives)` objective values.
        directions: `min` or `max` per column.
    """
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return np.asarray(values, dtype=float) * signs


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` (all objectives minimized).

    A row is dominated when another row is <= in every objective and < in at least one.
    Duplicated optimal rows are all kept. Rows with NaN are never on the front.

    Example:
        `pareto_mask(np.array([[1, 2], [2, 1], [2, 2]]))` is `[True, True, False]`.
    """
    points = np.asarray(points, dtype=float)
    valid = ~np.isnan(points).any(axis=1)
    mask = np.zeros(len(points), dtype=bool)
    candidates = points[valid]
    # Sort lexicographically so a dominating row always comes before the rows it dominates.
    order = np.lexsort(candidates.T[::-1])
    front: list[int] = []
    for i in order:
        p = candidates[i]
        dominated = any(np.all(candidates[j] <= p) and np.any(candidates[j] < p) for j in front)
        if not dominated:
            front.append(i)
    mask[np.flatnonzero(valid)[front]] = True
    return mask


def hypervolume_2d(points: np.ndarray, reference: np.ndarray) -> float:
    """Area dominated by `points` (2 objectives, minimized) and bounded by `reference`."""
    points = np.asarray(points, dtype=float)
    points = points[pareto_mask(points)]
    points = points[np.all(points < reference, axis=1)]
    if len(points) == 0:
        return 0.0
    points = points[np.argsort(points[:, 0])]
    widths = np.diff(np.append(points[:, 0], reference[0]))
    return float(np.sum(widths * (reference[1] - points[:, 1])))


def front_mask(quality: np.ndarray, exceedance_rate: np.ndarray, quality_direction: str) -> np.ndarray:
    """Pareto mask over (quality in its direction, exceedance rate minimized)."""
    values = np.column_stack([quality, exceedance_rate])
    return pareto_mask(to_minimization(values, [quality_direction, "min"]))


def table(records: list[TrialRecord], on_front: np.ndarray) -> list[dict[str, Any]]:
    """One plain row per trial, front first and then by exceedance rate."""
    rows = [
        {
            "trial_id": r.trial_id,
            **{k: r.params.get(k, "") for k in TABLE_PARAMS},
            "quality": r.quality,
            "exceedance_rate": r.exceedance_rate,
            "pareto": bool(m),
            "run_id": r.run_id,
        }
        for r, m in zip(records, on_front, strict=True)
    ]
    return sorted(rows, key=lambda row: (not row["pareto"], row["exceedance_rate"], -row["quality"]))

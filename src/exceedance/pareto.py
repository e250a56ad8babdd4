"""Pareto fronts, hypervolume and pick rules over plain arrays (NumPy only).

Every objective is minimized: callers negate maximized objectives on the way in (see
`to_minimization`). No Keras, no MLflow: this module is imported by commands that never train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class FinishedTrial:
    """One finished trial, as plain values: where it lives, what it tried, how it scored."""

    run_id: str
    trial_id: str
    params: dict[str, Any]
    quality: float
    exceedance_rate: float
    test_exceedance_rate: float = float("nan")  # shown beside the validation rate, never used to choose
    job: str = ""  # its multirun job's number: trial ids repeat across jobs


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
    kept = np.empty((0, points.shape[1]))
    for i in order:
        p = candidates[i]
        # One vectorized test against the front so far: O(n * front) in NumPy, not in Python.
        if not np.any(np.all(kept <= p, axis=1) & np.any(kept < p, axis=1)):
            front.append(i)
            kept = candidates[front]
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


def front_hypervolume(
    quality: np.ndarray, exceedance_rate: np.ndarray, quality_direction: str, reference_quality: float
) -> float:
    """Area of the (quality, exceedance rate) plane that the trials dominate, bounded by the
    reference point (`reference_quality`, exceedance rate 1): larger is a better front.

    Example:
        Two trials (quality 0.5, rate 0.5) and (0.8, 0.75) with reference (0, 1) dominate
        0.5 * 0.5 + (0.8 - 0.5) * 0.25 = 0.325.
    """
    values = np.column_stack([quality, exceedance_rate])
    directions = [quality_direction, "min"]
    reference = to_minimization(np.array([[reference_quality, 1.0]]), directions)[0]
    return hypervolume_2d(to_minimization(values, directions), reference)


def front_mask(quality: np.ndarray, exceedance_rate: np.ndarray, quality_direction: str) -> np.ndarray:
    """Pareto mask over (quality in its direction, exceedance rate minimized)."""
    values = np.column_stack([quality, exceedance_rate])
    return pareto_mask(to_minimization(values, [quality_direction, "min"]))


def table(
    trials: list[FinishedTrial], on_front: np.ndarray, params: tuple[str, ...], quality_direction: str = "max"
) -> list[dict[str, Any]]:
    """One plain row per trial (its id, the `params` named, its scores), front first, then by
    exceedance rate, then best quality first."""
    sign = -1.0 if quality_direction == "max" else 1.0
    rows = [
        {
            "trial_id": t.trial_id,
            "job": t.job,
            **{k: t.params.get(k, "") for k in params},
            "quality": t.quality,
            "exceedance_rate": t.exceedance_rate,
            "pareto": bool(m),
            "run_id": t.run_id,
        }
        for t, m in zip(trials, on_front, strict=True)
    ]
    return sorted(rows, key=lambda row: (not row["pareto"], row["exceedance_rate"], sign * row["quality"]))


def pick_under_exceedance(
    quality: np.ndarray, exceedance_rate: np.ndarray, direction: str, max_exceedance: float
) -> int | None:
    """Index of the best-quality trial with exceedance rate <= `max_exceedance` (ties: less
    exceedance), or None when no trial qualifies."""
    ok = np.flatnonzero(exceedance_rate <= max_exceedance)
    if len(ok) == 0:
        return None
    score = to_minimization(np.column_stack([quality, exceedance_rate])[ok], [direction, "min"])
    return int(ok[np.lexsort(score.T[::-1])[0]])


def pick_over_quality(
    quality: np.ndarray, exceedance_rate: np.ndarray, direction: str, min_quality: float
) -> int | None:
    """Index of the least-exceedance trial whose quality is at least `min_quality` (for a
    minimized metric: at most), ties broken by better quality; None when none qualifies."""
    ok = np.flatnonzero(quality >= min_quality if direction == "max" else quality <= min_quality)
    if len(ok) == 0:
        return None
    score = to_minimization(np.column_stack([exceedance_rate, quality])[ok], ["min", direction])
    return int(ok[np.lexsort(score.T[::-1])[0]])


def pick_knee(quality: np.ndarray, exceedance_rate: np.ndarray, direction: str) -> int | None:
    """Index of the front's knee: after scaling both objectives to [0, 1], the front point
    farthest from the straight line through the two ends of the front (with fewer than three
    front points, the one closest to the ideal corner)."""
    points = to_minimization(np.column_stack([quality, exceedance_rate]), [direction, "min"])
    front = np.flatnonzero(pareto_mask(points))
    if len(front) == 0:
        return None
    scaled = points[front]
    span = np.ptp(scaled, axis=0)
    scaled = (scaled - scaled.min(axis=0)) / np.where(span > 0, span, 1.0)
    if len(front) < 3:
        return int(front[np.argmin(scaled.sum(axis=1))])
    ends = scaled[[np.argmin(scaled[:, 0]), np.argmax(scaled[:, 0])]]
    direction_vec = (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
    offsets = scaled - ends[0]
    distance = np.abs(offsets[:, 0] * direction_vec[1] - offsets[:, 1] * direction_vec[0])
    return int(front[np.argmax(distance)])

"""Pareto fronts and hypervolume against known answers and a brute-force check."""

from __future__ import annotations

import numpy as np
import pytest

from exceedance.pareto import TrialRecord, front_mask, hypervolume_2d, pareto_mask, table


def brute_force(points):
    n = len(points)
    return np.array(
        [
            not any(np.all(points[j] <= points[i]) and np.any(points[j] < points[i]) for j in range(n) if j != i)
            for i in range(n)
        ]
    )


@pytest.mark.parametrize("seed", range(5))
def test_mask_matches_brute_force(seed):
    points = np.random.default_rng(seed).integers(0, 6, size=(60, 2)).astype(float)
    np.testing.assert_array_equal(pareto_mask(points), brute_force(points))


def test_staircase_front_and_hypervolume():
    stairs = np.array([[1.0, 4.0], [2.0, 3.0], [3.0, 2.0], [4.0, 1.0]])
    dominated = np.array([[3.0, 3.0], [4.0, 4.0]])
    points = np.vstack([stairs, dominated])
    np.testing.assert_array_equal(pareto_mask(points), [True] * 4 + [False] * 2)
    assert hypervolume_2d(points, np.array([5.0, 5.0])) == pytest.approx(4 + 3 + 2 + 1)


def test_nan_rows_are_never_on_the_front():
    assert list(pareto_mask(np.array([[np.nan, 0.0], [1.0, 1.0]]))) == [False, True]


def test_quality_is_maximized():
    quality = np.array([0.9, 0.8, 0.7])
    exceedance = np.array([0.10, 0.20, 0.05])
    assert list(front_mask(quality, exceedance, "max")) == [True, False, True]
    assert list(front_mask(quality, exceedance, "min")) == [False, False, True]


def test_table_lists_front_first():
    records = [
        TrialRecord(f"r{i}", str(i), {"penalty": "l1"}, q, e)
        for i, (q, e) in enumerate([(0.5, 0.3), (0.9, 0.1), (0.8, 0.05)])
    ]
    rows = table(records, front_mask(np.array([0.5, 0.9, 0.8]), np.array([0.3, 0.1, 0.05]), "max"))
    assert [(r["trial_id"], r["pareto"]) for r in rows] == [("2", True), ("1", True), ("0", False)]


def test_a_penalty_form_without_a_colour_still_shows_in_the_front_figure():
    from exceedance.plots import pareto_front

    quality, exceedance = np.array([0.9, 0.8, 0.7]), np.array([0.2, 0.1, 0.0])
    figure = pareto_front(quality, exceedance, ["l1", "hinge", "hinge"], np.ones(3, bool), "within_tolerance")
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert {"l1", "hinge"} <= set(labels)

"""Pareto fronts and hypervolume against known answers and a brute-force check."""

from __future__ import annotations

import numpy as np
import pytest

from exceedance.pareto import (
    FinishedTrial,
    front_hypervolume,
    front_mask,
    hypervolume_2d,
    pareto_mask,
    pick_knee,
    pick_over_quality,
    pick_under_exceedance,
    table,
)


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


@pytest.mark.parametrize("n", [1, 2, 5, 50])
def test_hypervolume_of_staircases_of_several_sizes(n):
    # Steps (i, n + 1 - i) for i = 1..n against reference (n + 1, n + 1): columns of width 1 and
    # heights 1..n, so the area is n (n + 1) / 2.
    stairs = np.array([[i, n + 1 - i] for i in range(1, n + 1)], dtype=float)
    reference = np.array([n + 1.0, n + 1.0])
    assert hypervolume_2d(stairs, reference) == pytest.approx(n * (n + 1) / 2)
    shuffled = np.random.default_rng(n).permutation(stairs)
    assert hypervolume_2d(np.vstack([shuffled, shuffled]), reference) == pytest.approx(n * (n + 1) / 2), "duplicates"


def test_hypervolume_ignores_points_beyond_the_reference_and_nan():
    reference = np.array([4.0, 4.0])
    inside = np.array([[1.0, 2.0], [2.0, 1.0]])  # area 3 * 2 + 2 * 1 = 8
    beyond = np.array([[0.5, 5.0], [4.0, 0.0], [5.0, 5.0]])  # past or on the reference in some axis
    nan = np.array([[np.nan, 0.0], [0.0, np.nan]])
    assert hypervolume_2d(inside, reference) == pytest.approx(8.0)
    assert hypervolume_2d(np.vstack([inside, beyond, nan]), reference) == pytest.approx(8.0)
    assert hypervolume_2d(np.vstack([beyond, nan]), reference) == 0.0
    assert hypervolume_2d(np.empty((0, 2)), reference) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_matches_a_monte_carlo_estimate(seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, size=(15, 2))
    samples = rng.uniform(0, 1, size=(200_000, 2))
    dominated = np.any(np.all(points[None, :, :] <= samples[:, None, :], axis=2), axis=1)
    assert hypervolume_2d(points, np.array([1.0, 1.0])) == pytest.approx(dominated.mean(), abs=0.005)


def test_front_hypervolume_in_quality_and_exceedance_rate():
    quality, exceedance = np.array([0.5, 0.8, 0.4]), np.array([0.5, 0.75, 0.9])
    assert front_hypervolume(quality, exceedance, "max", 0.0) == pytest.approx(0.5 * 0.5 + 0.3 * 0.25)
    # A minimized quality (mae) against its reference 2.0: (2 - 0.5) * 0.5 + (0.5 - 0.2) * 0.25.
    mae = np.array([0.5, 0.2, 3.0])
    assert front_hypervolume(mae, exceedance, "min", 2.0) == pytest.approx(1.5 * 0.5 + 0.3 * 0.25)


def test_nan_rows_are_never_on_the_front():
    assert list(pareto_mask(np.array([[np.nan, 0.0], [1.0, 1.0]]))) == [False, True]


def test_quality_is_maximized():
    quality = np.array([0.9, 0.8, 0.7])
    exceedance = np.array([0.10, 0.20, 0.05])
    assert list(front_mask(quality, exceedance, "max")) == [True, False, True]
    assert list(front_mask(quality, exceedance, "min")) == [False, False, True]


def test_table_lists_front_first():
    records = [
        FinishedTrial(f"r{i}", str(i), {"form": "l1"}, q, e)
        for i, (q, e) in enumerate([(0.5, 0.3), (0.9, 0.1), (0.8, 0.05)])
    ]
    rows = table(records, front_mask(np.array([0.5, 0.9, 0.8]), np.array([0.3, 0.1, 0.05]), "max"), ("form",))
    assert [(r["trial_id"], r["pareto"]) for r in rows] == [("2", True), ("1", True), ("0", False)]
    assert rows[0]["form"] == "l1"


def test_knee_is_the_front_point_farthest_from_the_line_through_its_ends():
    # Front (exceedance, quality): (0, 0.5), (0.01, 0.8), (0.1, 0.9); scaled to [0, 1] the middle
    # point lies 0.46 from the line through the ends (x + y = 1). Trial 3 is dominated by trial 1.
    quality = np.array([0.5, 0.8, 0.9, 0.75])
    exceedance = np.array([0.0, 0.01, 0.1, 0.2])
    assert pick_knee(quality, exceedance, "max") == 1
    # Two front points: the one nearer the ideal corner after scaling (ties: the first).
    assert pick_knee(np.array([0.5, 0.9, 0.4]), np.array([0.0, 0.5, 0.6]), "max") == 0
    assert pick_knee(np.array([np.nan]), np.array([np.nan]), "max") is None


def test_a_minimized_quality_picks_the_smallest_error():
    mae = np.array([0.3, 0.2, 0.5, 0.25])
    exceedance = np.array([0.01, 0.05, 0.0, 0.01])
    assert list(front_mask(mae, exceedance, "min")) == [False, True, True, True]
    assert pick_under_exceedance(mae, exceedance, "min", 0.02) == 3  # 0.25 beats 0.3 and 0.5
    assert pick_over_quality(mae, exceedance, "min", 0.28) == 3  # mae <= 0.28: least exceedance, then smaller mae
    assert pick_over_quality(mae, exceedance, "min", 0.1) is None
    assert pick_knee(mae, exceedance, "min") == 3  # scaled: (0.17, 0.2), 0.45 from the line x + y = 1
    trials = [FinishedTrial(f"r{i}", str(i), {}, q, e) for i, (q, e) in enumerate(zip(mae, exceedance, strict=True))]
    rows = table(trials, front_mask(mae, exceedance, "min"), (), "min")
    assert [r["trial_id"] for r in rows] == ["2", "3", "1", "0"]  # front by exceedance; ties: smaller mae first


def test_a_penalty_form_without_a_colour_still_shows_in_the_front_figure():
    from exceedance.plots import pareto_front

    quality, exceedance = np.array([0.9, 0.8, 0.7]), np.array([0.2, 0.1, 0.0])
    figure = pareto_front(quality, exceedance, ["l1", "hinge", "hinge"], np.ones(3, bool), "within_tolerance")
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert {"l1", "hinge"} <= set(labels)

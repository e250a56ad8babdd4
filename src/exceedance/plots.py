"""Matplotlib figures from plain arrays.

Figures are made with `Figure()` (Agg canvas), never through `pyplot`: they hold no global
state, so they can be rendered in the recording process and need no closing.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

# Fixed margins instead of `tight_layout`, which draws the whole figure once more to measure it
# (it doubled the cost of a plot).
MARGINS = {"left": 0.12, "right": 0.97, "bottom": 0.17, "top": 0.9}
FORM_COLOURS = {"l1": "tab:blue", "l2": "tab:orange", "sigmoid_count": "tab:green"}


def prediction_histogram(predictions: np.ndarray, limit: float, threshold: float) -> Figure:
    """Histogram of predicted values with the evaluation limit and training threshold marked."""
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots(gridspec_kw=MARGINS)
    # One step artist instead of `hist`'s 60 bar patches: same picture, a third of the drawing.
    counts, edges = np.histogram(np.ravel(predictions), bins=60)
    ax.stairs(counts, edges, fill=True, color="0.6")
    ax.axvline(limit, color="tab:red", label=f"limit {limit:g}")
    ax.axvline(threshold, color="tab:blue", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="prediction", ylabel="count", title="validation predictions")
    ax.legend()
    return fig


def pareto_front(
    quality: np.ndarray,
    exceedance: np.ndarray,
    forms: list[str],
    on_front: np.ndarray,
    quality_name: str,
    picked: int | None = None,
    bounds: np.ndarray | None = None,
) -> Figure:
    """All trials as quality against exceedance rate, coloured by penalty form, front joined;
    with `bounds`, each front trial's upper confidence bound on its rate as an error bar."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots(gridspec_kw=MARGINS)
    forms_arr = np.asarray(forms)
    for i, form in enumerate(sorted(set(forms), key=str)):
        # A form without a colour of its own still shows (it used to vanish from the figure).
        colour = FORM_COLOURS.get(form, f"C{(len(FORM_COLOURS) + i) % 10}")
        sel = forms_arr == form
        ax.scatter(exceedance[sel], quality[sel], c=colour, label=form, alpha=0.7)
    order = np.argsort(exceedance[on_front])
    ax.plot(exceedance[on_front][order], quality[on_front][order], "k-", lw=1, label="Pareto front")
    ax.scatter(exceedance[on_front], quality[on_front], facecolors="none", edgecolors="k", s=90)
    if bounds is not None:
        shown = on_front & np.isfinite(bounds)
        above = np.clip(bounds[shown] - exceedance[shown], 0, None)
        ax.errorbar(
            exceedance[shown],
            quality[shown],
            xerr=[np.zeros_like(above), above],
            fmt="none",
            ecolor="0.3",
            capsize=3,
            lw=0.8,
            label="95 % upper bound on the rate",
        )
    if picked is not None:
        ax.scatter(
            [exceedance[picked]],
            [quality[picked]],
            marker="*",
            c="gold",
            edgecolors="k",
            s=250,
            label="picked",
            zorder=5,
        )
    ax.set(xlabel="exceedance rate (validation, on the limit)", ylabel=quality_name)
    ax.legend(fontsize="small")
    return fig

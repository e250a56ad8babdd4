"""Matplotlib figures from plain arrays.

Figures are made with `Figure()` (Agg canvas), never through `pyplot`: they hold no global
state, so they can be rendered in the recording process and need no closing.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

# Fixed margins instead of `tight_layout`, which draws the whole figure once more to measure it
# (it doubled the cost of a plot).
MARGINS = {"left": 0.12, "right": 0.97, "bottom": 0.17, "top": 0.9}
FORM_COLOURS = {"l1": "tab:blue", "l2": "tab:orange", "sigmoid_count": "tab:green"}


# Up to this many outputs get a histogram line each; more are pooled into one.
OUTPUTS_APART = 4
OUTPUT_COLOURS = ("tab:green", "tab:purple", "tab:brown", "tab:pink")  # not the limit's red or the threshold's blue


def prediction_histogram(predictions: np.ndarray, limit: float, threshold: float) -> Figure:
    """Histogram of validation predictions on a log count axis, so the few above the limit show,
    with the limit and the training threshold marked and the count above the limit written on
    it; a few outputs are drawn apart, more are pooled."""
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots(gridspec_kw=MARGINS)
    values = np.asarray(predictions, dtype=float).reshape(len(predictions), -1)
    apart = 1 < values.shape[1] <= OUTPUTS_APART
    edges = np.histogram_bin_edges(values[np.isfinite(values)] if np.isfinite(values).any() else [0.0], bins=60)
    # One step artist per line instead of `hist`'s bar patches: same picture, a third of the drawing.
    columns = [(values[:, k], f"output {k}", OUTPUT_COLOURS[k]) for k in range(values.shape[1])]
    highest = 1
    for column, label, colour in columns if apart else [(np.ravel(values), None, "0.6")]:
        counts, _ = np.histogram(column, bins=edges)
        ax.stairs(counts, edges, fill=not apart, baseline=0.5, color=colour, label=label)
        highest = max(highest, counts.max(initial=1))
    ax.set_yscale("log")
    ax.set_ylim(0.5, highest * 8)  # headroom for the legend and the count above the limit
    # Plain tick labels ("100", not mathtext "10^2", which took a third of the drawing), no minor ones.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.axvline(limit, color="tab:red", label=f"limit {limit:g}")
    ax.axvline(threshold, color="tab:blue", linestyle="--", label=f"threshold {threshold:.3g}")
    above = int(np.sum(values > limit))
    ax.text(
        0.98,
        0.95,
        f"{above} of {values.size} above the limit ({above / max(values.size, 1):.2%})",
        transform=ax.transAxes,
        ha="right",
        va="top",
        color="tab:red",
        fontsize="small",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
    )
    ax.set(xlabel="prediction", ylabel="count (log)", title="validation predictions")
    ax.legend(fontsize="x-small", loc="upper left", ncol=2)
    return fig


def learning_curves(history: dict[str, list[tuple[int, float]]], keys: tuple[str, ...]) -> Figure:
    """Per-epoch curves, each key's training and validation values on one panel (`history`:
    metric key -> (epoch, value) pairs, as `loss` and `val_loss`)."""
    fig = Figure(figsize=(4 * len(keys), 3))
    axes = np.atleast_1d(fig.subplots(1, len(keys), gridspec_kw={**MARGINS, "left": 0.1, "wspace": 0.3}))
    for ax, key in zip(axes, keys, strict=True):
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            points = history.get(name, [])
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, style, label="validation" if name.startswith("val_") else "training")
        ax.set(xlabel="epoch", title=key)
        ax.legend(fontsize="x-small")
    return fig


def pareto_front(
    quality: np.ndarray,
    exceedance: np.ndarray,
    forms: list[str],
    on_front: np.ndarray,
    quality_name: str,
    picked: int | None = None,
    bounds: np.ndarray | None = None,
    title: str = "",
    labels: list[str] | None = None,
    rule: tuple[str, float] | None = None,
    ax=None,
) -> Figure:
    """All trials as quality against exceedance rate, coloured by penalty form, front joined.

    Args:
        bounds: each front trial's upper confidence bound on its rate, drawn as an error bar.
        title: the figure's title (the experiment, the limit).
        labels: each trial's id, written beside the front's points.
        rule: the pick's rule as a line: `("max_exceedance", E)` or `("min_quality", Q)`.
        ax: draw into these axes (a panel of a larger figure) instead of a new figure.
    """
    fig = Figure(figsize=(6.5, 4.2)) if ax is None else ax.figure
    ax = ax if ax is not None else fig.subplots(gridspec_kw=MARGINS)
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
    if labels is not None:
        for i in np.flatnonzero(on_front):
            ax.annotate(labels[i], (exceedance[i], quality[i]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if rule is not None:
        kind, value = rule
        draw = ax.axvline if kind == "max_exceedance" else ax.axhline
        text = f"rule: exceedance rate <= {value:g}" if kind == "max_exceedance" else f"rule: quality >= {value:g}"
        draw(value, color="tab:purple", linestyle=":", label=text)
    ax.set(xlabel="exceedance rate (validation, on the limit)", ylabel=quality_name, title=title)
    ax.legend(fontsize="x-small")
    return fig

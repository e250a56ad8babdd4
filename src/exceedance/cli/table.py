"""Fixed-width table cells shared by the commands that print a Pareto front."""

from __future__ import annotations


def cell(value) -> str:
    """A number in 4 significant digits (params arrive from MLflow as strings); anything else as is."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)

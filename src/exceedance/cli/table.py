"""The fixed-width Pareto-front table both `exceedance-sweep` and `exceedance-pick` print."""

from __future__ import annotations

from exceedance import names
from exceedance.front_page import cell

# The searched values but the learning rate (the table stays within 120 columns), and the scores.
FRONT_COLUMNS = ("trial_id", *(n for n in names.SEARCHED if n != "learning_rate"), "quality", "exceedance_rate")


def front_line(row) -> str:
    """One row (a dict with `FRONT_COLUMNS`), or the header when `row` is None."""
    return "  ".join(f"{c if row is None else cell(row[c]):>15}" for c in FRONT_COLUMNS)

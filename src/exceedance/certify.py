"""A certified exceedance rate: an upper confidence bound, and the smallest output offset that meets it.

Whether a prediction exceeds the limit depends on the inputs alone, so a model's exceedance
rate on new rows can be bounded from unlabelled rows drawn like them. Rows are exchangeable;
the outputs of one row are not independent of each other, so what is bounded is the mean of
each row's *share* of outputs above the limit, a variable in [0, 1] with one value per row,
with the Hoeffding-Bentkus bound (Bates, Angelopoulos, Lei, Malik, Jordan: "Distribution-free,
risk-controlling prediction sets", JACM 2021, its HB p-value). Its mean equals the pooled rate
(every row has the same number of outputs), but its sample size is the number of rows.

The offset: predictions `f(x) - b` exceed less as `b` grows, so the risk is monotone in `b` and
the smallest `b >= 0` whose upper bound is at most `E` gives `P(rate(b) > E) <= delta` (the
risk-controlling prediction sets' theorem; scanning the offsets in increasing order stops at the
same `b` as the fixed-sequence test from the largest down, since the bound is monotone too).

A non-finite output (NaN, inf, -inf: the model overflowed) is never below the limit: it counts as
above it, at every offset, in the rate, the bound and the choice of offset. Refusing a verdict
instead would hide an alarm behind a usage error; counted, such outputs keep the bound an upper
bound on how often outputs are not known to be below the limit, and the line says how many.

NumPy and SciPy only: the pick uses it without TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import bdtr  # the binomial CDF (lighter to import than scipy.stats)

from exceedance.errors import ConfigError, SearchStopped

METHOD = "hoeffding-bentkus upper bound on the per-row share above the limit (RCPS)"


class CertificateFails(SearchStopped):
    """A command's own check says the certificate does not hold: nothing is registered."""


class CannotCertify(CertificateFails):
    """No offset certifies the rate with these rows (too few of them for the confidence, or too
    many outputs that are not finite numbers)."""


def require_rate(option: str, value: float) -> None:
    """Raise `ConfigError` unless `value` (a rate or a confidence) is in (0, 1)."""
    if not 0 < value < 1:
        raise ConfigError(f"{option}: must be a rate in (0, 1), got {value:g}")


def hb_p_value(rate: float, target: float, rows: int) -> float:
    """The Hoeffding-Bentkus p-value of "the true rate exceeds `target`", given the mean `rate`
    of `rows` exchangeable values in [0, 1].

    Example:
        `hb_p_value(0.0, 0.02, 300)` is 0.0023 (= 0.98 ** 300): no exceedance in 300 rows
        rejects a true rate above 2 % at any confidence up to 99.7 %.
    """
    if target >= 1.0:
        return 1.0
    if rate >= target:
        return 1.0
    a = max(rate, 0.0)
    kl = (a * math.log(a / target) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - target))
    hoeffding = math.exp(-rows * kl)
    bentkus = math.e * float(bdtr(math.ceil(rows * rate - 1e-9), rows, target))
    return min(hoeffding, bentkus, 1.0)


def upper_bound(rate: float, rows: int, delta: float) -> float:
    """The smallest rate the Hoeffding-Bentkus test cannot reject at level `delta`: with
    probability at least `1 - delta`, the true rate is at most this."""
    low, high = rate, 1.0
    for _ in range(60):  # bisection to ~1e-18
        middle = (low + high) / 2
        if hb_p_value(rate, middle, rows) <= delta:
            high = middle
        else:
            low = middle
    return high


@dataclass(frozen=True)
class Certificate:
    """What a certification found: the offset to subtract from the outputs, and the rate bound."""

    max_exceedance: float
    delta: float
    limit: float
    offset: float
    rows: int
    exceedances: int  # outputs above the limit after the offset
    rate: float  # their share of all outputs
    upper_bound: float
    method: str = METHOD
    non_finite: int = 0  # outputs that are NaN or inf, counted among `exceedances`

    def holds(self) -> bool:
        return self.upper_bound <= self.max_exceedance

    def as_tags(self, prefix: str) -> dict[str, str]:
        return {f"{prefix}{name}": str(value) for name, value in asdict(self).items()}


def excesses(outputs: np.ndarray, limit: float) -> np.ndarray:
    """Every output's excess over the limit, rows by outputs; +inf for an output that is not a
    finite number, which no offset brings below the limit."""
    outputs = np.asarray(outputs, dtype=float)
    excess = (outputs.reshape(len(outputs), -1) if outputs.ndim != 2 else outputs) - limit
    return np.where(np.isfinite(outputs.reshape(excess.shape)), excess, np.inf)


def certify(outputs: np.ndarray, limit: float, max_exceedance: float, delta: float) -> Certificate:
    """The smallest offset `b >= 0` such that `outputs - b` exceed `limit` at a rate at most
    `max_exceedance` with probability at least `1 - delta`, on new rows drawn like these.

    Args:
        outputs: the model's outputs on the calibration rows, `(rows, outputs)`, in the limit's units.
        limit: the evaluation limit.
        max_exceedance: the rate to certify, E.
        delta: 1 - confidence.

    Returns:
        The `Certificate` (offset 0 when the model already certifies).

    Raises:
        CannotCertify: no offset does, because there are too few rows for this confidence.
    """
    excess = excesses(outputs, limit)
    rows, size = excess.shape[0], excess.size
    if hb_p_value(0.0, max_exceedance, rows) > delta:
        needed = math.ceil(math.log(delta) / math.log1p(-max_exceedance)) if max_exceedance > 0 else math.inf
        raise CannotCertify(
            f"cannot certify an exceedance rate <= {max_exceedance:g} at confidence {1 - delta:g} with {rows} rows: "
            f"even with no exceedance the bound is {upper_bound(0.0, rows, delta):.4g}; "
            f"it takes at least {needed} rows (or a lower confidence)"
        )
    broken = int(np.sum(np.isinf(excess)))  # above the limit at every offset
    ordered = np.sort(excess[(excess > 0) & np.isfinite(excess)])  # the offsets at which the rate changes
    candidates = np.concatenate([[0.0], ordered])
    above = broken + len(ordered) - np.searchsorted(ordered, candidates, side="right")  # still above, per offset
    for offset, count in zip(candidates, above, strict=True):
        rate = count / size
        if hb_p_value(rate, max_exceedance, rows) <= delta:
            bound = upper_bound(rate, rows, delta)
            return Certificate(
                max_exceedance, delta, limit, float(offset), rows, int(count), rate, bound, METHOD, broken
            )
    raise CannotCertify(  # with no non-finite output, the largest offset leaves none above: checked above
        f"cannot certify an exceedance rate <= {max_exceedance:g} at confidence {1 - delta:g}: {broken} of {size} "
        "outputs on the calibration rows are not finite numbers (nan or inf), which no offset brings below the "
        "limit; the model overflows on those rows: check their features, or train it again"
    )


def check(outputs: np.ndarray, limit: float, max_exceedance: float, delta: float) -> Certificate:
    """Re-check a shipped model on new inputs (no offset is chosen): the observed rate and its
    upper bound; `holds()` says whether the bound is at most `max_exceedance`."""
    excess = excesses(outputs, limit)
    rows, count, broken = excess.shape[0], int(np.sum(excess > 0)), int(np.sum(np.isinf(excess)))
    rate = count / excess.size
    bound = upper_bound(rate, rows, delta)
    return Certificate(max_exceedance, delta, limit, 0.0, rows, count, rate, bound, METHOD, broken)

"""The noise rule every base-vs-boosted table uses (probe reports, model cards, the demo).

A difference counts as beyond noise only when ``|Δ| > NOISE_K * sqrt(std_base² + std_boosted² + se_base² +
se_boosted²)``: ``std`` is the sample std (ddof=1) over seeds, ``se`` a row's ``sampling_se`` (an accuracy's
binomial standard error over its test images; 0 where the row has none). Which way is "better" is owned here
too: ``lower_is_better`` (a row's own ``lower_is_better`` first, else ``LOWER_IS_BETTER``).

Leaf module: it imports nothing from spatialboost.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

NOISE_K = 2.0
# the metrics (every probe's, 2D and 3D) for which a lower value is better; every other metric: higher
LOWER_IS_BETTER = frozenset({"rmse", "absrel", "log10", "log10_rmse", "rte", "rre", "rmse_median"})


def lower_is_better(metric: str, row: dict[str, Any] | None = None) -> bool:
    """Whether a lower ``metric`` is better: the row's own ``lower_is_better`` when it has one (the probe that
    wrote it knew), else ``LOWER_IS_BETTER``."""
    if row is not None and "lower_is_better" in row:
        return bool(row["lower_is_better"])
    return metric in LOWER_IS_BETTER


def noise_threshold(base: dict[str, Any], boosted: dict[str, Any], k: float = NOISE_K) -> float:
    """The |Δ| two rows (``std`` and optional ``sampling_se``) must exceed to differ beyond noise."""
    var = base["std"] ** 2 + boosted["std"] ** 2
    var += base.get("sampling_se", 0.0) ** 2 + boosted.get("sampling_se", 0.0) ** 2
    return k * math.sqrt(var)


def binomial_se(p: float, n: int) -> float:
    """The sampling standard error sqrt(p (1 - p) / n) of a proportion ``p`` measured over ``n`` items (an
    accuracy over its test images): a row's ``sampling_se``."""
    p = min(max(p, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / n)


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(low, median, high): the median of ``values`` and its distribution-free confidence interval, the
    order statistics x_(k) and x_(n+1-k) with k the largest for which P(Binomial(n, 1/2) < k) <= (1 - level) / 2
    (no assumption on the shape of the noise; a repeated timing's ratios are skewed by other processes).
    Below 6 values no k qualifies at 95% and the interval is the whole range."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_ci of no values")
    tail, below, k = (1 - level) / 2, 0.0, 1
    for j in range(n):
        below += math.comb(n, j) / 2**n  # P(Bin(n, 1/2) <= j) = P(Bin < j + 1)
        if below > tail:
            break
        k = j + 1
    return xs[k - 1], statistics.median(xs), xs[n - k]

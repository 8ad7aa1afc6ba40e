"""The noise rule every base-vs-boosted table uses (probe reports, model cards, the demo).

A difference counts as beyond noise only when ``|Δ| > NOISE_K * sqrt(std_base² + std_boosted² + se_base² +
se_boosted²)``: ``std`` is the sample std (ddof=1) over seeds, ``se`` a row's ``sampling_se`` (an accuracy's
binomial standard error over its test images; 0 where the row has none). Where both rows name their per-seed
``values`` and the same ``seeds`` (base and boosted probed with the same probe-head seeds), the seed term is the
paired one: ``std_Δ``, the sample std of the per-seed differences, times ``max(NOISE_K, t(0.975, n-1) / √n)``
(a two-sided paired t-test at 95%, never looser than the per-draw rule): the probe seed's shared effect on both
sides cancels, as it does in a paired comparison. Where both rows also carry ``per_item`` (per seed, the metric
of each test item, the row's value being their mean: a depth probe's per-image RMSE) over the same items, the
test set's own sampling enters too: ``per_item_se``, the standard error of the mean per-item difference
(averaged over the common seeds), times ``NOISE_K``, in quadrature. Seeds cannot see it (every seed scores the
same fixed test scenes), and on a few hundred synthetic scenes it is as large as the seed term. ``verdict``
applies the rule to two rows and ``NOISE_RULE`` is its wording for a table's footnote. Which way is "better" is owned here too:
``lower_is_better`` (a row's own ``lower_is_better`` first, else ``LOWER_IS_BETTER``).

Leaf module: it imports nothing from spatialboost.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

NOISE_K = 2.0
NOISE_RULE = (
    "Δ says better/worse only where |Δ| > 2 × √(std_base² + std_boosted²) (seed std, ddof=1), or, where base "
    "and boosted were probed with the same probe seeds, |Δ| > max(2, t₀.₉₇₅(n-1)/√n) × std_Δ (std_Δ: the "
    "sample std of the n per-seed differences; a paired t-test at 95%, never looser than 2 std); for "
    "accuracies 2 × the binomial s.e. √(p(1-p)/n_test) of each side, and for per-image means (depth) 2 × the "
    "paired s.e. over the test images of the per-image difference, are added in quadrature; else within noise; "
    "one seed gives no noise estimate"
)
# two-sided 97.5% quantiles of Student's t by degrees of freedom (1..10; beyond: the 10-dof value, conservative)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
# the metrics (every probe's, 2D and 3D) for which a lower value is better; every other metric: higher
LOWER_IS_BETTER = frozenset({"rmse", "absrel", "log10", "log10_rmse", "rte", "rre", "rmse_median"})


def lower_is_better(metric: str, row: dict[str, Any] | None = None) -> bool:
    """Whether a lower ``metric`` is better: the row's own ``lower_is_better`` when it has one (the probe that
    wrote it knew), else ``LOWER_IS_BETTER``."""
    if row is not None and "lower_is_better" in row:
        return bool(row["lower_is_better"])
    return metric in LOWER_IS_BETTER


def paired_differences(base: dict[str, Any], boosted: dict[str, Any]) -> list[float] | None:
    """boosted - base per seed, where both rows carry ``values`` for the same ``seeds`` (at least 2); else None."""
    seeds_a, seeds_b = base.get("seeds"), boosted.get("seeds")
    values_a, values_b = base.get("values"), boosted.get("values")
    if not (seeds_a and seeds_b and values_a and values_b) or sorted(seeds_a) != sorted(seeds_b):
        return None
    if len(set(seeds_a)) != len(seeds_a) or len(seeds_a) < 2 or len(values_a) != len(seeds_a):
        return None
    by_seed = dict(zip(seeds_b, values_b, strict=True))
    return [by_seed[s] - v for s, v in zip(seeds_a, values_a, strict=True)]


def paired_k(n: int, k: float = NOISE_K) -> float:
    """The multiple of ``std_Δ`` a mean of ``n`` paired differences must exceed: a two-sided paired t-test at
    95% (t(0.975, n-1) / √n), never looser than ``k``."""
    return max(k, _T975[min(n - 1, len(_T975)) - 1] / math.sqrt(n))


def per_item_se(base: list[list[float]], boosted: list[list[float]]) -> float:
    """The standard error of the mean over test items of ``boosted - base``, each item's difference averaged
    over the seeds (``base[s][j]``: seed ``s``'s metric on item ``j``; the same items, in the same order, on both
    sides); items that are NaN on any side are left out. Raises on mismatched shapes or under 2 items."""
    shape_a, shape_b = [len(v) for v in base], [len(v) for v in boosted]
    if not shape_a or shape_a != shape_b or len(set(shape_a)) != 1:
        raise ValueError(f"per-item values must be one equal-length list per seed on both sides, got items per "
                         f"seed {shape_a} (base) and {shape_b} (boosted)")  # fmt: skip
    diffs = []
    for items_a, items_b in zip(zip(*base, strict=True), zip(*boosted, strict=True), strict=True):  # one item
        d = [y - x for x, y in zip(items_a, items_b, strict=True)]
        if not any(map(math.isnan, d)):
            diffs.append(statistics.fmean(d))
    if len(diffs) < 2:
        raise ValueError(f"per_item_se needs at least 2 items that are not NaN, got {len(diffs)}")
    return statistics.stdev(diffs) / math.sqrt(len(diffs))


def paired_item_se(base: dict[str, Any], boosted: dict[str, Any]) -> float:
    """``per_item_se`` of two rows that carry ``per_item`` (paired by ``seeds``: their common seeds, in ``base``'s
    order; by position where a row names none); 0.0 where either lacks them."""
    if not (base.get("per_item") and boosted.get("per_item")):
        return 0.0
    seeds_a = base.get("seeds") or range(len(base["per_item"]))  # no seeds named: paired by position
    seeds_b = boosted.get("seeds") or range(len(boosted["per_item"]))
    by_seed = dict(zip(seeds_b, boosted["per_item"], strict=True))
    common = [(items, by_seed[s]) for s, items in zip(seeds_a, base["per_item"], strict=True) if s in by_seed]
    if not common:
        return 0.0
    return per_item_se([a for a, _ in common], [b for _, b in common])


def noise_threshold(base: dict[str, Any], boosted: dict[str, Any], k: float = NOISE_K) -> float:
    """The |Δ| two rows (``std``, optional ``sampling_se`` and ``per_item``; paired when both carry per-seed
    ``values`` for the same ``seeds``) must exceed to differ beyond noise."""
    diffs = paired_differences(base, boosted)
    if diffs is None:
        seed_term = k**2 * (base["std"] ** 2 + boosted["std"] ** 2)
    else:
        seed_term = (paired_k(len(diffs), k) * statistics.stdev(diffs)) ** 2
    sampling = base.get("sampling_se", 0.0) ** 2 + boosted.get("sampling_se", 0.0) ** 2
    return math.sqrt(seed_term + k**2 * (sampling + paired_item_se(base, boosted) ** 2))


def verdict(base: dict[str, Any], boosted: dict[str, Any], metric: str | None = None) -> str:
    """Says "better", "worse" or "within noise": ``boosted`` against ``base`` (rows with ``mean``, ``std`` and an
    optional ``sampling_se``) by the noise rule, in ``metric``'s direction (default: the rows' ``metric``).
    How many seeds make a std worth reading is the caller's to say."""
    delta = boosted["mean"] - base["mean"]
    if abs(delta) <= noise_threshold(base, boosted):
        return "within noise"
    return direction(delta, base.get("metric", "") if metric is None else metric, base)


def direction(delta: float, metric: str, row: dict[str, Any] | None = None) -> str:
    """Says "better" or "worse": a change ``delta`` of ``metric`` (its direction: ``lower_is_better``)."""
    return "better" if (delta < 0 if lower_is_better(metric, row) else delta > 0) else "worse"


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

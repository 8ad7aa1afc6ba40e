"""The noise rules: the base-vs-boosted threshold, an accuracy's s.e., a repeated timing's median interval."""

from __future__ import annotations

import math
import random

import pytest

from spatialboost.noise import binomial_se, median_ci, noise_threshold


def test_noise_threshold_adds_seed_std_and_sampling_se_in_quadrature():
    base, boosted = {"std": 0.3}, {"std": 0.4, "sampling_se": 1.2}
    assert noise_threshold(base, boosted) == pytest.approx(2 * math.sqrt(0.09 + 0.16 + 1.44))
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(1.3, 10) == 0.0  # clipped into [0, 1]


def test_median_ci_is_the_textbook_order_statistics():
    # n = 21: the 95% interval of the median is the 6th to the 16th value (tables of the sign test)
    assert median_ci([float(v) for v in range(21, 0, -1)]) == (6.0, 11.0, 16.0)
    assert median_ci([1.0, 2.0, 3.0, 4.0]) == (1.0, 2.5, 4.0)  # too few values: the whole range
    with pytest.raises(ValueError):
        median_ci([])


def test_median_ci_covers_the_true_median_of_a_skewed_distribution():
    """Timing ratios are skewed (another process only ever slows a run down): coverage must still hold."""
    rng = random.Random(0)
    trials, n = 2000, 31
    true_median = math.log(2)  # of Exp(1)
    hits = sum(
        lo <= true_median <= hi
        for lo, _, hi in (median_ci([rng.expovariate(1) for _ in range(n)]) for _ in range(trials))
    )
    assert 0.94 <= hits / trials <= 0.995

    def mean_width(size: int) -> float:
        widths = [
            hi - lo for lo, _, hi in (median_ci([rng.expovariate(1) for _ in range(size)]) for _ in range(50))
        ]
        return sum(widths) / len(widths)

    assert mean_width(301) < 0.5 * mean_width(31), "the interval must narrow like 1/sqrt(n) with repeats"

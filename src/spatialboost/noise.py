"""The noise rule every base-vs-boosted table uses (probe reports, model cards, the demo).

A difference counts as beyond noise only when ``|Δ| > NOISE_K * sqrt(std_base² + std_boosted² + se_base² +
se_boosted²)``: ``std`` is the sample std (ddof=1) over seeds, ``se`` a row's ``sampling_se`` (an accuracy's
binomial standard error over its test images; 0 where the row has none).

Leaf module: it imports nothing from spatialboost.
"""

from __future__ import annotations

import math
from typing import Any

NOISE_K = 2.0


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

"""A result column over training seeds: mean +- std of one metric, the values and the seed of each value.

Both the 2D probes' columns (``report``) and the benches' columns (``benches``) are built with ``seed_stats``,
and ``on_seeds`` restricts one to the seeds an arm was trained with, so a base probed on more seeds is compared
with an arm, paired, over the arm's seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def seed_stats(values: list[float], seeds: list[int] | None = None) -> dict[str, Any]:
    """mean, std (ddof=1), n and the values; with ``seeds``, the seed of each value (``noise`` pairs arms probed
    with the same probe seeds)."""
    v = np.asarray(values, dtype=np.float64)
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(np.mean(v)), "std": std, "n": len(v), "values": v.tolist(),
            **({"seeds": list(seeds)} if seeds is not None else {})}  # fmt: skip


def on_seeds(col: dict[str, Any], seeds: list[int] | None) -> dict[str, Any]:
    """``col`` restricted to ``seeds`` (mean, std, values and per-scene values of those seeds only), so a base
    probed with more seeds than an arm is compared, paired, over the arm's; ``col`` as it is where it names no
    seeds or lacks one of ``seeds``."""
    have = col.get("seeds")
    if not seeds or not have or not set(seeds) <= set(have) or sorted(seeds) == sorted(have):
        return dict(col)
    idx = [have.index(s) for s in seeds]
    out = seed_stats([col["values"][i] for i in idx], seeds)
    if col.get("per_item"):
        out["per_item"] = [col["per_item"][i] for i in idx]
    return out

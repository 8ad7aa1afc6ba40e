"""Rung 1 for the numbers: the depth-value bound finds information where it is and none where it is not."""

from __future__ import annotations

import torch

from spatialboost.studies.replicate.diagnostics import depth_bound, depth_facts


def _items(n: int, seed: int, informative: bool) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, 2, generator=gen)
    depth = 1.0 + 3.0 * coords[:, 1] + 0.8 * torch.randn(n, generator=gen)  # lower in the image: farther
    noise = torch.randn(n, 8, generator=gen)
    feats = noise + (depth[:, None] - 1.0 - 3.0 * coords[:, 1:2]) * informative
    other = feats[torch.randperm(n, generator=gen)]
    return [{"coords": c, "right": f, "other": o, "depth": float(d)}
            for c, f, o, d in zip(coords, feats, other, depth, strict=True)]  # fmt: skip


def test_depth_bound_sees_information_in_features_and_none_in_noise():
    told = depth_bound(_items(1500, 0, True), _items(400, 1, True), steps=600)
    blank = depth_bound(_items(1500, 0, False), _items(400, 1, False), steps=600)
    # features that carry the residual depth save nats over the coordinates; another scene's feature does not
    assert told["nats_per_value"] > 0.3 and told["rmse_right"] < 0.8 * told["rmse_text_only"]
    assert told["nll_other"] > told["nll_text_only"]
    # pure-noise features: no saving beyond noise (the probe stops early rather than overfit)
    assert abs(blank["nats_per_value"]) < 2 * blank["nats_per_value_stderr"] + 0.05
    assert told["tokens_per_value"] == sum(len(f"{t['depth']:.2f}") for t in _items(400, 1, True)) / 400


def test_depth_facts_walks_the_rationale():
    leaf = {"fn": "depth_at", "args": {"x": 1, "y": 2}, "value": 2.5, "support": []}
    fact = {"fn": "closer_point", "value": 0.3, "support": [leaf, {**leaf, "value": 3.0}]}
    assert [d["value"] for d in depth_facts(fact)] == [2.5, 3.0]
    assert depth_facts({"fn": "depth_at", "value": [1, 2], "support": []}) == []  # not a depth value

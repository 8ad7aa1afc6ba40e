"""Probes recover known linear solutions; kNN votes as in DINO; training is deterministic given the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spatialboost.eval.features import FeatureSet
from spatialboost.eval.probes import (
    PROBES,
    ClsLinearConfig,
    DepthProbeConfig,
    KnnConfig,
    SegProbeConfig,
    cls_knn_probe,
    cls_linear_probe,
    depth_probe,
    knn_predict,
    seg_probe,
)

GRID, SIZE, DIM = (4, 4), 16, 6


def _dense_set(n: int, seed: int, w: np.ndarray, b: float) -> FeatureSet:
    """Random patch features; log-depth = bilinear upsampling of (patch @ w + b); seg = [that map > b]."""
    rng = np.random.default_rng(seed)
    patch = rng.normal(size=(n, GRID[0] * GRID[1], DIM)).astype(np.float32) * 2 + 1
    cls = rng.normal(size=(n, DIM)).astype(np.float32)
    z = torch.from_numpy(patch @ w + b).reshape(n, 1, *GRID)
    logd = F.interpolate(z, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0].numpy()
    seg = (logd > b).astype(np.uint8)  # the sign of the upsampled linear map: exactly linearly separable
    return FeatureSet(cls=cls, patch=patch, grid=GRID, image_size=SIZE, depth=np.exp(logd).astype(np.float32),
                      seg=seg, label=None)  # fmt: skip


def test_depth_log_regression_recovers_linear_solution():
    w = np.array([0.3, -0.2, 0.1, 0.0, 0.25, -0.15], np.float32)
    train, test = _dense_set(48, 0, w, 0.5), _dense_set(8, 1, w, 0.5)
    cfg = DepthProbeConfig(mode="log-regression", use_cls=False, epochs=60, lr=0.05, batch_size=8)
    res = depth_probe(train, test, cfg, seed=0)
    eff_w, eff_b = res.head.head.effective_weights()  # acting on raw features
    np.testing.assert_allclose(eff_w[0].numpy(), w, atol=0.02)
    assert eff_b.item() == pytest.approx(0.5, abs=0.05)
    assert res.metrics["absrel"] < 0.02 and res.metrics["delta1"] == 1.0
    assert res.protocol["mode"] == "log-regression" and res.protocol["seed"] == 0
    # one value per test image, each the image's own metric; the reported metric is their mean
    assert {k: len(v) for k, v in res.per_image.items()} == {k: 8 for k in res.metrics}
    assert np.mean(res.per_image["rmse"]) == pytest.approx(res.metrics["rmse"])
    assert len(set(res.per_image["rmse"])) == 8


def test_seg_probe_learns_linear_boundary_and_is_deterministic():
    w = np.array([1.0, -1.0, 0.5, 0.0, 0.0, 0.3], np.float32)
    train, test = _dense_set(32, 2, w, 0.0), _dense_set(8, 3, w, 0.0)
    cfg = SegProbeConfig(epochs=20, lr=0.05)
    a, b = seg_probe(train, test, cfg, seed=7), seg_probe(train, test, cfg, seed=7)
    assert a.metrics == b.metrics
    # labels are constant per patch but the logits are bilinearly upsampled: boundary pixels may flip
    assert a.metrics["pixel_acc"] > 0.9 and a.metrics["miou"] > 0.8


def _cls_set(n: int, seed: int, w: np.ndarray) -> FeatureSet:
    rng = np.random.default_rng(seed)
    cls = rng.normal(size=(n, w.shape[1])).astype(np.float32)
    label = (cls @ w.T).argmax(1).astype(np.int64)
    patch = np.zeros((n, 1, w.shape[1]), np.float32)
    return FeatureSet(cls=cls, patch=patch, grid=(1, 1), image_size=8, depth=None, seg=None, label=label)


def test_cls_linear_recovers_linear_classes():
    w = np.random.default_rng(5).normal(size=(3, 8)).astype(np.float32)
    train, test = _cls_set(600, 0, w), _cls_set(200, 1, w)
    res = cls_linear_probe(train, test, ClsLinearConfig(epochs=200, use_avgpool=False), seed=0)
    assert res.metrics["top1"] > 0.9
    # the decision directions (class differences) align with the true ones
    eff_w, _ = res.head.effective_weights()
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        d_hat, d = (eff_w[i] - eff_w[j]).numpy(), w[i] - w[j]
        assert d_hat @ d / np.linalg.norm(d_hat) / np.linalg.norm(d) > 0.95


def test_knn_weighted_votes_by_hand():
    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    train_y = torch.tensor([0, 1, 1])
    scores = knn_predict(train_x, train_y, torch.tensor([[1.0, 0.0]]), num_classes=2, k=2, temperature=0.07)
    sim1 = 0.9 / np.hypot(0.9, 0.1)
    assert scores[0, 0].item() == pytest.approx(np.exp(1 / 0.07), rel=1e-5)
    assert scores[0, 1].item() == pytest.approx(np.exp(sim1 / 0.07), rel=1e-5)
    w = np.random.default_rng(6).normal(size=(2, 4)).astype(np.float32)
    res = cls_knn_probe(_cls_set(300, 0, w), _cls_set(100, 1, w), KnnConfig(), seed=0)
    assert res.metrics["top1"] > 0.85 and res.protocol["k"] == 20


def test_probe_registry_lists_known():
    assert PROBES.names() == ["cls-knn", "cls-linear", "depth", "seg"]
    with pytest.raises(KeyError, match="known: cls-knn"):
        PROBES.get("nope")

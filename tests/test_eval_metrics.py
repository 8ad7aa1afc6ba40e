"""Probe metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialboost.eval.metrics import depth_metrics, segmentation_metrics, top1_accuracy


def test_depth_metrics_hand_computed():
    pred = np.array([[1.0, 2.0], [4.0, 9.0]])
    target = np.array([[1.0, 1.0], [5.0, 0.0]])  # last pixel invalid (0)
    m = depth_metrics(pred, target)
    # errors on valid pixels: 0, 1, -1
    assert m["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert m["absrel"] == pytest.approx((0 + 1 + 0.2) / 3)
    logs = [0.0, math.log10(2), math.log10(4 / 5)]
    assert m["log10"] == pytest.approx(sum(abs(x) for x in logs) / 3)
    assert m["log10_rmse"] == pytest.approx(math.sqrt(sum(x * x for x in logs) / 3))
    # ratios: 1, 2, 1.25 -> delta1 counts only the exact one (1.25 is not < 1.25)
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == pytest.approx(2 / 3)
    assert m["delta3"] == pytest.approx(2 / 3)  # 2 > 1.25**3 = 1.953


def test_depth_metrics_valid_mask_and_perfect():
    target = np.array([1.0, 2.0, 3.0])
    m = depth_metrics(target.copy(), target)
    assert m["rmse"] == 0 and m["absrel"] == 0 and m["delta1"] == 1
    masked = depth_metrics(np.array([1.0, 100.0, 3.0]), target, valid=np.array([True, False, True]))
    assert masked["rmse"] == 0
    assert all(math.isnan(v) for v in depth_metrics(target, np.zeros(3)).values())


def test_segmentation_metrics_hand_computed():
    target = np.array([0, 0, 1, 1, 255, 2])
    pred = np.array([0, 1, 1, 1, 0, 0])
    m = segmentation_metrics(pred, target, num_classes=4)  # class 3 absent from both -> excluded
    # class0: tp1 union 3 (gt 2 + pred 2 - 1); class1: tp2 union 3; class2: tp0 union1
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["pixel_acc"] == pytest.approx(3 / 5)


def test_segmentation_ignore_only_and_out_of_range():
    assert math.isnan(segmentation_metrics(np.zeros(3), np.full(3, 255), 2)["miou"])
    with pytest.raises(ValueError):
        segmentation_metrics(np.zeros(2), np.array([0, 5]), 2)


def test_top1_accuracy_labels_and_scores():
    assert top1_accuracy(np.array([1, 2, 3]), np.array([1, 0, 3]))["top1"] == pytest.approx(2 / 3)
    scores = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert top1_accuracy(scores, np.array([1, 1]))["top1"] == 0.5

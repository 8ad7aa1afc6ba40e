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


def _mmseg_intersect_and_union(pred, label, num_classes, ignore_index=255):
    """mmsegmentation's ``intersect_and_union`` (mmseg/evaluation/metrics/iou_metric.py), re-stated with numpy:
    ignored labels are masked out; histograms over [0, C - 1] drop predictions outside that range."""
    pred, label = np.asarray(pred).reshape(-1), np.asarray(label).reshape(-1)
    mask = label != ignore_index
    pred, label = pred[mask], label[mask]
    intersect = pred[pred == label]

    def hist(x):
        x = x[(x >= 0) & (x <= num_classes - 1)]
        return np.bincount(x.astype(np.int64), minlength=num_classes)[:num_classes]

    a_i, a_p, a_l = hist(intersect), hist(pred), hist(label)
    return a_i, a_p + a_l - a_i, a_l


def _mmseg_metrics(pred, label, num_classes, ignore_index=255):
    a_i, a_u, a_l = _mmseg_intersect_and_union(pred, label, num_classes, ignore_index)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = a_i / a_u
    return {"miou": float(np.nanmean(iou)), "pixel_acc": float(a_i.sum() / a_l.sum())}


def test_out_of_range_predictions_are_misses_as_in_mmseg():
    """The issue's case: labels [0,1,2,2], predictions [0,1,3,2], C=3 -> mIoU 0.833 (class 2: 1 of 2), not 1.0."""
    m = segmentation_metrics(np.array([0, 1, 3, 2]), np.array([0, 1, 2, 2]), num_classes=3)
    assert m["miou"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["pixel_acc"] == pytest.approx(3 / 4)
    neg = segmentation_metrics(np.array([-1, 1, 2, 2]), np.array([0, 1, 2, 2]), num_classes=3)
    assert neg["miou"] == pytest.approx((0 + 1 + 1) / 3)  # a -1 is not a hit for class 0


def test_segmentation_metrics_equal_mmseg_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = int(rng.integers(2, 6))
        label = rng.integers(0, c, size=(7, 9))
        label[rng.random(label.shape) < 0.2] = 255  # ignored pixels
        pred = rng.integers(-2, c + 2, size=label.shape)  # some out of range, some == 255 below
        pred[rng.random(pred.shape) < 0.05] = 255
        ours = segmentation_metrics(pred, label, num_classes=c)
        ref = _mmseg_metrics(pred, label, c)
        assert ours["miou"] == pytest.approx(ref["miou"]) and ours["pixel_acc"] == pytest.approx(
            ref["pixel_acc"]
        )

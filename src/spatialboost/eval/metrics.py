"""Probe metrics: pure functions ``(pred, target, valid/ignore) -> dict[str, float]``.

Conventions:

- Depth is metric z-depth in metres; a target of ``0`` (or a ``False`` in ``valid``) marks a pixel that
  is not scored. Predictions are clamped to ``min_depth`` before logs are taken. ``log10`` is the mean
  absolute log10 error (the NYUv2 table's "log10"); ``log10_rmse`` is its root-mean-square version.
- Segmentation is class ids; pixels whose target equals ``ignore_index`` are not scored. mIoU averages
  over the classes present in the prediction or the target (a class absent from both has no IoU). A
  prediction outside ``[0, C)`` is a miss for its pixel's class and counts for no class, as in
  mmsegmentation's ``intersect_and_union`` (never clipped into class 0 or C - 1).
- Classification is top-1 accuracy over integer labels.
"""

from __future__ import annotations

import numpy as np

from spatialboost.constants import SEG_IGNORE_INDEX

DEPTH_KEYS = ("rmse", "absrel", "log10", "log10_rmse", "delta1", "delta2", "delta3")


def depth_metrics(
    pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None, min_depth: float = 1e-3
) -> dict[str, float]:
    """RMSE (m), AbsRel, log10 errors and delta<1.25^k accuracies over valid pixels only."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"depth pred {pred.shape} and target {target.shape} differ in shape")
    mask = target > 0 if valid is None else np.asarray(valid, dtype=bool) & (target > 0)
    if not mask.any():
        return {k: float("nan") for k in DEPTH_KEYS}
    p = np.maximum(pred[mask], min_depth)
    t = target[mask]
    ratio = np.maximum(p / t, t / p)
    log_err = np.log10(p) - np.log10(t)
    return {
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
        "absrel": float(np.mean(np.abs(p - t) / t)),
        "log10": float(np.mean(np.abs(log_err))),
        "log10_rmse": float(np.sqrt(np.mean(log_err**2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = SEG_IGNORE_INDEX
) -> np.ndarray:
    """(C, C + 1) int64 counts, rows = target class, columns = predicted class; ignored pixels dropped.

    Column C counts predictions outside ``[0, C)`` (any value, ``ignore_index`` included): misses of
    their row's class that belong to no predicted class.
    """
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target class ids must be in [0, {num_classes}) or {ignore_index}")
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    cols = num_classes + 1
    return np.bincount(target * cols + pred, minlength=num_classes * cols).reshape(num_classes, cols)


def segmentation_metrics_from_confusion(conf: np.ndarray) -> dict[str, float]:
    """mIoU over classes present in pred or target, and pixel accuracy, from a (C, C + 1) confusion matrix."""
    conf = conf.astype(np.float64)
    num_classes = conf.shape[0]
    tp = np.diag(conf[:, :num_classes])
    union = conf[:, :num_classes].sum(0) + conf.sum(1) - tp
    present = union > 0
    total = conf.sum()
    return {
        "miou": float(np.mean(tp[present] / union[present])) if present.any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
    }


def segmentation_metrics(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = SEG_IGNORE_INDEX
) -> dict[str, float]:
    """mIoU and pixel accuracy of class-id maps (any shape), ignoring ``ignore_index`` targets."""
    return segmentation_metrics_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def top1_accuracy(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy; ``pred`` is (N,) labels or (N, C) scores."""
    pred = np.asarray(pred)
    target = np.asarray(target).reshape(-1)
    labels = pred.argmax(-1) if pred.ndim == 2 else pred.reshape(-1)
    if labels.shape != target.shape:
        raise ValueError(f"{labels.shape[0]} predictions for {target.shape[0]} targets")
    return {"top1": float(np.mean(labels == target)) if target.size else float("nan")}

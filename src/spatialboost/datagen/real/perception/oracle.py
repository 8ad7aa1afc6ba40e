"""Oracle backends: they read ground truth (a depth map, K, an instance map with labels) by image key.

Used by tests and by the label-noise study; ``options`` can degrade the truth in controlled ways:
``depth_noise`` (relative per-pixel Gaussian sigma), ``depth_scale`` (a global scale error, 1 = none),
``erode_px`` (mask erosion, pixels), ``min_pixels`` (objects smaller than this are not detected), ``seed``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from spatialboost.datagen.real.perception.base import (
    DEPTH_BACKENDS,
    DETECTORS,
    SEGMENTERS,
    BackendConfig,
    DepthResult,
    Detection,
    box_iou,
)
from spatialboost.errors import UserError


@dataclass
class GroundTruth:
    """What an oracle knows about one image."""

    depth: np.ndarray | None = None  # (H, W) float32 metres, 0 = invalid
    K: np.ndarray | None = None  # (3, 3)
    instance: np.ndarray | None = None  # (H, W) int32, 0 = none
    labels: dict[int, str] = field(default_factory=dict)  # instance id -> class name


TruthLookup = Callable[[str], GroundTruth]


def _rng(cfg: BackendConfig, key: str) -> np.random.Generator:
    return np.random.default_rng([int(cfg.options.get("seed", 0)), zlib.crc32(key.encode())])


def _require(truth: TruthLookup | None, kind: str) -> TruthLookup:
    if truth is None:
        raise UserError(f"the oracle {kind} needs ground truth (a truth lookup); use it with RGB-D data")
    return truth


def instance_boxes(instance: np.ndarray, min_pixels: int = 1) -> dict[int, np.ndarray]:
    """Per instance id >= 1 with at least ``min_pixels`` pixels: its pixel box xyxy (max edge exclusive)."""
    boxes = {}
    for k, sl in enumerate(ndimage.find_objects(instance.astype(np.int64)), start=1):
        if sl is None or (instance[sl] == k).sum() < min_pixels:
            continue
        boxes[k] = np.array([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop], np.float64)
    return boxes


@DEPTH_BACKENDS.register("oracle")
class OracleDepth:
    def __init__(self, cfg: BackendConfig, truth: TruthLookup | None = None) -> None:
        self.cfg, self.truth = cfg, _require(truth, "depth")

    def predict(self, images: Sequence[np.ndarray], keys: Sequence[str]) -> list[DepthResult]:
        out = []
        for key in keys:
            gt = self.truth(key)
            if gt.depth is None or gt.K is None:
                raise UserError(
                    f"{key}: --depth oracle needs this frame's ground-truth depth/ and intrinsics (RGB-D input)"
                )
            depth = gt.depth.astype(np.float32) * float(self.cfg.options.get("depth_scale", 1.0))
            sigma = float(self.cfg.options.get("depth_noise", 0.0))
            if sigma > 0:
                noise = 1.0 + sigma * _rng(self.cfg, key).standard_normal(depth.shape)
                depth = np.where(depth > 0, depth * np.clip(noise, 0.1, None), 0.0).astype(np.float32)
            out.append(DepthResult(depth, np.asarray(gt.K, np.float64)))
        return out


@DETECTORS.register("oracle")
class OracleDetector:
    def __init__(self, cfg: BackendConfig, truth: TruthLookup | None = None) -> None:
        self.cfg, self.truth = cfg, _require(truth, "detector")

    def detect(
        self, images: Sequence[np.ndarray], vocabulary: Sequence[str], keys: Sequence[str]
    ) -> list[list[Detection]]:
        out = []
        for key in keys:
            gt = self.truth(key)
            if gt.instance is None:
                out.append([])
                continue
            boxes = instance_boxes(gt.instance, int(self.cfg.options.get("min_pixels", 20)))
            out.append([Detection(box, gt.labels.get(k, "object"), 1.0) for k, box in sorted(boxes.items())])
        return out


@SEGMENTERS.register("oracle")
class OracleSegmenter:
    """For each box, the ground-truth instance whose pixel box overlaps it most (eroded by ``erode_px``)."""

    def __init__(self, cfg: BackendConfig, truth: TruthLookup | None = None) -> None:
        self.cfg, self.truth = cfg, _require(truth, "segmenter")

    def segment(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], keys: Sequence[str]
    ) -> list[np.ndarray]:
        return [
            self._one(img, np.asarray(b).reshape(-1, 4), key)
            for img, b, key in zip(images, boxes, keys, strict=True)
        ]

    def _one(self, image: np.ndarray, boxes: np.ndarray, key: str) -> np.ndarray:
        h, w = image.shape[:2]
        masks = np.zeros((len(boxes), h, w), bool)
        instance = self.truth(key).instance
        if instance is None or len(boxes) == 0:
            return masks
        gt_boxes = instance_boxes(instance)
        if not gt_boxes:
            return masks
        ids = np.array(sorted(gt_boxes))
        iou = box_iou(boxes, np.stack([gt_boxes[k] for k in ids]))  # (N, M)
        erode = int(self.cfg.options.get("erode_px", 0))
        for i in range(len(boxes)):
            if iou[i].max() <= 0:
                continue
            m = instance == ids[iou[i].argmax()]
            masks[i] = ndimage.binary_erosion(m, iterations=erode) if erode > 0 else m
        return masks

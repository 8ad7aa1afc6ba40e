"""How depth predictions are scored: at the probe resolution, or the way published NYUv2 numbers are.

``probe`` (any dataset): predictions at the probe resolution S x S against targets resized (nearest) and
centre-cropped to S x S, every valid pixel scored (``eval.probes.depth_probe``).

``nyu-eigen`` (``nyu:`` data, where it is the default): the protocol of BTS, Monodepth2 and the depth toolbox
DINOv2 builds on, so the numbers sit beside a paper's. Each test image is seen whole: resized so its shorter
side is S (by the encoder's own transform, as in the probe's training features) and covered by overlapping
S x S crops along its longer side (sliding-window inference, overlaps averaged; the encoder sees the input
size it was probed at). The stitched prediction is upsampled bilinearly
to the ground truth's own resolution (480 x 640), clipped to [1e-3, 10] m, and scored on the pixels inside the
Eigen crop (rows 45:471, cols 41:601) whose ground truth lies in (1e-3, 10) m; per image, then averaged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from spatialboost.errors import UserError
from spatialboost.eval.datasets import parse_data_spec
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample
from spatialboost.eval.features import FeatureSet
from spatialboost.eval.metrics import depth_metrics
from spatialboost.eval.probes import (
    ProbeResult,
    depth_protocol_fields,
    fit_depth_head,
    image_means,
    predict_depth,
)
from spatialboost.image_transform import ImageTransform

PROTOCOLS = ("auto", "probe", "nyu-eigen")
NYU_SHAPE = (480, 640)  # (H, W) of NYUv2 ground truth
EIGEN_CROP = (45, 471, 41, 601)  # rows [45, 471), cols [41, 601) of 480 x 640
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0  # metres

DESCRIPTIONS = {
    "probe": "probe (predictions and targets at the probe resolution; targets resized nearest, centre-cropped)",
    "nyu-eigen": "nyu-eigen (the whole image by sliding S x S crops, the prediction upsampled bilinearly to the "
    "480x640 ground truth, Eigen crop rows 45:471 cols 41:601, depth clipped to and valid in [0.001, 10] m, "
    "per-image mean)",
}


def resolve_protocol(requested: str, data_spec: str) -> str:
    """``auto`` -> ``nyu-eigen`` on ``nyu:`` data, ``probe`` elsewhere; ``nyu-eigen`` elsewhere is refused."""
    if requested not in PROTOCOLS:
        raise UserError(f"unknown depth protocol {requested!r}; known: {', '.join(PROTOCOLS)}")
    is_nyu = parse_data_spec(data_spec)[0] == "nyu"
    if requested == "auto":
        return "nyu-eigen" if is_nyu else "probe"
    if requested == "nyu-eigen" and not is_nyu:
        raise UserError(f"probes.depth.protocol=nyu-eigen needs nyu: data, got --data {data_spec}")
    return requested


# --- sliding crops ----------------------------------------------------------------------------------------


def crop_offsets(length: int, size: int) -> list[int]:
    """Starts of the fewest evenly spaced ``size`` windows covering ``[0, length)`` (first 0, last length - size)."""
    k = max(1, math.ceil(length / size))
    if k == 1:
        return [0]
    return [round(i * (length - size) / (k - 1)) for i in range(k)]


class SlidingCrops(ProbeDataset):
    """The S x S crops covering each whole image of a dataset (shorter side resized to S), image by image.

    The resize is the encoder's (``transform``: its interpolation for the image, nearest for depth), so a crop
    holds exactly the pixels the encoder would see there; crops come as (S, S, 3) float32 in [0, 1] (no
    rounding back to uint8). Every image must have the first one's size (NYUv2: 480 x 640); crop ``j`` is crop
    ``j % k`` of image ``j // k``, at ``offsets[j % k]`` along the longer side (``axis``) of the resized image
    ``resized``.
    """

    def __init__(self, base: ProbeDataset, transform: ImageTransform) -> None:
        self.base, self.transform, self.size = base, transform, transform.side
        self.name, self.split, self.tasks = base.name, base.split, base.tasks
        self.seg_classes, self.cls_classes = base.seg_classes, base.cls_classes
        self.shape = base[0].image.shape[:2] if len(base) else (self.size, self.size)
        self.resized = transform.geometry(*self.shape).resized
        self.axis = 0 if self.resized[0] > self.resized[1] else 1
        self.offsets = crop_offsets(self.resized[self.axis], self.size)

    def __len__(self) -> int:
        return len(self.base) * len(self.offsets)

    def _load(self, index: int) -> ProbeSample:
        i, k = divmod(index, len(self.offsets))
        s = self.base[i]
        if s.image.shape[:2] != self.shape:
            raise UserError(
                f"{self.base.identity}: image {i} is {s.image.shape[:2]}, the first is {self.shape}"
            )
        image = self.crop(self.transform.resize(s.image).permute(1, 2, 0).numpy(), k)  # (S, S, 3) in [0, 1]
        depth = None
        if s.depth is not None:
            depth = self.crop(self.transform.resize_target(s.depth), k)
        return ProbeSample(image=np.ascontiguousarray(image), depth=depth)

    def crop(self, arr: np.ndarray, k: int) -> np.ndarray:
        o = self.offsets[k]
        return arr[o : o + self.size] if self.axis == 0 else arr[:, o : o + self.size]

    def stitch(self, preds: np.ndarray) -> np.ndarray:
        """(k, S, S) predictions of one image's crops -> (H', W') over the resized image, overlaps averaged."""
        total = np.zeros(self.resized, np.float64)
        count = np.zeros(self.resized, np.float64)
        for k, p in enumerate(preds):
            self.crop(total, k)[...] += p
            self.crop(count, k)[...] += 1.0
        return total / count

    @property
    def identity(self) -> str:
        return f"{self.base.identity}/sliding{self.size}"


# --- scoring ----------------------------------------------------------------------------------------------


def upsample_bilinear(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) bilinear, pixel centres aligned (``align_corners=False``, as the depth toolboxes)."""
    t = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def eigen_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Depth metrics of one prediction (any resolution, metres) against 480 x 640 NYUv2 ground truth."""
    if gt.shape != NYU_SHAPE:
        raise UserError(
            f"the nyu-eigen protocol needs {NYU_SHAPE[0]}x{NYU_SHAPE[1]} ground truth, got {gt.shape}"
        )
    full = np.clip(upsample_bilinear(pred, NYU_SHAPE), MIN_DEPTH, MAX_DEPTH)
    valid = np.zeros(NYU_SHAPE, bool)
    r0, r1, c0, c1 = EIGEN_CROP
    valid[r0:r1, c0:c1] = True
    valid &= (gt > MIN_DEPTH) & (gt < MAX_DEPTH)
    return depth_metrics(full, gt, valid, min_depth=MIN_DEPTH)


def score_crops(crop_preds: np.ndarray, crops: SlidingCrops) -> list[dict[str, float]]:
    """Per-image metrics from the predictions (len(crops), S, S) of every crop, in order."""
    k = len(crops.offsets)
    out = []
    for i in range(len(crops.base)):
        gt = crops.base[i].depth
        if gt is None:
            raise UserError(f"{crops.base.identity}: image {i} has no depth")
        out.append(eigen_metrics(crops.stitch(crop_preds[i * k : (i + 1) * k]), np.asarray(gt, np.float64)))
    return out


def eigen_depth_probe(
    train: FeatureSet, test_crops: FeatureSet, crops: SlidingCrops, cfg, seed: int
) -> ProbeResult:
    """The depth probe (the same head and training as ``depth``) scored by the ``nyu-eigen`` protocol.

    ``test_crops`` are the features of ``crops`` (every test image's sliding S x S crops, in order).
    """
    head, centers, history = fit_depth_head(train, cfg, seed)
    preds = np.concatenate([p for _, p in predict_depth(head, test_crops, cfg, centers)])  # (n * k, S, S)
    per_image = score_crops(preds, crops)
    metrics, columns = image_means(per_image)
    proto = depth_protocol_fields(cfg, train, seed, history, centers, "nyu-eigen")
    proto.update({"eval_resolution": list(NYU_SHAPE), "eigen_crop": list(EIGEN_CROP), "depth_range": [MIN_DEPTH, MAX_DEPTH],
                  "upsampling": "bilinear", "crops_per_image": len(crops.offsets)})  # fmt: skip
    return ProbeResult(
        metrics=metrics, protocol=proto, preview=preds[: cfg.preview], head=head, per_image=columns
    )

"""The perception interface: what a depth model, a detector and a segmenter return, and how they are chosen.

Three kinds of backend, each chosen by name from a ``Registry`` and built from one ``BackendConfig``:

- depth:     ``predict(images, keys) -> list[DepthResult]``  -- metric z-depth (H, W) metres + intrinsics K.
- detector:  ``detect(images, vocabulary, keys) -> list[list[Detection]]`` -- boxes xyxy in pixels + label + score.
- segmenter: ``segment(images, boxes, keys) -> list[np.ndarray]`` -- one bool mask (N, H, W) per image, one per box.

``images`` are (H, W, 3) uint8 RGB arrays; ``keys`` name the images (oracle backends look ground truth up by
key; model backends ignore them). Every backend works on a list (a batch) and chunks it by ``batch_size``.
Pixel and frame conventions are those of ``datagen.scenes.scene``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spatialboost.errors import UserError
from spatialboost.registry import Registry


@dataclass
class DepthResult:
    depth: np.ndarray  # (H, W) float32, metres, z-depth, 0 = invalid
    K: np.ndarray  # (3, 3) float64, pixels
    fov_x: float | None = None  # horizontal field of view, radians (None when K came from elsewhere)


@dataclass
class Detection:
    box: np.ndarray  # (4,) float64 xyxy, pixels (continuous image coordinates)
    label: str
    score: float


@dataclass
class BackendConfig:
    """How to build one backend: a hub name or local path, where to run it and how."""

    model: str = ""  # hub name or local directory (from_pretrained); "" = the backend's default
    device: str = "cpu"
    dtype: str = "float32"  # float32 | bfloat16 | float16 (half precision only on a GPU)
    batch_size: int = 4
    threshold: float = 0.2  # detectors: minimum score kept
    max_detections: int = 20  # detectors: per image, after non-maximum suppression
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific (e.g. oracle noise)

    def fingerprint(self, name: str) -> str:
        """A short, stable hash of (backend name, config): the cache key's config half."""
        blob = json.dumps({"name": name, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class DepthBackend(Protocol):
    def predict(self, images: Sequence[np.ndarray], keys: Sequence[str]) -> list[DepthResult]: ...


class Detector(Protocol):
    def detect(
        self, images: Sequence[np.ndarray], vocabulary: Sequence[str], keys: Sequence[str]
    ) -> list[list[Detection]]: ...


class Segmenter(Protocol):
    def segment(
        self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], keys: Sequence[str]
    ) -> list[np.ndarray]: ...


DEPTH_BACKENDS: Registry[Callable[[BackendConfig], DepthBackend]] = Registry("depth backend")
DETECTORS: Registry[Callable[[BackendConfig], Detector]] = Registry("detector")
SEGMENTERS: Registry[Callable[[BackendConfig], Segmenter]] = Registry("segmenter")

# Common indoor and outdoor objects (COCO-like, plus room furniture); ``--vocab FILE`` replaces it.
DEFAULT_VOCABULARY: tuple[str, ...] = (
    "person", "chair", "table", "sofa", "bed", "lamp", "cabinet", "shelf", "desk", "door", "window",
    "television", "laptop", "monitor", "keyboard", "book", "bottle", "cup", "bowl", "plant", "vase",
    "clock", "pillow", "box", "bag", "backpack", "sink", "toilet", "refrigerator", "oven", "microwave",
    "car", "bicycle", "motorcycle", "bus", "truck", "traffic light", "bench", "tree", "dog", "cat",
    "bird", "horse", "umbrella", "ball", "sign", "trash can",
)  # fmt: skip


def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Consecutive chunks of ``items`` of at most ``size`` (size >= 1)."""
    size = max(1, int(size))
    return [items[i : i + size] for i in range(0, len(items), size)]


def load_vocabulary(path: str | Path | None) -> list[str]:
    """The default vocabulary, or one label per non-empty, non-# line of ``path``."""
    if path is None:
        return list(DEFAULT_VOCABULARY)
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--vocab {p}: file not found (one object name per line)")
    words = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    words = list(dict.fromkeys(w.lower() for w in words if w and not w.startswith("#")))
    if not words:
        raise UserError(f"--vocab {p}: no object names in it (one per line)")
    return words


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (N, M) of xyxy boxes a (N, 4) and b (M, 4)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def non_max_suppression(dets: list[Detection], iou: float = 0.5, limit: int = 20) -> list[Detection]:
    """Greedy class-agnostic NMS, highest score first, at most ``limit`` kept."""
    order = sorted(dets, key=lambda d: -d.score)
    kept: list[Detection] = []
    for d in order:
        if len(kept) >= limit:
            break
        if not kept or box_iou(d.box[None], np.stack([k.box for k in kept])).max() < iou:
            kept.append(d)
    return kept


def boxes_of(dets: Sequence[Detection]) -> np.ndarray:
    """(N, 4) float64 boxes of a detection list (N may be 0)."""
    return np.stack([d.box for d in dets]).astype(np.float64) if dets else np.zeros((0, 4))

"""Depth Pro (``DepthProForDepthEstimation``): metric depth and field of view -> z-depth + K.

The network predicts a *canonical inverse depth* at its input resolution and a horizontal field of view
(degrees). As in transformers' ``post_process_depth_estimation``: f_px = 0.5 W / tan(fov / 2);
inverse depth = canonical * W / f_px, resized bilinearly to (H, W); depth = 1 / clamp(inverse, 1e-4, 1e4).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spatialboost.datagen.real.perception.base import DEPTH_BACKENDS, BackendConfig, DepthResult, batched
from spatialboost.datagen.real.perception.hf import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    Preprocess,
    load_model,
    transformers_module,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "apple/DepthPro-hf"
# transformers' DepthProImageProcessor: normalise (0.5, 0.5) first, then bilinear resize without antialias
DEFAULT_PREPROCESS = Preprocess(1536, 1536, IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, True, False)
FOV_RANGE_DEG = (5.0, 170.0)  # an untrained or confused FOV head is clamped into a plausible range


def intrinsics_from_fov_deg(width: int, height: int, fov_deg: float) -> tuple[np.ndarray, float]:
    """(K (3, 3), fov_x radians) of a centred pinhole whose horizontal FOV is ``fov_deg`` (clamped)."""
    fov = math.radians(float(np.clip(fov_deg, *FOV_RANGE_DEG)))
    f = 0.5 * width / math.tan(0.5 * fov)
    return np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]]), fov


@DEPTH_BACKENDS.register("depth-pro")
class DepthProBackend:
    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        model = cfg.model or DEFAULT_MODEL
        self.net = load_model(transformers_module().DepthProForDepthEstimation, model, cfg.device, cfg.dtype)
        self.preprocess = Preprocess.from_pretrained(model, DEFAULT_PREPROCESS)
        self.default_fov_deg = float(cfg.options.get("fov_deg", 60.0))  # used when the model has no FOV head

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], keys: Sequence[str] = ()) -> list[DepthResult]:
        results: list[DepthResult] = []
        for chunk in batched(list(images), self.cfg.batch_size):
            pixels = self.preprocess(chunk).to(self.cfg.device, self.net.dtype)  # (B, 3, S, S)
            out = self.net(pixel_values=pixels)
            canonical = out.predicted_depth.float()  # (B, h, w) canonical inverse depth
            fovs = out.field_of_view
            for i, img in enumerate(chunk):
                fov_deg = float(fovs[i]) if fovs is not None else self.default_fov_deg
                results.append(self._to_metric(canonical[i], img.shape[0], img.shape[1], fov_deg))
        return results

    def _to_metric(self, canonical: torch.Tensor, height: int, width: int, fov_deg: float) -> DepthResult:
        K, fov = intrinsics_from_fov_deg(width, height, fov_deg)
        inverse = canonical * width / K[0, 0]
        inverse = F.interpolate(
            inverse[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0]
        depth = 1.0 / inverse.clamp(1e-4, 1e4)  # (H, W) metres
        return DepthResult(depth.cpu().numpy().astype(np.float32), K, fov)

"""Image preprocessing from an encoder's spec, without torchvision.

Resize the short side to ``size`` (bicubic, antialiased), center-crop to ``size x size``, scale to
[0, 1] and normalise with ``spec.mean`` / ``spec.std``. ``size`` defaults to ``spec.image_size`` and is
rounded down to a multiple of ``spec.patch_size`` so the patch grid is whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spatialboost.models.encoder_base import EncoderSpec


def preprocess_images(images: Sequence, spec: EncoderSpec, size: int | None = None) -> torch.Tensor:
    """HxWx3 uint8 arrays or PIL images -> (B, 3, S, S) float32, normalised for ``spec``."""
    side = patch_multiple(size or spec.image_size, spec.patch_size)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    batch = [(resize_center_crop(to_tensor(im), side) - mean) / std for im in images]
    return torch.stack(batch)


def patch_multiple(size: int, patch: int) -> int:
    if size < patch:
        raise ValueError(f"image size {size} is smaller than the patch size {patch}")
    return size - size % patch


def to_tensor(image) -> torch.Tensor:
    """An HxWx3 uint8 array or PIL image -> (3, H, W) float32 in [0, 1]."""
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    t = torch.tensor(arr[..., :3]).permute(2, 0, 1).float()  # copies (PIL arrays are read-only)
    return t / 255.0 if arr.dtype == np.uint8 else t


def resize_center_crop(image: torch.Tensor, side: int) -> torch.Tensor:
    """(3, H, W) -> (3, side, side): short side to ``side`` (bicubic, antialiased), then center crop."""
    _, h, w = image.shape
    scale = side / min(h, w)
    new_h, new_w = max(side, round(h * scale)), max(side, round(w * scale))
    if (new_h, new_w) != (h, w):
        image = F.interpolate(
            image[None], size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
        )[0]
        image = image.clamp(0.0, 1.0)
    top, left = (new_h - side) // 2, (new_w - side) // 2
    return image[:, top : top + side, left : left + side]

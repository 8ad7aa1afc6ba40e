"""Image files -> normalised pixel tensors, without torchvision.

``make_image_transform(size, mean, std)`` is the default the dataset uses: RGB, bicubic resize of the
short side to ``size``, center crop to ``size`` x ``size`` (as ``models.preprocess`` does), scale to [0, 1], normalise with the encoder's mean/std. The VLM side passes
the encoder's own preprocessing instead (``spatialboost.models.vlm.image_transform_for(encoder)``) so
the data package never imports the models package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

ImageTransform = Callable[[list[Image.Image]], torch.Tensor]  # PIL images -> (n, 3, H, W) float32


def make_image_transform(
    size: int,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> ImageTransform:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def transform(images: list[Image.Image]) -> torch.Tensor:
        tensors = []
        for image in images:
            image = _resize_center_crop(image.convert("RGB"), size)
            array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
            tensors.append((torch.from_numpy(array).permute(2, 0, 1) - mean_t) / std_t)
        if not tensors:
            return torch.empty(0, 3, size, size)
        return torch.stack(tensors)

    return transform


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))

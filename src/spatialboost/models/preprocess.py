"""An encoder's preprocessing, resolved from its spec (timm's ``resolve_model_data_config`` -> ``create_transform``).

``transform_for(spec, size)`` is the ``spatialboost.image_transform.ImageTransform`` an encoder's input goes
through: the short side resized to ``size`` with ``spec.interpolation`` (antialiased), the centre
``size x size`` cut, scaled to [0, 1] and normalised with ``spec.mean`` / ``spec.std``; dense targets follow the
same geometry by nearest neighbour. ``size`` defaults to ``spec.image_size`` and is rounded down to a multiple
of ``spec.patch_size`` so the patch grid is whole. Training, the probes and the depth protocol all take it from
here, so every consumer of an encoder sees the pixels the encoder does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spatialboost.image_transform import ImageTransform
from spatialboost.models.encoder_base import EncoderSpec, VisionEncoder


def transform_for(spec: EncoderSpec, size: int | None = None) -> ImageTransform:
    """The encoder's image transform at ``size`` (default ``spec.image_size``, rounded down to whole patches)."""
    side = patch_multiple(size or spec.image_size, spec.patch_size)
    return ImageTransform(side, spec.mean, spec.std, spec.interpolation, spec.patch_size)


def image_transform_for(encoder: VisionEncoder, size: int | None = None) -> ImageTransform:
    """``transform_for(encoder.spec, size)``: the dataset's image transform for ``encoder``."""
    return transform_for(encoder.spec, size)


def preprocess_images(images: Sequence, spec: EncoderSpec, size: int | None = None) -> torch.Tensor:
    """HxWx3 uint8 arrays or PIL images -> (B, 3, S, S) float32, normalised for ``spec``."""
    return transform_for(spec, size)(images)


def patch_multiple(size: int, patch: int) -> int:
    if size < patch:
        raise ValueError(f"image size {size} is smaller than the patch size {patch}")
    return size - size % patch

"""The encoder contract every registered vision encoder follows (timm's ``forward_intermediates`` idea).

Downstream code (projector/VLM, probes, export) talks only to this interface, never to a family's
internals. Shapes: B batch, D embed dim, (h, w) patch grid, N = h * w patch tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn

from spatialboost.image_transform import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class EncoderSpec:
    """Static facts about an encoder; travels with its weights (config.json of a saved encoder)."""

    name: str  # registered name, hub id or local path it came from
    family: str  # "tiny-vit", "dinov2", "dinov2-registers", "dinov3", "siglip2", "clip", ...
    embed_dim: int
    patch_size: int
    image_size: int  # default square input side, pixels
    num_layers: int
    num_heads: int
    num_prefix_tokens: int = 1  # CLS (+ registers) before the patch tokens
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"  # image resampling of its preprocessing (``models.preprocess``)
    extra: dict = field(default_factory=dict)


@dataclass
class EncoderOutput:
    cls: torch.Tensor  # (B, D) pooled / CLS embedding
    patch: torch.Tensor  # (B, N, D) patch tokens, row-major over the grid
    grid: tuple[int, int]  # (h, w) patch grid


class VisionEncoder(nn.Module):
    """Base class: subclasses set ``spec`` and implement ``forward_intermediates``.

    ``pixels`` are (B, 3, H, W) float32, already normalised with ``spec.mean``/``spec.std``
    (see ``models.preprocess``). H and W must be multiples of ``spec.patch_size``.
    """

    spec: EncoderSpec

    def forward_intermediates(
        self, pixels: torch.Tensor, layers: list[int] | None = None
    ) -> list[EncoderOutput]:
        """Outputs after the given blocks (0-based; negative counts from the end; None = last only).

        The last block's output is taken after the final norm, as ``forward_features`` returns it;
        intermediate blocks are returned after the final norm too (DINOv2 linear-probe convention).
        """
        raise NotImplementedError

    def forward_features(self, pixels: torch.Tensor) -> EncoderOutput:
        return self.forward_intermediates(pixels, None)[-1]

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        return self.forward_features(pixels)


def weights_sha256(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes), sorted by name: the identity of
    a set of weights (an encoder's ``weights_sha256`` in probe results, feature-cache keys, the model card's
    match of a probe to an export). Any dtype, bfloat16 included (the bytes are read as uint8)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

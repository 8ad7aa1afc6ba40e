"""Light heads trained on frozen features. Every head is linear: a fixed standardisation (train-set mean
and std, so encoders with different feature scales share one learning rate) followed by one
``nn.Linear``; weights start at zero, so a head is deterministic given the batch order.

Shapes: B batch, N = h * w patch tokens, C feature channels, K outputs, S output side in pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Standardize(nn.Module):
    """x -> (x - mean) / std with fixed (non-trained) statistics."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def feature_stats(x: np.ndarray, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std of (n, ..., C) features, read in chunks (works on memmaps)."""
    c = x.shape[-1]
    total, s1, s2 = 0, np.zeros(c), np.zeros(c)
    for start in range(0, x.shape[0], chunk):
        block = np.asarray(x[start : start + chunk], dtype=np.float64).reshape(-1, c)
        total += block.shape[0]
        s1 += block.sum(0)
        s2 += (block**2).sum(0)
    mean = s1 / max(total, 1)
    var = np.maximum(s2 / max(total, 1) - mean**2, 0.0)
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()


class LinearHead(nn.Module):
    """Standardise then one linear layer, zero-initialised: (..., C) -> (..., K)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, out_dim: int) -> None:
        super().__init__()
        self.norm = Standardize(mean, std)
        self.linear = nn.Linear(mean.numel(), out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))

    def effective_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, C) weight and (K,) bias acting on raw (unstandardised) features."""
        w = self.linear.weight / self.norm.std
        b = self.linear.bias - w @ self.norm.mean
        return w.detach(), b.detach()


class DenseLinearHead(nn.Module):
    """Patch tokens (+ the CLS token broadcast to each patch) -> K maps on the patch grid -> bilinear to S x S."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, out_dim: int, use_cls: bool) -> None:
        super().__init__()
        self.use_cls = use_cls
        self.head = LinearHead(mean, std, out_dim)

    def tokens(self, patch: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        if not self.use_cls:
            return patch  # (B, N, C)
        assert cls is not None
        return torch.cat([patch, cls[:, None, :].expand(-1, patch.shape[1], -1)], dim=-1)  # (B, N, C + C_cls)

    def forward(
        self, patch: torch.Tensor, cls: torch.Tensor | None, grid: tuple[int, int], size: int
    ) -> torch.Tensor:
        b = patch.shape[0]
        h, w = grid
        logits = self.head(self.tokens(patch, cls))  # (B, N, K)
        logits = logits.transpose(1, 2).reshape(b, -1, h, w)  # (B, K, h, w)
        return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)  # (B, K, S, S)


def silog_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, lam: float = 0.85
) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.; DINOv2 depth heads) over valid pixels; depths in metres."""
    d = torch.log(pred[valid].clamp_min(1e-3)) - torch.log(target[valid])
    if d.numel() == 0:
        return pred.sum() * 0.0
    return torch.sqrt((d**2).mean() - lam * d.mean() ** 2 + 1e-8)

"""Dense-head supervision (paper Table 6 baselines): a linear head on patch tokens, trained on ground truth.

The encoder carries dual-channel attention (Attn+ and gates train, the original weights stay frozen) and a
linear head on its last-layer patch tokens predicts log-depth (MSE on valid pixels, the depth probe's
``log-regression`` loss) or semantic classes (cross-entropy, void ignored) from the dataset's ``gt/``
sidecars. Two steps as in the paper's Appendix E.1: the head alone on the frozen encoder
(``head_warmup_steps``), then head + Attn+ + gates together for ``steps`` -- the same images, batch size
and optimiser steps as the LLM's stage 3.

Shapes: M images, S image side, B images in a step, N = h * w patch tokens, D channels, K outputs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.dataset_format import iter_records, load_gt_arrays, record_images
from spatialboost.io import confined
from spatialboost.models.dual_channel import trainable_parameters
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.preprocess import transform_for
from spatialboost.rng import seeded

log = logging.getLogger(__name__)


@dataclass
class DenseConfig:
    target: Literal["depth", "seg"] = "depth"
    steps: int = 24  # joint steps (head + Attn+ + gates)
    head_warmup_steps: int = 48  # head alone, encoder frozen
    batch_size: int = 8  # samples per step (all their views)
    lr: float = 1e-3  # Attn+
    lr_gates: float = 1e-2
    head_lr: float = 1e-2
    seed: int = 0


@dataclass
class DenseData:
    pixels: torch.Tensor  # (M, 3, S, S) normalised
    depth: torch.Tensor  # (M, S, S) metres, 0 = invalid
    seg: torch.Tensor  # (M, S, S) int64, void -> SEG_IGNORE_INDEX
    sample_images: list[list[int]]  # image indices of each sample (its views)
    num_classes: int


@dataclass
class DenseResult:
    warmup_losses: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


class PatchHead(nn.Module):
    """LayerNorm (no affine) + linear on patch tokens -> K maps upsampled to S x S."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, patch: torch.Tensor, grid: tuple[int, int], side: int) -> torch.Tensor:
        h, w = grid
        out = self.linear(self.norm(patch))  # (B, N, K)
        out = out.transpose(1, 2).reshape(patch.shape[0], -1, h, w)  # (B, K, h, w)
        return F.interpolate(out, size=(side, side), mode="bilinear", align_corners=False)  # (B, K, S, S)


def load_dense_data(dataset_dir: str | Path, encoder: VisionEncoder, side: int | None = None) -> DenseData:
    """Every view of every sample of a data-engine dataset, with its depth and semantic maps, at ``side``
    (default the encoder's own input size)."""
    from PIL import Image

    transform = transform_for(encoder.spec, side)  # images and their maps through one geometry

    images, depth, seg, groups, classes = [], [], [], [], 1
    for record in iter_records(dataset_dir):
        arrays, meta = load_gt_arrays(dataset_dir, record["id"])
        classes = max(classes, len(meta["semantic_classes"]))
        group = []
        for k, rel in enumerate(record_images(record)):
            with Image.open(confined(dataset_dir, rel)) as im:
                images.append(np.asarray(im.convert("RGB")))
            depth.append(transform.target(arrays["depth"][k]))
            s = transform.target(arrays["semantic"][k]).astype(np.int64)
            s[s == 0] = SEG_IGNORE_INDEX
            seg.append(s)
            group.append(len(images) - 1)
        groups.append(group)
    pixels = transform(images)
    return DenseData(
        pixels, torch.from_numpy(np.stack(depth)), torch.from_numpy(np.stack(seg)), groups, classes
    )


def dense_loss(out: torch.Tensor, idx: list[int], data: DenseData, target: str) -> torch.Tensor:
    """Log-depth MSE on valid pixels, or cross-entropy with void ignored."""
    if target == "depth":
        d = data.depth[idx]
        valid = d > 0
        if not valid.any():
            return out.sum() * 0.0
        return F.mse_loss(out[:, 0][valid], d[valid].log())
    return F.cross_entropy(out, data.seg[idx], ignore_index=SEG_IGNORE_INDEX)


def step_images(data: DenseData, step: int, batch_size: int, seed: int) -> list[int]:
    """The images of step ``step``: ``batch_size`` samples of a seeded shuffle (cycled per epoch)."""
    n = len(data.sample_images)
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return [i for s in order[k * batch_size : (k + 1) * batch_size] for i in data.sample_images[s]]


def make_head(encoder: VisionEncoder, data: DenseData, cfg: DenseConfig) -> PatchHead:
    with seeded(cfg.seed):
        head = PatchHead(encoder.spec.embed_dim, 1 if cfg.target == "depth" else data.num_classes)
    if cfg.target == "depth":  # start at the mean log-depth, as the depth probe does
        valid = data.depth[data.depth > 0]
        nn.init.zeros_(head.linear.weight)
        head.linear.bias.data.fill_(float(valid.log().mean()) if valid.numel() else 0.0)
    return head


def train_dense_head(
    encoder: VisionEncoder, data: DenseData, cfg: DenseConfig
) -> tuple[PatchHead, DenseResult]:
    """Train the head alone, then head + the encoder's dual-channel adapter; the base stays frozen."""

    adapter = trainable_parameters(encoder)  # Attn+ and gates (boost_encoder froze the rest)
    if not adapter:
        raise ValueError("the encoder has no trainable adapter: call boost_encoder first")
    head = make_head(encoder, data, cfg)
    result = DenseResult()
    side = data.pixels.shape[-1]
    encoder.requires_grad_(False)
    head_opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=0.0)
    for step in tqdm(range(cfg.head_warmup_steps), desc=f"{cfg.target} head warm-up", leave=False):
        idx = step_images(data, step, cfg.batch_size, cfg.seed + 1)
        with torch.no_grad():
            feats = encoder(data.pixels[idx])
        loss = dense_loss(head(feats.patch, feats.grid, side), idx, data, cfg.target)
        _step(head_opt, loss)
        result.warmup_losses.append(loss.item())
    for p in adapter.values():
        p.requires_grad_(True)
    opt = _joint_optimizer(adapter, head, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    encoder.train()
    for step in tqdm(range(cfg.steps), desc=f"{cfg.target} head + Attn+", leave=False):
        idx = step_images(data, step, cfg.batch_size, cfg.seed)
        feats = encoder(data.pixels[idx])
        loss = dense_loss(head(feats.patch, feats.grid, side), idx, data, cfg.target)
        _step(opt, loss, [*adapter.values(), *head.parameters()])
        sched.step()
        result.losses.append(loss.item())
    encoder.eval().requires_grad_(False)
    return head, result


def _joint_optimizer(
    adapter: dict[str, nn.Parameter], head: PatchHead, cfg: DenseConfig
) -> torch.optim.AdamW:
    gates = [p for n, p in adapter.items() if n.endswith("gate")]
    plus = [p for n, p in adapter.items() if not n.endswith("gate")]
    groups = [{"params": plus, "lr": cfg.lr}, {"params": gates, "lr": cfg.lr_gates},
              {"params": list(head.parameters()), "lr": cfg.head_lr}]  # fmt: skip
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, clip: list[nn.Parameter] | None = None) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    opt.step()

"""Pre-train the tiny base ViT on a 2D-only objective: the stand-in for DINOv2 where no weights download.

Objective: multi-label recognition on rendered synthetic scenes -- which object classes and which
colours are visible (at least ``min_pixels`` pixels) in the image. Nothing 3D (depth, distance, layout)
is in the labels, so whatever 3D awareness SpatialBoost adds later is not already there.

The result is saved with ``save_encoder`` (base weights included) under
``<cache_dir>/<encoder>-<config hash>/`` and reloads with ``create_encoder(path)``. The directory is a
cache: a second call with the same config returns it without training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from spatialboost.config import ConfigError, to_dict
from spatialboost.datagen.scenes.synthetic import COLORS, OBJECT_CLASSES, SyntheticConfig, generate_scene
from spatialboost.models.encoders import create_encoder
from spatialboost.models.export import save_encoder
from spatialboost.models.preprocess import preprocess_images
from spatialboost.rng import seeded

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    encoder: str = "tiny-vit"  # a registered random-init config
    scenes: int = 1024  # rendered single-view scenes (10% held out)
    image_size: int | None = None  # None: the encoder's
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    min_pixels: int = 4  # an object counts as visible from this many pixels
    seed: int = 0
    cache_dir: Path = Path("runs/cache/pretrain")
    scene_options: dict = field(default_factory=dict)  # SyntheticConfig overrides

    def validate(self) -> None:
        if self.scenes < 10 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("pretrain needs scenes >= 10, epochs >= 1, batch_size >= 1")


@dataclass
class PretrainResult:
    path: Path
    cached: bool
    loss_start: float = math.nan
    loss_end: float = math.nan
    val_accuracy: float = math.nan  # per-label accuracy on held-out scenes
    val_baseline: float = math.nan  # the same for always answering each label's majority value
    label_names: list[str] = field(default_factory=list)


def cache_path(cfg: PretrainConfig) -> Path:
    key = {k: v for k, v in to_dict(cfg).items() if k != "cache_dir"}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir) / f"{cfg.encoder}-{digest}"


def pretrain_encoder(cfg: PretrainConfig) -> PretrainResult:
    """Train (or reuse) the 2D-pretrained base encoder; returns where it is saved."""
    out = cache_path(cfg)
    if (out / "config.json").is_file():
        log.info("pre-trained encoder cached at %s", out)
        meta = json.loads((out / "pretrain.json").read_text()) if (out / "pretrain.json").is_file() else {}
        return PretrainResult(out, True, **meta)
    encoder = create_encoder(cfg.encoder, pretrained=False, seed=cfg.seed)
    pixels, labels, names = render_dataset(cfg, encoder.spec)
    result = fit(encoder, pixels, labels, cfg)
    result.label_names = names
    save_encoder(encoder, out, include_base=True)
    meta = {
        k: getattr(result, k)
        for k in ("loss_start", "loss_end", "val_accuracy", "val_baseline", "label_names")
    }
    (out / "pretrain.json").write_text(json.dumps(meta, indent=2) + "\n")
    result.path = out
    log.info("pre-trained %s: loss %.3f -> %.3f, held-out label accuracy %.3f (majority %.3f) -> %s",
             cfg.encoder, result.loss_start, result.loss_end, result.val_accuracy, result.val_baseline, out)  # fmt: skip
    return result


def render_dataset(cfg: PretrainConfig, spec) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(S, 3, H, W) normalised pixels and (S, C + K) multi-hot class/colour labels."""
    size = cfg.image_size or spec.image_size
    scfg = SyntheticConfig(**{"image_size": size, "views": 1, **cfg.scene_options})
    names = [f"class:{c}" for c in OBJECT_CLASSES] + [f"colour:{c}" for c in COLORS]
    images, labels = [], torch.zeros(cfg.scenes, len(names))
    for i in tqdm(range(cfg.scenes), desc="rendering", unit="scene", leave=False):
        scene = generate_scene(cfg.seed * 1_000_003 + i, scfg)
        images.append(scene.views[0].rgb)
        for obj in scene.objects:
            if obj.visible_pixels and obj.visible_pixels[0] >= cfg.min_pixels:
                labels[i, names.index(f"class:{obj.name}")] = 1
                if obj.color in COLORS:
                    labels[i, names.index(f"colour:{obj.color}")] = 1
    return preprocess_images(images, spec, size=size), labels, names


class LabelHead(nn.Module):
    """Linear head on [CLS, mean patch] -> label logits."""

    def __init__(self, dim: int, n_labels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim)
        self.fc = nn.Linear(2 * dim, n_labels)

    def forward(self, cls: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:  # (B, D), (B, N, D) -> (B, C)
        return self.fc(self.norm(torch.cat([cls, patch.mean(1)], dim=-1)))


def fit(encoder, pixels: torch.Tensor, labels: torch.Tensor, cfg: PretrainConfig) -> PretrainResult:
    """AdamW + cosine on BCE; returns first/last epoch loss and held-out accuracy."""
    g = torch.Generator().manual_seed(cfg.seed)
    n_val = max(1, len(pixels) // 10)
    train_x, train_y, val_x, val_y = pixels[n_val:], labels[n_val:], pixels[:n_val], labels[:n_val]
    with seeded(cfg.seed):
        head = LabelHead(encoder.spec.embed_dim, labels.shape[1])
    encoder.requires_grad_(True).train()
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
    )
    epoch_losses = []
    for _ in tqdm(range(cfg.epochs), desc="pre-training", unit="epoch", leave=False):
        order = torch.randperm(len(train_x), generator=g)
        total = 0.0
        for k in range(steps_per_epoch):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            out = encoder(train_x[idx])
            loss = F.binary_cross_entropy_with_logits(head(out.cls, out.patch), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total += loss.item()
        epoch_losses.append(total / steps_per_epoch)
    encoder.eval().requires_grad_(False)
    with torch.no_grad():
        out = encoder(val_x)
        acc = float(((head(out.cls, out.patch) > 0).float() == val_y).float().mean())
    majority = (train_y.mean(0) > 0.5).float()
    baseline = float((majority.expand_as(val_y) == val_y).float().mean())
    return PretrainResult(Path(), False, epoch_losses[0], epoch_losses[-1], acc, baseline)

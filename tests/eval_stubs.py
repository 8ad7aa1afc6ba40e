"""Test stand-ins for the probes: a tiny random VisionEncoder and a fake synthetic-scene generator."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spatialboost.datagen.scenes.scene import Camera, Scene, SceneObject, View
from spatialboost.models.encoder_base import EncoderOutput, EncoderSpec, VisionEncoder

CLASSES = ["void", "floor", "wall", "cube", "ball"]


class StubEncoder(VisionEncoder):
    """Conv patch embed + CLS token + residual MLP blocks + final LayerNorm, random init from ``seed``."""

    def __init__(
        self, dim: int = 16, patch: int = 8, depth: int = 3, seed: int = 0, name: str = "stub"
    ) -> None:
        super().__init__()
        self.spec = EncoderSpec(name=name, family="stub", embed_dim=dim, patch_size=patch, image_size=32,
                                num_layers=depth, num_heads=1)  # fmt: skip
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.GELU()) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward_intermediates(self, pixels, layers=None):
        x = self.embed(pixels)  # (B, D, h, w)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x + 0 * x.mean(1, keepdim=True)], dim=1)
        wanted = {(i % len(self.blocks)) for i in (layers or [-1])}
        outs = []
        for i, block in enumerate(self.blocks):
            x = x + block(x)
            if i in wanted:
                y = self.norm(x)
                outs.append(EncoderOutput(cls=y[:, 0], patch=y[:, 1:], grid=grid))
        return outs


def fake_scene(seed: int, size: int = 48) -> Scene:
    """Floor + wall + 1-3 boxes; colour tells the class, brightness tells the depth."""
    rng = np.random.default_rng(seed)
    h = w = size
    depth = np.empty((h, w), np.float32)
    rows = np.arange(h)[:, None] * np.ones((1, w))
    depth[:] = np.where(rows < h // 3, 6.0, 6.0 - 4.0 * (rows - h // 3) / (h - h // 3))
    semantic = np.where(rows < h // 3, 2, 1).astype(np.uint8)
    instance = np.zeros((h, w), np.int32)
    objects = []
    for k in range(1, int(rng.integers(1, 4)) + 1):
        cls = int(rng.integers(3, 5))
        y0, x0 = rng.integers(0, h - 12), rng.integers(0, w - 12)
        sz = int(rng.integers(8, 20))
        d = float(rng.uniform(1.0, 4.0))
        sl = (slice(y0, y0 + sz), slice(x0, x0 + sz))
        depth[sl], semantic[sl], instance[sl] = d, cls, k
        objects.append(SceneObject(id=k, name=CLASSES[cls], description=f"the {CLASSES[cls]} {k}", color=None,
                                   centroid=np.zeros(3), aabb_min=np.zeros(3), aabb_max=np.ones(3),
                                   obb_center=np.zeros(3), obb_extent=np.ones(3), obb_rotation=np.eye(3)))  # fmt: skip
    palette = np.array([[0, 0, 0], [120, 90, 60], [200, 200, 220], [220, 40, 40], [40, 60, 220]], np.float32)
    shade = (1.2 - depth / 8.0)[..., None]
    rgb = np.clip(palette[semantic] * shade + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)
    depth[0, 0] = 0.0  # one invalid pixel
    cam = Camera(K=np.eye(3), cam_to_world=np.eye(4), width=w, height=h)
    view = View(rgb=rgb, camera=cam, depth=depth, instance=instance, semantic=semantic)
    return Scene(scene_id=f"fake{seed}", views=[view], objects=objects, semantic_classes=list(CLASSES),
                 meta={"seed": seed})  # fmt: skip

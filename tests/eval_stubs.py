"""A test stand-in for the probes: a fake synthetic-scene generator with known classes and depth.

The encoder the probe tests use is the registered ``tiny-vit`` (``create_encoder("tiny-vit", seed=...)``),
so they exercise a real encoder's code path and its layer contract, not a stand-in's."""

from __future__ import annotations

import numpy as np

from spatialboost.datagen.scenes.scene import Camera, Scene, SceneObject, View

CLASSES = ["void", "floor", "wall", "cube", "ball"]


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

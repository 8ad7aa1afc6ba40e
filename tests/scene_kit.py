"""Hand-built scenes with known geometry for the datagen tests: axis-aligned boxes on a floor, exact ray casting."""

from __future__ import annotations

import numpy as np

from spatialboost.datagen.scenes.geometry import intrinsics_from_fov, look_at, yaw_rotation
from spatialboost.datagen.scenes.scene import Camera, Scene, SceneObject, View


def box(obj_id: int, center, size, name: str = "box", color: str | None = "red") -> SceneObject:
    c, s = np.asarray(center, float), np.asarray(size, float)
    desc = f"the {color} {name}" if color else f"the {name} #{obj_id}"
    return SceneObject(
        id=obj_id,
        name=name,
        description=desc,
        color=color,
        centroid=c.copy(),
        aabb_min=c - s / 2,
        aabb_max=c + s / 2,
        obb_center=c.copy(),
        obb_extent=s.copy(),
        obb_rotation=np.eye(3),
    )


ROUND = ("sphere", "cylinder", "cone", "torus")


def solid(obj_id: int, kind: str, center, extent, yaw: float = 0.0, color: str = "red") -> SceneObject:
    """An object that is a primitive solid (box, sphere, cylinder, cone, pyramid, torus) turned by ``yaw``.

    Its world AABB is derived by hand: a round footprint is a disc of diameter extent[0] whatever the yaw;
    a box or pyramid footprint is the turned rectangle.
    """
    c, s = np.asarray(center, float), np.asarray(extent, float)
    R = yaw_rotation(yaw)
    half = np.array([s[0] / 2, s[0] / 2, s[2] / 2]) if kind in ROUND else 0.5 * np.abs(R) @ s
    o = SceneObject(
        id=obj_id,
        name=kind,
        description=f"the {color} {kind}",
        color=color,
        centroid=c.copy(),
        aabb_min=c - half,
        aabb_max=c + half,
        obb_center=c.copy(),
        obb_extent=s.copy(),
        obb_rotation=R,
    )
    o.solid = kind  # set after construction: the same helper builds the scenes of every version under test
    return o


def turned(scene: Scene, yaw: float, shift=(0.0, 0.0, 0.0)) -> Scene:
    """The whole scene (objects and cameras) turned by ``yaw`` about world z, then moved by ``shift``.

    The images, depth and instance maps are those of the original: the camera sees the same thing.
    """
    R, t = yaw_rotation(yaw), np.asarray(shift, float)
    objects = []
    for o in scene.objects:
        r = solid(o.id, o.solid, R @ o.obb_center + t, o.obb_extent, 0.0, o.color or "red")
        r.obb_rotation = R @ o.obb_rotation
        if o.solid not in ROUND:
            half = 0.5 * np.abs(r.obb_rotation) @ o.obb_extent
            r.aabb_min, r.aabb_max = r.obb_center - half, r.obb_center + half
        r.name, r.description, r.centroid = o.name, o.description, R @ o.centroid + t
        r.visible_pixels, r.attributes = list(o.visible_pixels), dict(o.attributes)
        objects.append(r)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    views = [
        View(
            v.rgb,
            Camera(v.camera.K, T @ v.camera.cam_to_world, v.camera.width, v.camera.height),
            v.depth,
            v.instance,
            v.semantic,
        )  # fmt: skip
        for v in scene.views
    ]
    return Scene(scene.scene_id, views, objects, scene.semantic_classes, scene.source, dict(scene.meta))


def camera(eye, target, width: int = 64, height: int = 48, fov_deg: float = 70.0) -> Camera:
    K = intrinsics_from_fov(width, height, np.deg2rad(fov_deg))
    return Camera(
        K=K,
        cam_to_world=look_at(np.asarray(eye, float), np.asarray(target, float)),
        width=width,
        height=height,
    )


def render(objects: list[SceneObject], cam: Camera, floor: bool = True) -> View:
    """Exact z-depth and instance maps of axis-aligned boxes (+ the floor z = 0) by slab ray casting."""
    h, w = cam.height, cam.width
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    K = cam.K
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1 rays
    R, t = cam.cam_to_world[:3, :3], cam.cam_to_world[:3, 3]
    d = d_cam @ R.T  # (H, W, 3) world ray per unit z-depth
    best = np.full((h, w), np.inf)
    inst = np.zeros((h, w), np.int32)
    if floor:
        with np.errstate(divide="ignore", invalid="ignore"):
            tf = -t[2] / d[..., 2]
        best = np.where((tf > 0) & np.isfinite(tf), tf, np.inf)
    for o in objects:
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (o.aabb_min - t) / d
            t2 = (o.aabb_max - t) / d
        tn = np.nanmax(np.minimum(t1, t2), axis=-1)
        tx = np.nanmin(np.maximum(t1, t2), axis=-1)
        hit = (tn <= tx) & (tn > 0) & (tn < best)
        best = np.where(hit, tn, best)
        inst = np.where(hit, o.id, inst)
    depth = np.where(np.isfinite(best), best, 0.0).astype(np.float32)  # t per unit z == z-depth
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = (inst * 40 % 255).astype(np.uint8)
    rgb[..., 1] = np.clip(depth * 30, 0, 255).astype(np.uint8)
    semantic = (inst > 0).astype(np.uint8) + 1
    return View(rgb=rgb, camera=cam, depth=depth, instance=inst, semantic=semantic)


def make_scene(objects: list[SceneObject], cams: list[Camera], scene_id: str = "hand") -> Scene:
    views = [render(objects, c) for c in cams]
    for o in objects:
        o.visible_pixels = [int((vw.instance == o.id).sum()) for vw in views]
    return Scene(
        scene_id=scene_id, views=views, objects=objects, semantic_classes=["void", "floor", "object"]
    )


def four_boxes(num_views: int = 1, width: int = 64, height: int = 48) -> Scene:
    """Camera at (0, -4, 1.5) looking at +y. A: left front, B: right back, C: small, stacked on B, D: far left."""
    objs = [
        box(1, (-1.0, 0.0, 0.4), (0.6, 0.6, 0.8), "box", "red"),
        box(2, (1.0, 1.5, 0.3), (0.8, 0.8, 0.6), "cube", "blue"),
        box(3, (1.0, 1.5, 0.8), (0.3, 0.3, 0.4), "block", "green"),
        box(4, (-1.5, 3.0, 0.5), (0.5, 0.5, 1.0), "pillar", "yellow"),
    ]
    eyes = [(0.0, -4.0, 1.5), (3.0, -3.0, 2.0), (-3.0, -2.5, 1.2), (0.5, -5.0, 2.5)]
    cams = [camera(eyes[k], (0.0, 1.0, 0.3), width, height) for k in range(num_views)]
    return make_scene(objs, cams)


def random_scene(seed: int, num_views: int = 1, width: int = 64, height: int = 48) -> Scene:
    """A seeded random scene of 0-5 non-overlapping boxes (a toy stand-in for the synthetic engine)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 6))
    colors = ["red", "green", "blue", "yellow", "purple", "orange"]
    objs = []
    for i in range(n):
        size = rng.uniform(0.2, 0.9, 3)
        center = (-2.0 + i * 0.9, rng.uniform(-0.5, 3.0), size[2] / 2)
        if objs and rng.random() < 0.3:  # stack on the previous box
            below = objs[-1]
            size[:2] = np.minimum(size[:2], below.obb_extent[:2])
            center = (below.obb_center[0], below.obb_center[1], below.aabb_max[2] + size[2] / 2)
        objs.append(box(i + 1, center, size, "box", colors[i]))
    cams = []
    for _k in range(num_views):
        eye = (rng.uniform(-2, 2), rng.uniform(-5, -3.5), rng.uniform(1.0, 2.5))
        cams.append(camera(eye, (rng.uniform(-0.5, 0.5), 1.0, 0.3), width, height))
    return make_scene(objs, cams, scene_id=f"rand{seed}")

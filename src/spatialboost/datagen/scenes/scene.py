"""The scene interface: the seam between every 3D-fact source and everything downstream.

Producers: the synthetic engine (``datagen.scenes.synthetic``, exact ground truth) and the real-image perception
path (depth model + detector + segmenter, or user-provided RGB-D). Consumers: the scene graph /
relations, the conversation templates, the dataset writer, the validator, the viewer and the probes.

Conventions (pinned by tests in ``tests/test_geometry.py``; the full statement is in ``datagen.scenes.geometry``):

- Units: metres, radians.
- World frame: gravity-aligned, right-handed, **+z up**, the floor is the plane z = 0 when one exists.
- Camera frame: OpenCV, **+x right, +y down, +z forward** (looking direction). ``cam_to_world`` is a
  (4, 4) rigid transform taking camera-frame points to world-frame points.
- Image arrays are row-major ``(H, W)``/``(H, W, 3)``. A pixel is addressed as ``(x, y)`` = (column, row),
  integer indices, origin at the top-left pixel; the continuous image coordinate of pixel ``(x, y)``'s
  centre is ``(x + 0.5, y + 0.5)`` and ``K`` maps camera points to continuous image coordinates.
- ``depth`` is metric **z-depth** (distance along the camera +z axis, not ray length), float32, metres;
  ``0`` marks an invalid pixel (no measurement).
- ``instance`` is int32: ``0`` = not an object (floor, wall, background), ``k >= 1`` = ``SceneObject.id == k``.
- ``semantic`` is uint8 class ids into ``Scene.semantic_classes`` (index 0 is always "void").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Camera:
    K: np.ndarray  # (3, 3) float64, pixels
    cam_to_world: np.ndarray  # (4, 4) float64, rigid
    width: int
    height: int


@dataclass
class View:
    """Dense per-view facts. Any of depth/instance/semantic may be None for a source that lacks them."""

    rgb: np.ndarray  # (H, W, 3) uint8
    camera: Camera
    depth: np.ndarray | None = None  # (H, W) float32, metres, z-depth, 0 = invalid
    instance: np.ndarray | None = None  # (H, W) int32, 0 = no object, k = SceneObject.id
    semantic: np.ndarray | None = None  # (H, W) uint8 into Scene.semantic_classes


@dataclass
class SceneObject:
    """One object with its 3D extent in the world frame.

    What every answer measures (centre, width, depth, height, volume, gap) is defined in ``datagen.scenes.geometry``:
    the oriented box's centre and the solid ``datagen.scenes.solids.Solid.of(obj)``, never the world AABB.
    """

    id: int  # >= 1, the value of its pixels in View.instance
    name: str  # class / label, e.g. "cylinder", "chair"
    description: str  # unique referring expression, e.g. "the small red cylinder"
    color: str | None  # dominant colour name, e.g. "red"
    centroid: np.ndarray  # (3,) world, metres
    aabb_min: np.ndarray  # (3,) world, metres (axis-aligned box in the world frame)
    aabb_max: np.ndarray  # (3,)
    obb_center: np.ndarray  # (3,) oriented box, world
    obb_extent: np.ndarray  # (3,) full side lengths along the box axes, metres
    obb_rotation: np.ndarray  # (3, 3) columns = box axes in the world frame
    solid: str = (
        "box"  # the primitive filling the oriented box (datagen.scenes.solids); lifted objects are boxes
    )
    visible_pixels: list[int] = field(default_factory=list)  # per view
    attributes: dict[str, Any] = field(default_factory=dict)  # e.g. {"size": "small", "class_id": 3}


@dataclass
class Scene:
    """Everything known about one sample: one or more views of a static scene plus its objects."""

    scene_id: str
    views: list[View]
    objects: list[SceneObject]
    semantic_classes: list[str] = field(default_factory=lambda: ["void"])
    source: str = "synthetic"  # "synthetic" | "images" | "rgbd"
    meta: dict[str, Any] = field(default_factory=dict)  # seed, recorded assumptions, backend names, ...

    def object_by_id(self, obj_id: int) -> SceneObject:
        for o in self.objects:
            if o.id == obj_id:
                return o
        raise KeyError(f"scene {self.scene_id}: no object with id {obj_id}")

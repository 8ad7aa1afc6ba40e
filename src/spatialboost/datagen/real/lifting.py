"""From 2D perception to a 3D scene: depth + K + masks -> per-object point clouds -> boxes -> a ``Scene``.

Steps (``lift_view``):

1. Unproject the z-depth map with K (camera frame, OpenCV, metres; ``datagen.scenes.geometry``).
2. Fit the floor plane with RANSAC (seeded rng) on valid non-object points whose normal is within
   ``max_floor_tilt_deg`` of the camera's "image up" (-y). Found: the world frame is gravity-aligned with
   +z = the floor normal, the floor at z = 0, the origin under the camera, +x = the camera's right
   projected on the floor. Not found: the camera frame re-labelled z-up (x right, y forward, z = -y_cam),
   origin at the camera, and ``Scene.meta["frame"]`` records the level-camera assumption.
3. Per mask: points with valid depth, depth outliers removed (median +- ``mad_k`` MADs), then the world
   AABB, the gravity-aligned OBB (``obb_from_points_yaw``) and the centroid. The object's solid is that
   oriented box (``SceneObject.solid == "box"``): its centre, width, depth, height, volume and gaps are the
   box's, as ``datagen.scenes.geometry`` defines them for every source.
4. Descriptions: "the <colour> <label>" (colour named from the mask's pixels), disambiguated by position
   ("the leftmost red chair", ...) when repeated, ranked by box centre like every "left of" answer. An
   image with no detections yields a Scene with no objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from spatialboost.datagen.real.perception.colors import dominant_color
from spatialboost.datagen.scenes.geometry import (
    aabb_from_points,
    camera_to_world,
    obb_from_points_yaw,
    rigid_inverse,
    unproject_depth,
    viewer_frame,
)
from spatialboost.datagen.scenes.scene import Camera, Scene, SceneObject, View


@dataclass
class LiftConfig:
    min_object_points: int = 30  # masks with fewer valid-depth pixels are dropped
    mad_k: float = 3.0  # depth outliers: farther than mad_k * 1.4826 * MAD from the median depth
    max_points_per_object: int = 5000  # random subsample (seeded) before the box fit
    floor_ransac_iters: int = 200
    floor_inlier_m: float = 0.03  # RANSAC inlier distance, metres
    floor_min_fraction: float = 0.15  # of the non-object points, to accept a floor
    floor_sample: int = 8000  # non-object points used for the fit
    max_floor_tilt_deg: float = 45.0  # floor normal vs the camera's image-up direction
    min_camera_height_m: float = 0.1  # the camera must be above the floor by this much
    seed: int = 0


@dataclass
class Plane:
    normal: np.ndarray  # (3,) unit, pointing to the camera side
    offset: float  # normal . p + offset = 0 on the plane
    inlier_fraction: float


@dataclass
class LiftedObject:
    """A mask turned into 3D before it becomes a SceneObject (also used by multi-view fusion)."""

    label: str
    points_world: np.ndarray  # (M, 3)
    color: str | None
    score: float = 1.0
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- floor


def fit_plane_ransac(
    points: np.ndarray, up_hint: np.ndarray, cfg: LiftConfig, rng: np.random.Generator
) -> Plane | None:
    """Largest plane among points (N, 3) whose normal is within the tilt limit of ``up_hint``; None if none."""
    if len(points) < 3:
        return None
    if len(points) > cfg.floor_sample:
        points = points[rng.choice(len(points), cfg.floor_sample, replace=False)]
    up = np.asarray(up_hint, np.float64) / np.linalg.norm(up_hint)
    cos_tilt = np.cos(np.radians(cfg.max_floor_tilt_deg))
    best: tuple[int, np.ndarray, float] | None = None
    for _ in range(cfg.floor_ransac_iters):
        a, b, c = points[rng.choice(len(points), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-9:
            continue
        n = n / norm
        n = n if n @ up >= 0 else -n
        if n @ up < cos_tilt:
            continue
        d = -n @ a
        count = int((np.abs(points @ n + d) < cfg.floor_inlier_m).sum())
        if best is None or count > best[0]:
            best = (count, n, d)
    if best is None:
        return None
    count, n, d = best
    inliers = points[np.abs(points @ n + d) < cfg.floor_inlier_m]
    n, d = _refine_plane(inliers, n)
    return Plane(n, d, count / len(points))


def _refine_plane(inliers: np.ndarray, n0: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane through inliers (K, 3), normal oriented like n0."""
    centre = inliers.mean(0)
    n = np.linalg.svd(inliers - centre, full_matrices=False)[2][-1]
    n = n if n @ n0 >= 0 else -n
    return n, float(-n @ centre)


def gravity_frame(
    points: np.ndarray, up_hint: np.ndarray, origin_hint: np.ndarray, right_hint: np.ndarray,
    cfg: LiftConfig, rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:  # fmt: skip
    """(4, 4) transform from the points' frame to a z-up world with the floor at z = 0, and what was assumed.

    ``up_hint``/``right_hint``/``origin_hint`` are in the points' frame (for one camera: -y, +x, its centre).
    """
    plane = fit_plane_ransac(points, up_hint, cfg, rng)
    height = None if plane is None else float(plane.normal @ origin_hint + plane.offset)
    if plane is None or plane.inlier_fraction < cfg.floor_min_fraction or height < cfg.min_camera_height_m:
        up = np.asarray(up_hint, np.float64) / np.linalg.norm(up_hint)
        T = _frame_from_axes(up, right_hint, origin_hint)
        info = {
            "frame": "camera",
            "assumption": "no floor found: world z-up taken as the camera's image-up (a level camera); "
            "origin at the camera, heights are relative to it",
        }
        if plane is not None:
            info["floor_candidate_fraction"] = round(plane.inlier_fraction, 4)
        return T, info
    foot = origin_hint - height * plane.normal  # the camera's foot point on the floor
    T = _frame_from_axes(plane.normal, right_hint, foot)
    return T, {
        "frame": "floor",
        "floor_inlier_fraction": round(plane.inlier_fraction, 4),
        "camera_height_m": height,
    }


def _frame_from_axes(up: np.ndarray, right_hint: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """(4, 4) old -> new transform; new +z = up, +x = right_hint made orthogonal to up, origin at ``origin``."""
    ez = up / np.linalg.norm(up)
    ex = right_hint - (right_hint @ ez) * ez
    ex = ex / np.linalg.norm(ex)
    ey = np.cross(ez, ex)
    R = np.stack([ex, ey, ez])  # rows: new axes in old coordinates
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ origin
    return T


# ----------------------------------------------------------------------------------------------- objects


def clean_object_points(points_cam: np.ndarray, cfg: LiftConfig, rng: np.random.Generator) -> np.ndarray:
    """Drop depth outliers (median +- mad_k robust sigmas along camera z) and subsample; (M, 3) -> (M', 3)."""
    z = points_cam[:, 2]
    med = np.median(z)
    sigma = 1.4826 * np.median(np.abs(z - med)) + 1e-6
    points_cam = points_cam[np.abs(z - med) <= cfg.mad_k * sigma + 0.01]
    if len(points_cam) > cfg.max_points_per_object:
        points_cam = points_cam[rng.choice(len(points_cam), cfg.max_points_per_object, replace=False)]
    return points_cam


def scene_object(obj_id: int, lifted: LiftedObject, description: str) -> SceneObject:
    """A SceneObject with world AABB, gravity-aligned OBB and centroid from the object's world points."""
    p = lifted.points_world
    lo, hi = aabb_from_points(p)
    center, extent, rotation = obb_from_points_yaw(_box_support(p))
    return SceneObject(
        id=obj_id,
        name=lifted.label,
        description=description,
        color=lifted.color,
        centroid=p.mean(0),
        aabb_min=lo,
        aabb_max=hi,
        obb_center=center,
        obb_extent=extent,
        obb_rotation=rotation,
        attributes={"score": round(float(lifted.score), 4), "num_points": len(p), **lifted.extra},
    )


def _box_support(p: np.ndarray) -> np.ndarray:
    """The points that decide a gravity-aligned box: the xy convex-hull vertices and the z extremes.

    ``obb_from_points_yaw`` only depends on these, and its pure-Python hull is slow on thousands of points.
    """
    try:
        idx = ConvexHull(p[:, :2]).vertices
    except (QhullError, ValueError):  # collinear or too few points: keep them all
        return p
    return p[np.r_[idx, p[:, 2].argmin(), p[:, 2].argmax()]]


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def describe(objects: Sequence[LiftedObject], cam_to_world: np.ndarray) -> list[str]:
    """Unique referring expressions: "the red chair", repeated ones ranked left to right in the viewer frame.

    Ranked by the oriented box centre, the "centre" every relation uses (not the points' centroid, which a
    partly seen object drags toward its visible side), so "the chair on the left" is left of the other.
    """
    base = [f"the {o.color} {o.label}" if o.color else f"the {o.label}" for o in objects]
    to_viewer = viewer_frame(cam_to_world)
    centres = [obb_from_points_yaw(_box_support(o.points_world))[0] for o in objects]
    xs = [float((to_viewer[:3, :3] @ c + to_viewer[:3, 3])[0]) for c in centres]
    out = list(base)
    for name in set(base):
        group = [i for i, b in enumerate(base) if b == name]
        if len(group) < 2:
            continue
        noun = name.removeprefix("the ")
        for rank, i in enumerate(sorted(group, key=lambda i: xs[i])):
            if len(group) == 2:
                out[i] = f"the {noun} on the {'left' if rank == 0 else 'right'}"
            elif rank in (0, len(group) - 1):
                out[i] = f"the {'leftmost' if rank == 0 else 'rightmost'} {noun}"
            else:
                out[i] = f"the {_ORDINALS[min(rank, 9)]} {noun} from the left"
    return out


def instance_map(masks: np.ndarray, keep: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 instance map: mask keep[j] gets id j + 1; smaller masks are painted last (stay on top)."""
    inst = np.zeros(shape, np.int32)
    order = sorted(range(len(keep)), key=lambda j: -int(masks[keep[j]].sum()))
    for j in order:
        inst[masks[keep[j]]] = j + 1
    return inst


# ----------------------------------------------------------------------------------------------- one view


def lift_view(
    rgb: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[str],
    scores: Sequence[float] | None = None,
    scene_id: str = "image",
    cfg: LiftConfig | None = None,
    meta: dict | None = None,
) -> Scene:
    """One RGB image (H, W, 3) + z-depth (H, W) metres + K (3, 3) + masks (N, H, W) -> a gravity-aligned Scene."""
    cfg = cfg or LiftConfig()
    rng = np.random.default_rng(cfg.seed)
    h, w = depth.shape
    masks = np.asarray(masks, bool).reshape(-1, h, w)
    scores = list(scores) if scores is not None else [1.0] * len(masks)
    valid = np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, 0).astype(np.float32)
    points_cam = unproject_depth(depth, K)  # (H, W, 3)
    background = valid & ~masks.any(0)
    world_from_cam, frame_info = gravity_frame(
        points_cam[background], np.array([0.0, -1.0, 0.0]), np.zeros(3), np.array([1.0, 0.0, 0.0]), cfg, rng
    )
    cam_to_world = world_from_cam
    lifted, keep, dropped = [], [], []
    for i, m in enumerate(masks):
        pts = points_cam[m & valid]
        pts = clean_object_points(pts, cfg, rng) if len(pts) else pts
        if len(pts) < cfg.min_object_points:
            dropped.append(
                {"label": labels[i], "reason": f"{len(pts)} valid 3D points < {cfg.min_object_points}"}
            )
            continue
        color = dominant_color(rgb, m)
        lifted.append(LiftedObject(labels[i], camera_to_world(pts, cam_to_world), color, float(scores[i])))
        keep.append(i)
    objects = [
        scene_object(j + 1, o, d)
        for j, (o, d) in enumerate(zip(lifted, describe(lifted, cam_to_world), strict=True))
    ]
    instance = instance_map(masks, keep, (h, w))
    for o in objects:
        o.visible_pixels = [int((instance == o.id).sum())]
    classes = ["void", *sorted({o.name for o in objects})]
    semantic = np.zeros((h, w), np.uint8)
    for o in objects:
        semantic[instance == o.id] = classes.index(o.name)
    view = View(rgb=rgb, camera=Camera(np.asarray(K, np.float64), cam_to_world, w, h), depth=depth,
                instance=instance, semantic=semantic)  # fmt: skip
    info = {**(meta or {}), **frame_info, "dropped_detections": dropped, "lifting": {"seed": cfg.seed}}
    return Scene(scene_id, [view], objects, classes, source="images", meta=info)


def world_points_of_view(view: View) -> np.ndarray:
    """All valid world points (M, 3) of a view (for checks and viewers)."""
    pts = unproject_depth(view.depth, view.camera.K)[view.depth > 0]
    return camera_to_world(pts, view.camera.cam_to_world)


__all__ = [
    "LiftConfig",
    "LiftedObject",
    "Plane",
    "describe",
    "fit_plane_ransac",
    "gravity_frame",
    "lift_view",
    "rigid_inverse",
    "scene_object",
]

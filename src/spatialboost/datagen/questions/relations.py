"""The scene graph: named, pure geometry functions that turn a ``Scene`` into spatial facts.

Every answer in a conversation comes from one function here, recorded as a *fact*
``{"fn": name, "args": {...}, "value": ..., "label": ...}`` so the validator can recompute it from the
ground truth. Conventions are those of ``datagen.scenes.geometry`` (metres; world +z up; OpenCV camera frame;
pixels ``(x, y)`` = (column, row), origin top-left).

Viewer-relative relations ("left of", "in front of", "above") are decided in the gravity-aligned
**viewer frame** of a view (+x right, +y forward horizontal, +z up; ``geometry.viewer_frame``). What is
measured follows the definitions in ``datagen.scenes.geometry`` ("Objects"): positions and distances from the
oriented box centre; width, depth, height, bottom/top, volume and gaps from the object's solid
(``datagen.scenes.solids``), so a round object is as wide as its diameter from every side and a gap does not
depend on how the room is turned. Every comparison has an explicit margin: inside it the
decision is ``"about the same"`` (sizes) or ``None`` (directions: unanswerable, the template skips it),
never a guess. "Left" additionally requires the objects' image columns to agree, so that a 3D decision
never contradicts what the image shows.

A ``Decision`` is ``(value, label)``: ``value`` the measured quantity (float, or a list for vectors/ids),
``label`` the verbal outcome (``"left"``, ``"first"``, ...), ``"metric"`` for a plain measurement, or
``None`` when the question cannot be answered without guessing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spatialboost.datagen.scenes import solids
from spatialboost.datagen.scenes.geometry import transform_points, viewer_frame
from spatialboost.datagen.scenes.scene import Scene
from spatialboost.registry import Registry

METRIC = "metric"  # label of a plain measurement
SAME = "about the same"


@dataclass(frozen=True)
class Margins:
    """Near-tie margins: inside them a relation is "about the same" or unanswerable."""

    lateral: float = 0.10  # metres, left/right of box centres
    depth: float = 0.15  # metres, in front/behind (viewer forward of box centres)
    vertical: float = 0.02  # metres, tolerated overlap for above/below
    height_rel: float = 0.10  # relative, taller/shorter
    volume_rel: float = 0.25  # relative, bigger/smaller
    point_depth: float = 0.05  # metres, which of two points is closer
    view_distance: float = 0.10  # metres, in which view an object is closer
    image_column: float = 2.0  # pixels, left/right must agree with the image by this much


MARGINS = Margins()


@dataclass(frozen=True)
class Decision:
    value: Any  # float, or list of floats / ints
    label: str | None  # verbal outcome; METRIC for a measurement; None = unanswerable

    @property
    def ok(self) -> bool:
        return self.label is not None


@dataclass
class _ViewCache:
    world_to_viewer: np.ndarray  # (4, 4)
    width: dict[int, float] = field(default_factory=dict)  # extent of the solid along viewer x, metres
    depth: dict[int, float] = field(default_factory=dict)  # along viewer forward y, metres
    center: dict[int, np.ndarray] = field(default_factory=dict)  # (3,) viewer frame, OBB centre
    column: dict[int, float] = field(default_factory=dict)  # image column of the OBB centre, nan behind
    distance: dict[int, float] = field(default_factory=dict)  # camera centre -> OBB centre, metres
    pixels: dict[int, tuple[np.ndarray, np.ndarray]] | None = None  # id -> (xs, ys) with valid depth
    visible: list[int] | None = None  # sorted ids of the objects seen in the view (``SceneGraph.visible``)
    by_distance: list[tuple[float, int]] | None = None  # (distance, id) of the visible objects, ascending


class SceneGraph:
    """Per-scene precomputation shared by every relation and template (built once, read many times)."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.objects = {o.id: o for o in scene.objects}
        self.solids = {o.id: solids.Solid.of(o) for o in scene.objects}
        self.volume = {i: solids.volume(s) for i, s in self.solids.items()}  # cubic metres
        self.span = {i: solids.span(s, _UP) for i, s in self.solids.items()}  # (bottom, top) heights, metres
        self._gaps: dict[tuple[int, int], float] = {}
        self._views = [self._build_view(k) for k in range(len(scene.views))]

    @property
    def num_views(self) -> int:
        return len(self._views)

    def _build_view(self, k: int) -> _ViewCache:
        cam = self.scene.views[k].camera
        vc = _ViewCache(world_to_viewer=viewer_frame(cam.cam_to_world))
        world_to_cam = np.linalg.inv(cam.cam_to_world)
        right, forward = vc.world_to_viewer[0, :3], vc.world_to_viewer[1, :3]  # viewer axes in world
        for o in self.scene.objects:
            vc.width[o.id] = solids.extent_along(self.solids[o.id], right)
            vc.depth[o.id] = solids.extent_along(self.solids[o.id], forward)
            vc.center[o.id] = transform_points(o.obb_center, vc.world_to_viewer)
            vc.distance[o.id] = float(np.linalg.norm(vc.center[o.id]))
            pc = transform_points(o.obb_center, world_to_cam)
            vc.column[o.id] = float(cam.K[0, 0] * pc[0] / pc[2] + cam.K[0, 2]) if pc[2] > 1e-6 else math.nan
        return vc

    def gap(self, a: int, b: int) -> float:
        """Distance between the closest points of A's and B's solids (metres), computed once per pair."""
        key = (min(a, b), max(a, b))
        if key not in self._gaps:
            self._gaps[key] = solids.gap(self.solids[key[0]], self.solids[key[1]])
        return self._gaps[key]

    def view(self, k: int) -> _ViewCache:
        return self._views[k]

    def object_pixels(self, k: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Pixels (xs, ys) of each object seen in view ``k`` with a valid depth (empty without maps)."""
        vc = self._views[k]
        if vc.pixels is None:
            vc.pixels = _group_pixels(self.scene.views[k].instance, self.scene.views[k].depth)
        return vc.pixels

    def visible(self, k: int) -> list[int]:
        """Ids of objects visible in view ``k`` (instance map if any, else ``visible_pixels``, else all).

        Computed once per view; the list is shared, callers must not modify it.
        """
        vc = self._views[k]
        if vc.visible is None:
            vc.visible = self._visible(k)
        return vc.visible

    def _visible(self, k: int) -> list[int]:
        view = self.scene.views[k]
        if view.instance is not None:
            return sorted(self.object_pixels(k))
        out = []
        for o in self.scene.objects:
            if len(o.visible_pixels) <= k or o.visible_pixels[k] > 0:
                out.append(o.id)
        return out

    def by_distance(self, k: int) -> list[tuple[float, int]]:
        """(camera distance, id) of the objects visible in view ``k``, nearest first (shared list)."""
        vc = self._views[k]
        if vc.by_distance is None:
            vc.by_distance = sorted((vc.distance[i], i) for i in self.visible(k))
        return vc.by_distance


def _group_pixels(
    instance: np.ndarray | None, depth: np.ndarray | None
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    if instance is None:
        return {}
    mask = instance > 0
    if depth is not None:
        mask &= depth > 0
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return {}
    ids = instance[ys, xs]
    order = np.argsort(ids, kind="stable")
    ids, xs, ys = ids[order], xs[order], ys[order]
    uniq, starts = np.unique(ids, return_index=True)
    bounds = [*starts[1:], len(ids)]
    return {int(i): (xs[s:e], ys[s:e]) for i, s, e in zip(uniq, starts, bounds, strict=True)}


FACTS: Registry[Callable[..., Decision]] = Registry("fact function")
_UP = np.array([0.0, 0.0, 1.0])


def _r(x: float) -> float:
    return round(float(x), 4)


# ----------------------------------------------------------------------------------------------- pixel level


@FACTS.register("depth_at")
def depth_at(g: SceneGraph, view: int, x: int, y: int) -> Decision:
    """Metric z-depth (metres) at pixel (x, y); unanswerable where the depth is invalid or missing."""
    depth = g.scene.views[view].depth
    if depth is None:
        return Decision(None, None)
    d = float(depth[y, x])
    return Decision(_r(d), METRIC if d > 0 else None)


@FACTS.register("closer_point")
def closer_point(g: SceneGraph, view: int, x1: int, y1: int, x2: int, y2: int) -> Decision:
    """Which of two pixels is closer to the camera: value = depth1 - depth2; label "first"/"second"."""
    a, b = depth_at(g, view, x1, y1), depth_at(g, view, x2, y2)
    if not (a.ok and b.ok):
        return Decision(None, None)
    diff = a.value - b.value
    margin = max(MARGINS.point_depth, 0.03 * min(a.value, b.value))
    label = None if abs(diff) <= margin else ("first" if diff < 0 else "second")
    return Decision(_r(diff), label)


@FACTS.register("point_3d")
def point_3d(g: SceneGraph, view: int, x: int, y: int) -> Decision:
    """Camera-frame 3D position [X right, Y down, Z forward] (metres) of pixel (x, y)'s surface point."""
    d = depth_at(g, view, x, y)
    if not d.ok:
        return Decision(None, None)
    K = g.scene.views[view].camera.K
    z = float(g.scene.views[view].depth[y, x])
    X = (x + 0.5 - K[0, 2]) / K[0, 0] * z
    Y = (y + 0.5 - K[1, 2]) / K[1, 1] * z
    return Decision([_r(X), _r(Y), _r(z)], METRIC)


@FACTS.register("instance_at")
def instance_at(g: SceneGraph, view: int, x: int, y: int) -> Decision:
    """Object id seen at pixel (x, y) of a view; unanswerable on background or without an instance map."""
    inst = g.scene.views[view].instance
    if inst is None:
        return Decision(None, None)
    k = int(inst[y, x])
    return Decision(k, METRIC if k > 0 else None)


# ----------------------------------------------------------------------------------------------- object level


@FACTS.register("left_right")
def left_right(g: SceneGraph, view: int, a: int, b: int) -> Decision:
    """Is A left or right of B, seen from the view? value = viewer x(A) - x(B) of box centres (metres).

    Decided only when the lateral offset exceeds the margin *and* the centres' image columns agree.
    """
    vc = g.view(view)
    dx = float(vc.center[a][0] - vc.center[b][0])
    dcol = vc.column[a] - vc.column[b]
    if abs(dx) <= MARGINS.lateral or not abs(dcol) > MARGINS.image_column or (dx > 0) != (dcol > 0):
        return Decision(_r(dx), None)
    return Decision(_r(dx), "right" if dx > 0 else "left")


@FACTS.register("front_behind")
def front_behind(g: SceneGraph, view: int, a: int, b: int) -> Decision:
    """Is A in front of (closer to the viewer than) or behind B? value = viewer y(A) - y(B) (metres)."""
    vc = g.view(view)
    dy = float(vc.center[a][1] - vc.center[b][1])
    if abs(dy) <= MARGINS.depth:
        return Decision(_r(dy), None)
    return Decision(_r(dy), "in front of" if dy < 0 else "behind")


@FACTS.register("above_below")
def above_below(g: SceneGraph, a: int, b: int) -> Decision:
    """Is A above or below B? Only decided when the solids are separated vertically (overlap <= margin).

    value = mid-height(A) - mid-height(B) (metres), from the solids' bottom and top heights.
    """
    (a_lo, a_hi), (b_lo, b_hi) = g.span[a], g.span[b]
    dz = 0.5 * (a_lo + a_hi - b_lo - b_hi)
    if a_lo >= b_hi - MARGINS.vertical:
        return Decision(_r(dz), "above")
    if a_hi <= b_lo + MARGINS.vertical:
        return Decision(_r(dz), "below")
    return Decision(_r(dz), None)


@FACTS.register("vertical_span")
def vertical_span(g: SceneGraph, a: int) -> Decision:
    """[bottom, top] heights of A's solid (metres, world z)."""
    lo, hi = g.span[a]
    return Decision([_r(lo), _r(hi)], METRIC)


@FACTS.register("object_volume")
def object_volume(g: SceneGraph, a: int) -> Decision:
    """Volume of A's solid (cubic metres)."""
    return Decision(_r(g.volume[a]), METRIC)


@FACTS.register("bigger_smaller")
def bigger_smaller(g: SceneGraph, a: int, b: int) -> Decision:
    """Is A bigger or smaller than B (volume of the solids)? value = volume(A) / volume(B)."""
    va, vb = g.volume[a], g.volume[b]
    ratio = va / max(vb, 1e-12)
    if abs(math.log(max(ratio, 1e-12))) <= math.log1p(MARGINS.volume_rel):
        return Decision(_r(ratio), SAME)
    return Decision(_r(ratio), "bigger" if ratio > 1 else "smaller")


@FACTS.register("taller_shorter")
def taller_shorter(g: SceneGraph, a: int, b: int) -> Decision:
    """Is A taller or shorter than B (vertical extent)? value = height(A) - height(B) (metres)."""
    ha, hb = object_height(g, a).value, object_height(g, b).value
    diff = ha - hb
    if abs(diff) <= MARGINS.height_rel * max(ha, hb):
        return Decision(_r(diff), SAME)
    return Decision(_r(diff), "taller" if diff > 0 else "shorter")


# ----------------------------------------------------------------------------------------------- scene level


@FACTS.register("center_distance")
def center_distance(g: SceneGraph, a: int, b: int) -> Decision:
    """Euclidean distance between the centres of A's and B's oriented boxes (metres)."""
    d = float(np.linalg.norm(g.objects[a].obb_center - g.objects[b].obb_center))
    return Decision(_r(d), METRIC)


@FACTS.register("surface_distance")
def surface_distance(g: SceneGraph, a: int, b: int) -> Decision:
    """Distance between the closest points of A's and B's solids (metres, 0 if they touch)."""
    return Decision(_r(g.gap(a, b)), METRIC)


@FACTS.register("object_width")
def object_width(g: SceneGraph, view: int, a: int) -> Decision:
    """Width of A as seen from the view: extent of its solid along viewer x (metres)."""
    return Decision(_r(g.view(view).width[a]), METRIC)


@FACTS.register("object_depth")
def object_depth(g: SceneGraph, view: int, a: int) -> Decision:
    """Depth of A as seen from the view: extent of its solid along viewer forward y (metres)."""
    return Decision(_r(g.view(view).depth[a]), METRIC)


@FACTS.register("object_height")
def object_height(g: SceneGraph, a: int) -> Decision:
    """Height of A: vertical extent of its solid (metres)."""
    lo, hi = g.span[a]
    return Decision(_r(hi - lo), METRIC)


@FACTS.register("object_count")
def object_count(g: SceneGraph, view: int) -> Decision:
    """Number of objects visible in the view."""
    return Decision(len(g.visible(view)), METRIC)


@FACTS.register("closest_object")
def closest_object(g: SceneGraph, view: int) -> Decision:
    """Visible object whose box centre is nearest to the camera: value = [id, distance, runner-up distance].

    Unanswerable when fewer than two objects are visible or the runner-up is within the depth margin.
    """
    return _extreme_object(g, view, nearest=True)


@FACTS.register("farthest_object")
def farthest_object(g: SceneGraph, view: int) -> Decision:
    """Visible object whose box centre is farthest from the camera: value = [id, distance, runner-up]."""
    return _extreme_object(g, view, nearest=False)


def _extreme_object(g: SceneGraph, view: int, nearest: bool) -> Decision:
    dist = g.by_distance(view)
    if len(dist) < 2:
        return Decision(None, None)
    (d0, best), (d1, _) = (dist[0], dist[1]) if nearest else (dist[-1], dist[-2])
    label = METRIC if abs(d1 - d0) > MARGINS.depth else None
    return Decision([best, _r(d0), _r(d1)], label)


@FACTS.register("left_to_right")
def left_to_right(g: SceneGraph, view: int) -> Decision:
    """Visible object ids ordered left to right; unanswerable if any neighbours are a lateral near-tie."""
    ids = g.visible(view)
    if len(ids) < 2:
        return Decision(None, None)
    ordered = sorted(ids, key=lambda i: (g.view(view).center[i][0], i))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if left_right(g, view, a, b).label != "left":
            return Decision(ordered, None)
    return Decision(ordered, METRIC)


# ----------------------------------------------------------------------------------------------- multi-view


def camera_distance(g: SceneGraph, view: int, a: int) -> float:
    """Distance (metres) from the view's camera centre to A's box centre."""
    return g.view(view).distance[a]


@FACTS.register("closer_view")
def closer_view(g: SceneGraph, a: int, v1: int, v2: int) -> Decision:
    """In which of two views is A closer to the camera? value = dist(v1) - dist(v2); label "first"/"second"."""
    diff = camera_distance(g, v1, a) - camera_distance(g, v2, a)
    if abs(diff) <= MARGINS.view_distance:
        return Decision(_r(diff), None)
    return Decision(_r(diff), "first" if diff < 0 else "second")


@FACTS.register("camera_motion")
def camera_motion(g: SceneGraph, v1: int, v2: int) -> Decision:
    """Camera centre of view v2 in view v1's viewer frame: [right, forward, up] (metres)."""
    t2 = g.scene.views[v2].camera.cam_to_world[:3, 3]
    p = transform_points(t2, g.view(v1).world_to_viewer)
    return Decision([_r(p[0]), _r(p[1]), _r(p[2])], METRIC)


@FACTS.register("visible_pixels")
def visible_pixels(g: SceneGraph, view: int, a: int) -> Decision:
    """Number of pixels of A seen (with valid depth) in the view."""
    px = g.object_pixels(view).get(a)
    return Decision(0 if px is None else len(px[0]), METRIC)


def recompute(g: SceneGraph, fact: dict[str, Any]) -> Decision:
    """Recompute a recorded fact from the ground truth."""
    return FACTS.get(fact["fn"])(g, **fact["args"])


def values_match(a: Any, b: Any, tol: float = 1e-3) -> bool:
    """Equality of recorded and recomputed fact values (floats within ``tol``, lists elementwise)."""
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        if not (isinstance(a, list | tuple) and isinstance(b, list | tuple)) or len(a) != len(b):
            return False
        return all(values_match(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) <= tol
    return a == b

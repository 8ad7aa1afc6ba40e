"""Procedural synthetic 3D scenes with exact ground truth: the embedded default data source.

A scene is an indoor-like room (checkered floor at z = 0, four walls) holding 3-8 primitive objects (box,
sphere, cylinder, cone, pyramid, torus) with colour names, size words and yaw poses, each resting on the
floor or stacked on a box/cylinder top, never interpenetrating (rejection sampling on footprint circles).
V pinhole cameras (same intrinsics) orbit the scene centre and look at it; ``datagen.scenes.render`` rasterises
RGB, z-depth, instance and semantic maps per view. Frames and units follow ``datagen.scenes.geometry``.

``generate_scene(seed, cfg)`` is a pure function of its inputs: it draws from ``np.random.default_rng(seed)``
only, so the same (seed, cfg) gives byte-identical arrays in any process and any worker order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spatialboost.config import ConfigError, to_dict
from spatialboost.datagen.scenes import geometry as geo
from spatialboost.datagen.scenes.render import MATERIAL_CHECKER, DrawItem, Light, get_renderer
from spatialboost.datagen.scenes.scene import Camera, Scene, SceneObject, View

OBJECT_CLASSES: tuple[str, ...] = ("box", "sphere", "cylinder", "cone", "pyramid", "torus")
SEMANTIC_CLASSES: list[str] = ["void", "floor", "wall", *OBJECT_CLASSES]
FLOOR_ID, WALL_ID = SEMANTIC_CLASSES.index("floor"), SEMANTIC_CLASSES.index("wall")

# Object colours: saturated, far from each other and from the floor/wall tones. Linear RGB in [0, 1].
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.09),
    "orange": (0.96, 0.48, 0.06),
    "yellow": (0.95, 0.85, 0.12),
    "green": (0.14, 0.66, 0.20),
    "cyan": (0.08, 0.76, 0.82),
    "blue": (0.12, 0.24, 0.88),
    "purple": (0.52, 0.18, 0.72),
    "pink": (0.96, 0.46, 0.72),
}
FLOOR_TONES = (
    (0.62, 0.55, 0.45),
    (0.42, 0.36, 0.30),
    (0.70, 0.70, 0.68),
    (0.50, 0.50, 0.52),
    (0.56, 0.47, 0.36),
)
WALL_TONES = ((0.80, 0.78, 0.72), (0.72, 0.76, 0.78), (0.78, 0.74, 0.80), (0.70, 0.72, 0.66))
BACKGROUND = (0.08, 0.08, 0.10)  # void (above the walls): depth 0, semantic "void"

# Size words by the object's largest dimension (metres); the gaps keep the words unambiguous.
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.16, 0.26),
    "medium": (0.30, 0.44),
    "large": (0.50, 0.70),
}
CENTROID_HEIGHT = {"cone": 0.25, "pyramid": 0.25}  # fraction of the height above the base; others 0.5
FLAT_TOPS = ("box", "cylinder")  # shapes that can carry a stacked object
ROUND_FOOTPRINT = ("sphere", "cylinder", "cone", "torus")
FOOTPRINT_GAP = 0.04  # metres between footprint circles


@dataclass
class SyntheticConfig:
    """How synthetic scenes are sampled. Lengths in metres, angles in degrees; (lo, hi) are uniform ranges."""

    image_size: int = 224  # square images, pixels
    views: int = 1  # cameras per scene (2-4 for multi-view samples)
    min_objects: int = 3
    max_objects: int = 8
    classes: list[str] = field(default_factory=lambda: list(OBJECT_CLASSES))
    stack_prob: float = 0.25  # chance that an object is stacked on a free box/cylinder top
    placement_radius: float = 1.1  # object footprints lie within this radius of the room centre
    fov_deg: tuple[float, float] = (45.0, 65.0)  # horizontal field of view, shared by the views of a scene
    camera_distance: tuple[float, float] = (1.8, 2.7)  # horizontal distance to the look-at point
    camera_height: tuple[float, float] = (0.9, 1.9)  # camera centre above the floor
    camera_yaw_jitter_deg: tuple[float, float] = (-6.0, 6.0)  # offset of the look direction from the target
    camera_pitch_jitter_deg: tuple[float, float] = (-4.0, 4.0)
    view_yaw_step_deg: tuple[float, float] = (15.0, 40.0)  # multi-view baseline: azimuth step between views
    view_jitter: float = 0.25  # per-view change of camera distance and height, metres (multi-view)
    room_half_size: tuple[float, float] = (4.5, 6.0)  # walls at +-half along x and y
    wall_height: tuple[float, float] = (2.6, 3.4)
    tile_size: tuple[float, float] = (0.35, 0.7)  # floor checker tile, metres
    light_elevation_deg: tuple[float, float] = (35.0, 70.0)
    shadows: bool = True  # hard shadows of the objects on the floor (RGB only; ground truth unchanged)
    tessellation: int = 32  # segments around round meshes
    visibility_margin: float = 0.06  # object centres must project this fraction inside the image border
    camera_tries: int = 32  # rejection-sampling budget for a camera that sees every object centre

    def validate(self) -> None:
        if not 16 <= self.image_size <= 4096:
            raise ConfigError(f"image_size must be in [16, 4096] pixels, got {self.image_size}")
        if not 1 <= self.views <= 8:
            raise ConfigError(f"views must be in [1, 8], got {self.views}")
        if not 1 <= self.min_objects <= self.max_objects <= 12:
            raise ConfigError(
                f"need 1 <= min_objects <= max_objects <= 12, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}"
            )
        unknown = sorted(set(self.classes) - set(OBJECT_CLASSES))
        if not self.classes or unknown or len(set(self.classes)) != len(self.classes):
            raise ConfigError(
                f"classes must be a non-empty list of distinct names from {list(OBJECT_CLASSES)}, got {self.classes}"
            )
        if not 0.0 <= self.stack_prob <= 1.0:
            raise ConfigError(f"stack_prob must be in [0, 1], got {self.stack_prob}")
        for name in (
            "fov_deg",
            "camera_distance",
            "camera_height",
            "camera_yaw_jitter_deg",
            "camera_pitch_jitter_deg",
            "view_yaw_step_deg",
            "room_half_size",
            "wall_height",
            "tile_size",
            "light_elevation_deg",
        ):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"{name}: range ({lo}, {hi}) has lo > hi")
        if not (10.0 <= self.fov_deg[0] and self.fov_deg[1] <= 120.0):
            raise ConfigError(f"fov_deg must lie in [10, 120] degrees, got {self.fov_deg}")
        for name in ("camera_distance", "camera_height", "room_half_size", "wall_height", "tile_size"):
            if getattr(self, name)[0] <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not (5.0 <= self.light_elevation_deg[0] and self.light_elevation_deg[1] <= 90.0):
            raise ConfigError(
                f"light_elevation_deg must lie in [5, 90] degrees, got {self.light_elevation_deg}"
            )
        if self.placement_radius < 0.5:
            raise ConfigError(f"placement_radius must be >= 0.5 m, got {self.placement_radius}")
        reach = self.camera_distance[1] + self.view_jitter + self.placement_radius + 0.3
        if self.room_half_size[0] < reach:
            raise ConfigError(
                f"room_half_size[0]={self.room_half_size[0]} m is too small: cameras reach {reach:.2f} m from the "
                "room centre (camera_distance + view_jitter + placement_radius + 0.3)"
            )
        if self.camera_distance[0] - self.view_jitter < 1.0:
            raise ConfigError(
                "camera_distance[0] - view_jitter must be >= 1 m (cameras must not enter the objects)"
            )
        if not 8 <= self.tessellation <= 128:
            raise ConfigError(f"tessellation must be in [8, 128], got {self.tessellation}")
        if not 0.0 <= self.visibility_margin < 0.5:
            raise ConfigError(f"visibility_margin must be in [0, 0.5), got {self.visibility_margin}")
        if self.camera_tries < 1:
            raise ConfigError(f"camera_tries must be >= 1, got {self.camera_tries}")


# ----------------------------------------------------------------------------------------------- objects


@dataclass
class _Solid:
    """An object as sampled: a unit mesh scaled to ``dims``, yawed, with its base centre at ``base``."""

    shape: str
    color: str
    size: str
    dims: np.ndarray  # (3,) full extents along the object's own axes, metres
    yaw: float  # radians about +z
    base: np.ndarray  # (3,) world, centre of the bottom face
    support: int = 0  # index + 1 of the supporting object, 0 = floor
    carries: bool = False  # something is stacked on it

    @property
    def footprint_radius(self) -> float:
        """Radius of a circle around the xy footprint (metres)."""
        if self.shape in ROUND_FOOTPRINT:
            return 0.5 * float(self.dims[0])
        return 0.5 * float(np.hypot(self.dims[0], self.dims[1]))

    @property
    def top_radius(self) -> float:
        """Radius of the largest circle on its flat top (0 when it has none)."""
        if self.shape not in FLAT_TOPS:
            return 0.0
        return 0.5 * float(min(self.dims[0], self.dims[1]))

    def model(self) -> np.ndarray:
        """(4, 4) unit mesh -> world."""
        M = np.eye(4)
        M[:3, :3] = geo.yaw_rotation(self.yaw) * self.dims[None, :]
        M[:3, 3] = self.base + [0.0, 0.0, 0.5 * self.dims[2]]
        return M


def _sample_dims(shape: str, size: str, rng: np.random.Generator) -> np.ndarray:
    """Full extents (3,) whose largest entry is drawn from the size word's range."""
    s = rng.uniform(*SIZE_RANGES[size])
    if shape == "box":
        d = rng.uniform(0.5, 1.0, 3)
    elif shape == "sphere":
        d = np.ones(3)
    elif shape == "torus":
        d = np.array([1.0, 1.0, 0.3])  # tube radius 0.15 of the diameter: a round tube
    else:  # cylinder, cone, pyramid: (width, depth, height)
        ratio = rng.uniform(0.6, 1.6)  # height / width
        d = np.array([1.0, 1.0, ratio])
        if shape == "pyramid":
            d[1] = rng.uniform(0.7, 1.0)
    return s * d / d.max()


def _sample_solid(shape: str, rng: np.random.Generator, size: str | None = None) -> _Solid:
    size = size or str(rng.choice(list(SIZE_RANGES)))
    color = str(rng.choice(list(COLORS)))
    dims = _sample_dims(shape, size, rng)
    return _Solid(shape, color, size, dims, float(rng.uniform(0.0, 2 * np.pi)), np.zeros(3))


def _place_on_floor(solid: _Solid, placed: list[_Solid], radius: float, rng: np.random.Generator) -> bool:
    """Rejection-sample a floor position whose footprint circle clears every floor object's. In-place."""
    reach = radius - solid.footprint_radius
    floor_objs = [p for p in placed if p.support == 0]
    for _ in range(64):
        r, a = reach * math.sqrt(rng.uniform()), rng.uniform(0.0, 2 * np.pi)
        xy = np.array([r * math.cos(a), r * math.sin(a)])
        if all(
            np.hypot(*(xy - p.base[:2])) >= solid.footprint_radius + p.footprint_radius + FOOTPRINT_GAP
            for p in floor_objs
        ):
            solid.base = np.array([xy[0], xy[1], 0.0])
            return True
    return False


def _place_stacked(solid: _Solid, placed: list[_Solid], rng: np.random.Generator) -> bool:
    """Put ``solid`` on a free flat top whose inscribed circle holds its footprint. In-place."""
    free = [i for i, p in enumerate(placed) if p.top_radius > solid.footprint_radius and not p.carries]
    if not free:
        return False
    i = int(rng.choice(free))
    support = placed[i]
    slack = support.top_radius - solid.footprint_radius
    offset = rng.uniform(-0.5, 0.5, 2) * slack  # stays inside the inscribed circle
    solid.base = support.base + [offset[0], offset[1], float(support.dims[2])]
    solid.support = i + 1
    support.carries = True
    if solid.color == support.color:  # a stacked twin would make "the ... one" ambiguous in 3D
        solid.color = next(c for c in COLORS if c != support.color)
    return True


def _sample_objects(cfg: SyntheticConfig, rng: np.random.Generator) -> list[_Solid]:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    placed: list[_Solid] = []
    for _ in range(n):
        shape = str(rng.choice(cfg.classes))
        stack = rng.uniform() < cfg.stack_prob
        solid = _sample_solid(shape, rng, size="small" if stack else None)
        if stack and _place_stacked(solid, placed, rng):
            placed.append(solid)
            continue
        if not _place_on_floor(solid, placed, cfg.placement_radius, rng):
            solid = _sample_solid(shape, rng, size="small")  # crowded: retry smaller
            if not _place_on_floor(solid, placed, cfg.placement_radius, rng):
                continue
        placed.append(solid)
    return placed


# ----------------------------------------------------------------------------------------------- boxes


def _object_boxes(s: _Solid) -> dict[str, np.ndarray]:
    """Exact centroid, AABB and yaw OBB of the solid (not of its tessellated mesh)."""
    h = float(s.dims[2])
    R = geo.yaw_rotation(s.yaw)
    center = s.base + [0.0, 0.0, 0.5 * h]
    if s.shape in ROUND_FOOTPRINT:
        half_xy = np.full(2, 0.5 * s.dims[0])
    else:
        half_xy = 0.5 * (np.abs(R[:2, :2]) @ s.dims[:2])  # rotated rectangle's half extents
    return {
        "centroid": s.base + [0.0, 0.0, CENTROID_HEIGHT.get(s.shape, 0.5) * h],
        "aabb_min": np.array([center[0] - half_xy[0], center[1] - half_xy[1], s.base[2]]),
        "aabb_max": np.array([center[0] + half_xy[0], center[1] + half_xy[1], s.base[2] + h]),
        "obb_center": center,
        "obb_extent": s.dims.copy(),
        "obb_rotation": R,
    }


# ----------------------------------------------------------------------------------------------- cameras


def _camera_pose(
    target: np.ndarray, azimuth: float, distance: float, height: float, yaw_jit: float, pitch_jit: float
) -> np.ndarray:
    """cam_to_world of a camera on a circle around ``target`` looking at it, then turned by the jitters."""
    eye = np.array(
        [target[0] + distance * math.cos(azimuth), target[1] + distance * math.sin(azimuth), height]
    )
    d = target - eye
    yaw = math.atan2(d[1], d[0]) + yaw_jit
    pitch = math.atan2(d[2], math.hypot(d[0], d[1])) + pitch_jit  # negative = looking down
    direction = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    return geo.look_at(eye, eye + direction)


def _centres_inside(points: np.ndarray, K: np.ndarray, T: np.ndarray, size: int, margin: float) -> int:
    """How many world points project inside the image (with ``margin`` * size border) in front of the camera."""
    uv, z = geo.project_points(geo.world_to_camera(points, T), K)
    lo, hi = margin * size, (1.0 - margin) * size
    ok = (z > 0.3) & np.all((uv >= lo) & (uv <= hi), axis=1)
    return int(ok.sum())


def _sample_cameras(
    cfg: SyntheticConfig, points: np.ndarray, target: np.ndarray, K: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """V poses orbiting ``target``; each is rejection-sampled to see every point in ``points`` if it can."""
    azimuth = rng.uniform(0.0, 2 * np.pi)
    direction = 1.0 if rng.uniform() < 0.5 else -1.0
    distance, height = rng.uniform(*cfg.camera_distance), rng.uniform(*cfg.camera_height)
    poses = []
    for v in range(cfg.views):
        if v > 0:
            azimuth += direction * math.radians(rng.uniform(*cfg.view_yaw_step_deg))
        best, best_count = None, -1
        for _ in range(cfg.camera_tries):
            d, h = distance, height
            if v > 0:
                d += rng.uniform(-cfg.view_jitter, cfg.view_jitter)
                h = max(0.3, h + rng.uniform(-cfg.view_jitter, cfg.view_jitter))
            T = _camera_pose(
                target,
                azimuth,
                d,
                h,
                math.radians(rng.uniform(*cfg.camera_yaw_jitter_deg)),
                math.radians(rng.uniform(*cfg.camera_pitch_jitter_deg)),
            )
            count = _centres_inside(points, K, T, cfg.image_size, cfg.visibility_margin)
            if count > best_count:
                best, best_count = T, count
            if count == len(points):
                break
            distance = min(distance + 0.1, cfg.camera_distance[1])  # back off a little and retry
        poses.append(best)
    return poses


# ----------------------------------------------------------------------------------------------- descriptions

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
# axis of the viewer frame -> (two-object words, extremes, "the {ordinal} ... {suffix}")
_POSITION_WORDS = {
    0: (("on the left", "on the right"), ("leftmost", "rightmost"), "from the left"),
    1: (("nearer", "farther"), ("nearest", "farthest"), "from the front"),
    2: (("lower", "upper"), ("lowest", "highest"), "from the bottom"),
}


def _positional(noun: str, rank: int, n: int, axis: int) -> str:
    pair, extremes, suffix = _POSITION_WORDS[axis]
    if n == 2:
        return f"the {noun} {pair[rank]}" if axis == 0 else f"the {pair[rank]} {noun}"
    if rank in (0, n - 1):
        return f"the {extremes[0 if rank == 0 else 1]} {noun}"
    return f"the {_ORDINALS[rank]} {noun} {suffix}"


def describe_objects(solids: list[_Solid], centres_viewer: np.ndarray) -> list[tuple[str, str]]:
    """Unique referring expressions (description, how it was disambiguated) from the first view.

    "the red cylinder"; when colour + class repeat, the size word is added ("the small red cylinder"); when
    that still repeats, a position along the viewer axis that separates the group best ("the leftmost ...",
    "the nearer ...", "the upper ..."), ranked by box centre. ``centres_viewer`` is (N, 3) in the first view's
    viewer frame.
    """
    out: list[tuple[str, str]] = [("", "")] * len(solids)
    by_key: dict[tuple[str, ...], list[int]] = {}
    for i, s in enumerate(solids):
        by_key.setdefault((s.color, s.shape), []).append(i)
    for (color, shape), members in by_key.items():
        if len(members) == 1:
            out[members[0]] = (f"the {color} {shape}", "none")
            continue
        by_size: dict[str, list[int]] = {}
        for i in members:
            by_size.setdefault(solids[i].size, []).append(i)
        for size, group in by_size.items():
            noun = f"{size} {color} {shape}"
            if len(group) == 1:
                out[group[0]] = (f"the {noun}", "size")
                continue
            coords = centres_viewer[group]  # (G, 3)
            gaps = [np.diff(np.sort(coords[:, a])).min() for a in range(3)]
            axis = int(np.argmax(gaps))
            for rank, j in enumerate(np.argsort(coords[:, axis], kind="stable")):
                out[group[j]] = (_positional(noun, rank, len(group), axis), "position")
    return out


# ----------------------------------------------------------------------------------------------- scene


def _room_items(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[list[DrawItem], dict]:
    half, wall_h = rng.uniform(*cfg.room_half_size), rng.uniform(*cfg.wall_height)
    tones = rng.choice(len(FLOOR_TONES), 2, replace=False)
    floor = np.diag([2 * half, 2 * half, 1.0, 1.0])
    items = [
        DrawItem(
            "quad",
            floor,
            FLOOR_TONES[tones[0]],
            0,
            FLOOR_ID,
            MATERIAL_CHECKER,
            FLOOR_TONES[tones[1]],
            float(rng.uniform(*cfg.tile_size)),
        )
    ]
    wall_color = WALL_TONES[int(rng.integers(len(WALL_TONES)))]
    stand_up = np.eye(4)
    stand_up[:3, :3] = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # Rx(90): quad normal +z -> -y
    for k in range(4):  # wall at +y rotated by k * 90 degrees, normal facing the room centre
        turn = np.eye(4)
        turn[:3, :3] = geo.yaw_rotation(k * 0.5 * np.pi)
        place = np.eye(4)
        place[:3, 3] = [0.0, half, 0.5 * wall_h]
        model = turn @ place @ stand_up @ np.diag([2 * half, wall_h, 1.0, 1.0])
        items.append(DrawItem("quad", model, wall_color, 0, WALL_ID))
    return items, {"half_size": float(half), "wall_height": float(wall_h)}


def _light(rng: np.random.Generator, cfg: SyntheticConfig) -> Light:
    az, el = rng.uniform(0.0, 2 * np.pi), math.radians(rng.uniform(*cfg.light_elevation_deg))
    return Light((math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)))


@dataclass
class SceneLayout:
    """Everything sampled for one scene before rendering (a pure function of (seed, cfg))."""

    seed: int
    solids: list[_Solid]
    boxes: list[dict[str, np.ndarray]]  # per solid: centroid, aabb_*, obb_* (world, metres)
    room_items: list[DrawItem]
    room: dict[str, float]
    light: Light
    fov_x: float  # radians
    K: np.ndarray  # (3, 3), shared by the views
    poses: list[np.ndarray]  # V x (4, 4) cam_to_world

    def draw_items(self) -> list[DrawItem]:
        objects = [
            DrawItem(s.shape, s.model(), COLORS[s.color], i + 1, SEMANTIC_CLASSES.index(s.shape))
            for i, s in enumerate(self.solids)
        ]
        return self.room_items + objects


def sample_layout(seed: int, cfg: SyntheticConfig) -> SceneLayout:
    """Objects, room, light and cameras of scene ``seed``; draws from ``default_rng(seed)`` only."""
    cfg.validate()
    rng = np.random.default_rng(seed)
    solids = _sample_objects(cfg, rng)
    boxes = [_object_boxes(s) for s in solids]
    room_items, room = _room_items(rng, cfg)
    light = _light(rng, cfg)
    fov_x = math.radians(rng.uniform(*cfg.fov_deg))
    K = geo.intrinsics_from_fov(cfg.image_size, cfg.image_size, fov_x)
    centres = np.array([b["obb_center"] for b in boxes])
    target = np.array([*centres[:, :2].mean(axis=0), 0.5 * centres[:, 2].mean()])
    poses = _sample_cameras(cfg, centres, target, K, rng)
    return SceneLayout(int(seed), solids, boxes, room_items, room, light, fov_x, K, poses)


def render_layout(layout: SceneLayout, cfg: SyntheticConfig) -> list[View]:
    """Rasterise every view of a layout: RGB, z-depth, instance and semantic maps."""
    items = layout.draw_items()
    renderer = get_renderer(cfg.tessellation)
    size = cfg.image_size
    views = []
    for T in layout.poses:
        floor = layout.room_items[0] if cfg.shadows else None
        out = renderer.render(items, layout.K, T, size, size, layout.light, BACKGROUND, floor)
        camera = Camera(K=layout.K.copy(), cam_to_world=T, width=size, height=size)
        views.append(
            View(rgb=out.rgb, camera=camera, depth=out.depth, instance=out.instance, semantic=out.semantic)
        )
    return views


def assemble_scene(
    layout: SceneLayout, views: list[View], cfg: SyntheticConfig, scene_id: str | None = None
) -> Scene:
    """The ``Scene`` of a rendered layout: objects with descriptions, boxes and per-view visible pixels."""
    n = len(layout.solids)
    visible = [np.bincount(v.instance.ravel(), minlength=n + 1) for v in views]  # index = object id
    centres = np.array([b["obb_center"] for b in layout.boxes])  # "centre" = the oriented box centre
    descriptions = describe_objects(
        layout.solids, geo.transform_points(centres, geo.viewer_frame(layout.poses[0]))
    )
    objects = [
        SceneObject(
            id=i + 1,
            name=s.shape,
            solid=s.shape,
            description=descriptions[i][0],
            color=s.color,
            visible_pixels=[int(c[i + 1]) for c in visible],
            attributes={
                "size": s.size,
                "class_id": SEMANTIC_CLASSES.index(s.shape),
                "yaw": float(s.yaw),
                "supported_by": int(s.support),  # object id it rests on, 0 = floor
                "disambiguation": descriptions[i][1],  # "none" | "size" | "position"
            },
            **layout.boxes[i],
        )
        for i, s in enumerate(layout.solids)
    ]
    meta = {
        "seed": layout.seed,
        "config": to_dict(cfg),
        "generator": "spatialboost.synthetic/2",  # 2: objects record their solid; sizes and gaps from it
        "renderer": get_renderer(cfg.tessellation).backend,
        "fov_x_deg": math.degrees(layout.fov_x),
        "room": layout.room,
        "light_direction": [float(v) for v in layout.light.direction],
        "description_view": 0,  # position words ("the leftmost ...") are from the first view
    }
    return Scene(
        scene_id=scene_id if scene_id is not None else f"synthetic-{layout.seed}",
        views=views,
        objects=objects,
        semantic_classes=list(SEMANTIC_CLASSES),
        source="synthetic",
        meta=meta,
    )


def generate_scene(seed: int, cfg: SyntheticConfig, scene_id: str | None = None) -> Scene:
    """One synthetic scene, a pure function of (seed, cfg): objects, V rendered views and exact 3D facts."""
    layout = sample_layout(seed, cfg)
    return assemble_scene(layout, render_layout(layout, cfg), cfg, scene_id)

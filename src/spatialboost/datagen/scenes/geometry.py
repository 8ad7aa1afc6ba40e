"""Geometry conventions and the pure functions that follow them. Every frame and unit used in SpatialBoost is here.

Units
    Metres for lengths, radians for angles (a config may speak degrees; it converts at its edge).

World frame
    Gravity-aligned and right-handed, **+z up**. When a floor exists it is the plane z = 0. Objects rest on it
    (or on each other); their yaw is a rotation about +z, counter-clockwise seen from above.

Camera frame (OpenCV)
    **+x right, +y down, +z forward** (the looking direction). A pose ``cam_to_world`` is a (4, 4) rigid
    transform with ``p_world = R @ p_cam + t``: its rotation's columns are the camera axes in world
    coordinates and its translation is the camera centre.

Pixels and images
    Arrays are row-major: an image is ``(H, W, 3)``, a per-pixel map ``(H, W)``. A pixel is addressed
    ``(x, y) = (column, row)``, integer indices, origin at the top-left pixel. The continuous image coordinate
    of pixel ``(x, y)``'s centre is ``(x + 0.5, y + 0.5)``; the pixel's area spans ``[x, x + 1) x [y, y + 1)``.
    ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` maps a camera point ``(X, Y, Z)`` to continuous image
    coordinates ``u = fx X / Z + cx``, ``v = fy Y / Z + cy``. A centred camera has ``cx = W / 2, cy = H / 2``.

Depth
    ``depth[y, x]`` is metric **z-depth**: the camera-frame Z of the surface seen through the pixel centre, not the
    length of the ray (ray depth = z-depth * ||K^-1 (u, v, 1)||). float32, metres; ``0`` marks "no measurement"
    (void, sky). Unprojecting pixel (x, y) with depth Z gives ``Z * K^-1 (x + 0.5, y + 0.5, 1)``.

Label maps
    ``instance`` int32 (0 = no object, k = SceneObject.id); ``semantic`` uint8 into ``Scene.semantic_classes``.

Boxes
    Axis-aligned box (world): ``(aabb_min, aabb_max)``, each (3,). Oriented box: ``(center, extent, rotation)``
    with ``extent`` the full side lengths along the box axes and ``rotation``'s columns the box axes in world
    coordinates; gravity-aligned boxes only rotate about +z (yaw), so ``rotation[:, 2] == (0, 0, 1)``.

Viewer frame
    The gravity-aligned frame of a camera, used for every viewer-relative relation ("left of", "in front of"):
    origin at the camera centre, **+x right, +y forward (horizontal), +z up** (world up). ``viewer_frame`` returns
    the (4, 4) world -> viewer transform. "Left" means smaller viewer x, "farther" larger viewer y, "above"
    larger z. It is independent of the camera's pitch and roll, so it never flips with them.

Objects: what every answer measures
    An object is a *solid* (``datagen.scenes.solids``): the primitive ``SceneObject.solid`` (box, sphere, cylinder,
    cone, pyramid, torus) filling its oriented box. Synthetic objects are their exact primitive; objects lifted
    from images are their oriented box (``solid == "box"``). The world AABB is kept for reference; no answer
    uses it, so no answer changes when the whole room is turned.

    - **centre**: the oriented box centre ``obb_center`` (the midpoint of the solid's extents along its own
      axes), for left/right, front/behind, centre distances, camera distances and position words in
      descriptions. Not the centroid (``SceneObject.centroid``, centre of mass or mean of the points, which sits
      lower in a cone and toward the seen side of a partly seen object).
    - **width** / **depth** (seen from a view): the solid's extent along the viewer's +x / horizontal +y; a round
      solid is as wide as its diameter from every side. **height**: its extent along world +z. **bottom** /
      **top** (above/below): its lowest / highest z.
    - **volume**, and so **bigger** / **smaller**: the solid's own volume (a ball of diameter d holds
      ``pi d^3 / 6``, not its box's ``d^3``).
    - **gap** ("closest surfaces"): the distance between the closest points of the two solids (the torus by its
      convex hull, which nothing in our scenes reaches into), 0 when they touch or overlap.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------------------------- intrinsics


def intrinsics_from_fov(width: int, height: int, fov_x: float) -> np.ndarray:
    """(3, 3) K of a centred pinhole with square pixels and horizontal field of view ``fov_x`` (radians)."""
    if not 0.0 < fov_x < np.pi:
        raise ValueError(f"fov_x must be in (0, pi) radians, got {fov_x}")
    f = 0.5 * width / np.tan(0.5 * fov_x)  # pixels
    return np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------- pixels <-> camera


def pixel_centers(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous image coordinates of all pixel centres: u (H, W) = x + 0.5, v (H, W) = y + 0.5."""
    u = np.arange(width, dtype=np.float64) + 0.5
    v = np.arange(height, dtype=np.float64) + 0.5
    return np.broadcast_to(u[None, :], (height, width)), np.broadcast_to(v[:, None], (height, width))


def unproject_pixel(
    x: np.ndarray | float, y: np.ndarray | float, z: np.ndarray | float, K: np.ndarray
) -> np.ndarray:
    """Camera-frame points (..., 3) of integer pixels (x, y) = (column, row) at z-depth ``z`` (metres)."""
    x, y, z = np.broadcast_arrays(
        np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(z, np.float64)
    )
    X = (x + 0.5 - K[0, 2]) / K[0, 0] * z
    Y = (y + 0.5 - K[1, 2]) / K[1, 1] * z
    return np.stack([X, Y, z], axis=-1)


def unproject_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (H, W, 3) of every pixel of a z-depth map (H, W); invalid (0) pixels give (0, 0, 0)."""
    h, w = depth.shape
    u, v = pixel_centers(h, w)
    z = depth.astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)


def project_points(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera points (N, 3) -> continuous image coordinates uv (N, 2) and z-depth (N,). Pixel = floor(uv)."""
    p = np.asarray(points_cam, np.float64).reshape(-1, 3)
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([K[0, 0] * p[:, 0] / z + K[0, 2], K[1, 1] * p[:, 1] / z + K[1, 2]], axis=-1)
    return uv, z


def ray_depth_from_z_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Length of the ray through each pixel centre (H, W) from a z-depth map (H, W); both metres."""
    h, w = depth.shape
    u, v = pixel_centers(h, w)
    scale = np.sqrt(((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2 + 1.0)
    return depth * scale


# ----------------------------------------------------------------------------------------------- rigid transforms


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform (rotation + translation)."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to points (..., 3)."""
    p = np.asarray(points, np.float64)
    return p @ T[:3, :3].T + T[:3, 3]


def camera_to_world(points_cam: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) -> world-frame points (..., 3)."""
    return transform_points(points_cam, cam_to_world)


def world_to_camera(points_world: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """World-frame points (..., 3) -> camera-frame points (..., 3) of the camera with pose ``cam_to_world``."""
    R, t = cam_to_world[:3, :3], cam_to_world[:3, 3]
    return (np.asarray(points_world, np.float64) - t) @ R


def yaw_rotation(yaw: float) -> np.ndarray:
    """(3, 3) rotation by ``yaw`` radians about world +z (counter-clockwise seen from above)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) OpenCV cam_to_world of a camera at ``eye`` looking at ``target`` with no roll w.r.t. ``up``."""
    eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)  # right
    norm = np.linalg.norm(x)
    if norm < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to up")
    x /= norm
    y = np.cross(z, x)  # down
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def viewer_frame(cam_to_world: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) world -> viewer transform: origin at the camera centre, +x right, +y forward (horizontal), +z up."""
    up = np.asarray(up, np.float64)
    up = up / np.linalg.norm(up)
    forward = cam_to_world[:3, 2] - np.dot(cam_to_world[:3, 2], up) * up
    if np.linalg.norm(forward) < 1e-6:  # looking straight down/up: the image's "up" direction is forward
        image_up = -cam_to_world[:3, 1]
        forward = image_up - np.dot(image_up, up) * up
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    viewer_to_world = np.eye(4)
    viewer_to_world[:3, 0], viewer_to_world[:3, 1], viewer_to_world[:3, 2] = right, forward, up
    viewer_to_world[:3, 3] = cam_to_world[:3, 3]
    return rigid_inverse(viewer_to_world)


# ----------------------------------------------------------------------------------------------- point clouds, boxes


def object_point_cloud(
    depth: np.ndarray, instance: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray, obj_id: int
) -> np.ndarray:
    """World points (M, 3) of the pixels of object ``obj_id`` that have a valid depth."""
    ys, xs = np.nonzero((instance == obj_id) & (depth > 0))
    points_cam = unproject_pixel(xs, ys, depth[ys, xs], K)
    return camera_to_world(points_cam, cam_to_world).reshape(-1, 3)


def aabb_from_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box (min (3,), max (3,)) of points (M, 3), M >= 1."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    if len(p) == 0:
        raise ValueError("aabb_from_points: no points")
    return p.min(axis=0), p.max(axis=0)


def obb_from_points_yaw(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gravity-aligned oriented box (center (3,), extent (3,), rotation (3, 3)) of points (M, 3).

    The footprint is the minimum-area rectangle of the points' xy convex hull (rotating calipers); z spans
    the points' height. Canonical form: extent[0] >= extent[1] and the first axis' yaw is in [0, pi).
    """
    p = np.asarray(points, np.float64).reshape(-1, 3)
    if len(p) == 0:
        raise ValueError("obb_from_points_yaw: no points")
    hull = convex_hull_2d(p[:, :2])
    yaw, center_xy, size_xy = _min_area_rectangle(hull)
    if size_xy[1] > size_xy[0]:
        yaw, size_xy = yaw + 0.5 * np.pi, size_xy[::-1]
    yaw = float(np.mod(yaw, np.pi))
    z_lo, z_hi = p[:, 2].min(), p[:, 2].max()
    center = np.array([center_xy[0], center_xy[1], 0.5 * (z_lo + z_hi)])
    extent = np.array([size_xy[0], size_xy[1], z_hi - z_lo])
    return center, extent, yaw_rotation(yaw)


def obb_corners(center: np.ndarray, extent: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The 8 corners (8, 3) of an oriented box."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    return center + (signs * (0.5 * np.asarray(extent))) @ np.asarray(rotation).T


def convex_hull_2d(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise convex hull (H, 2) of 2D points (N, 2) (Andrew's monotone chain)."""
    pts = np.unique(np.asarray(points, np.float64).reshape(-1, 2), axis=0)  # sorted by x, then y
    if len(pts) <= 2:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for q in seq:
            while len(out) >= 2 and _cross(out[-2], out[-1], q) <= 0:
                out.pop()
            out.append(q)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _min_area_rectangle(hull: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(yaw of the first side, centre (2,), side lengths (2,)) of the min-area rectangle around a hull (H, 2)."""
    if len(hull) < 3:
        d = hull[-1] - hull[0]
        yaw = float(np.arctan2(d[1], d[0])) if len(hull) == 2 else 0.0
        angles = np.array([yaw])
    else:
        edges = np.roll(hull, -1, axis=0) - hull
        angles = np.mod(np.arctan2(edges[:, 1], edges[:, 0]), 0.5 * np.pi)
    c, s = np.cos(angles), np.sin(angles)
    # hull expressed in each candidate rectangle's axes: (A, H)
    px = hull[None, :, 0] * c[:, None] + hull[None, :, 1] * s[:, None]
    py = -hull[None, :, 0] * s[:, None] + hull[None, :, 1] * c[:, None]
    lo_x, hi_x, lo_y, hi_y = px.min(1), px.max(1), py.min(1), py.max(1)
    best = int(np.argmin((hi_x - lo_x) * (hi_y - lo_y)))
    mx, my = 0.5 * (lo_x[best] + hi_x[best]), 0.5 * (lo_y[best] + hi_y[best])
    center = np.array([mx * c[best] - my * s[best], mx * s[best] + my * c[best]])
    size = np.array([hi_x[best] - lo_x[best], hi_y[best] - lo_y[best]])
    return float(angles[best]), center, size

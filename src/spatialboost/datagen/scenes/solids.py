"""The solid an object is, and every measurement the answers take from it (definitions in ``datagen.scenes.geometry``).

A ``Solid`` is a unit primitive filling ``[-0.5, 0.5]^3`` (the shapes ``datagen.scenes.render`` draws, here exact
rather than tessellated), scaled by the object's full extents, rotated by its box rotation and centred at its
box centre: world point ``p = center + rotation @ (extent * u)`` for ``u`` in the unit solid. Objects lifted
from images are their oriented box (``kind == "box"``).

Measurements (metres, cubic metres), all invariant to rotating or moving the whole scene:

- ``extent_along(s, axis)``: the solid's extent along a unit direction (width, depth, height).
- ``span(s, axis)``: its lowest and highest coordinate along a direction (bottom and top heights).
- ``volume(s)``: the solid's volume (closed form).
- ``gap(a, b)``: the distance between the closest points of two solids, 0 when they touch or overlap
  (GJK on support functions). The torus is taken by its convex hull (its hole filled); in the synthetic
  scenes nothing reaches into a torus' hole, so the hull's gap is the torus' gap.

Second definitions, used by the validator and tests to re-derive the numbers independently of the support
functions: ``surface_points`` (a parametric sampling of the surface with its covering radius) and
``contains`` (an implicit inside test).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

SOLID_KINDS: tuple[str, ...] = ("box", "sphere", "cylinder", "cone", "pyramid", "torus")
TORUS_MAJOR, TORUS_MINOR = 0.35, 0.15  # unit torus in the xy plane; its z is stretched to fill [-0.5, 0.5]
_TORUS_HALF_Z = 0.5
UNIT_VOLUME = {
    "box": 1.0,
    "sphere": math.pi / 6,
    "cylinder": math.pi / 4,
    "cone": math.pi / 12,
    "pyramid": 1.0 / 3.0,
    "torus": 2 * math.pi**2 * TORUS_MAJOR * TORUS_MINOR * _TORUS_HALF_Z,  # Pappus: 2 pi R * (pi r r_z)
}
_PYRAMID = np.array([[-0.5, -0.5, -0.5], [0.5, -0.5, -0.5], [0.5, 0.5, -0.5], [-0.5, 0.5, -0.5], [0, 0, 0.5]])
_BOX = np.array(list(itertools.product((-0.5, 0.5), repeat=3)))


@dataclass(frozen=True)
class Solid:
    kind: str  # one of SOLID_KINDS
    center: np.ndarray  # (3,) world, metres: the oriented box centre
    extent: np.ndarray  # (3,) full side lengths of its box along the box axes, metres
    rotation: np.ndarray  # (3, 3) columns = box axes in the world frame

    def __post_init__(self) -> None:
        if self.kind not in SOLID_KINDS:
            raise ValueError(f"unknown solid {self.kind!r}; known: {', '.join(SOLID_KINDS)}")

    @classmethod
    def of(cls, obj) -> Solid:
        """The solid of a ``scene.SceneObject``."""
        return cls(obj.solid, np.asarray(obj.obb_center, float), np.asarray(obj.obb_extent, float),
                   np.asarray(obj.obb_rotation, float))  # fmt: skip


# ----------------------------------------------------------------------------------------------- support


def _unit_support(kind: str, e: np.ndarray) -> np.ndarray:
    """The point of the unit solid (its convex hull for the torus) farthest along direction ``e`` (3,)."""
    r_xy = math.hypot(e[0], e[1])
    dir_xy = e[:2] / r_xy if r_xy > 1e-12 else np.array([1.0, 0.0])
    if kind == "box":
        return np.where(e >= 0, 0.5, -0.5)
    if kind == "sphere":
        n = float(np.linalg.norm(e))
        return 0.5 * e / n if n > 1e-12 else np.array([0.0, 0.0, 0.5])
    if kind == "cylinder":
        return np.array([*(0.5 * dir_xy), 0.5 if e[2] >= 0 else -0.5])
    if kind == "cone":
        apex, rim = np.array([0.0, 0.0, 0.5]), np.array([*(0.5 * dir_xy), -0.5])
        return apex if apex @ e >= rim @ e else rim
    if kind == "pyramid":
        return _PYRAMID[int(np.argmax(_PYRAMID @ e))]
    # torus: maximise rho * |e_xy| + z * e_z over the tube's (rho, z) ellipse centred at (R, 0)
    a, b = TORUS_MINOR * r_xy, _TORUS_HALF_Z * e[2]
    n = math.hypot(a, b)
    if n < 1e-12:
        return np.array([*(TORUS_MAJOR * dir_xy), 0.0])
    rho = TORUS_MAJOR + TORUS_MINOR * a / n
    return np.array([*(rho * dir_xy), _TORUS_HALF_Z * b / n])


def support(s: Solid, direction: np.ndarray) -> np.ndarray:
    """World point (3,) of the solid (hull) farthest along a world direction (3,)."""
    e = s.extent * (s.rotation.T @ np.asarray(direction, float))  # the direction in unit coordinates
    return s.center + s.rotation @ (s.extent * _unit_support(s.kind, e))


def span(s: Solid, axis: np.ndarray) -> tuple[float, float]:
    """(lowest, highest) coordinate of the solid along a unit world direction (metres)."""
    axis = np.asarray(axis, float)
    return float(support(s, -axis) @ axis), float(support(s, axis) @ axis)


def extent_along(s: Solid, axis: np.ndarray) -> float:
    """Extent of the solid along a unit world direction (metres): its width, depth or height."""
    lo, hi = span(s, axis)
    return hi - lo


def volume(s: Solid) -> float:
    """Volume of the solid (cubic metres)."""
    return UNIT_VOLUME[s.kind] * float(np.prod(s.extent))


# ----------------------------------------------------------------------------------------------- gap (GJK)


def gap(a: Solid, b: Solid, tol: float = 1e-7, max_iter: int = 100) -> float:
    """Distance (metres) between the closest points of two solids (hulls); 0 when they touch or overlap.

    GJK on the Minkowski difference A - B: ``v`` is the point of the current simplex nearest the origin,
    ``|v|`` an upper bound of the distance and ``v . w / |v|`` (``w`` the support point along ``-v``) a
    lower bound; iterate until they are within ``tol``. (Plain floats: this runs once per gap question.)
    """

    def support_diff(d: tuple[float, ...]) -> tuple[float, ...]:
        pa, pb = support(a, np.array(d)), support(b, -np.array(d))
        return (float(pa[0] - pb[0]), float(pa[1] - pb[1]), float(pa[2] - pb[2]))

    simplex = [support_diff(tuple(b.center - a.center))]
    v = simplex[0]
    for _ in range(max_iter):
        dist = math.sqrt(_dot(v, v))
        if dist <= tol:
            return 0.0
        w = support_diff((-v[0], -v[1], -v[2]))
        if dist - _dot(v, w) / dist <= tol or w in simplex:
            return dist
        simplex, v = _closest_on_simplex([*simplex, w])
    return math.sqrt(_dot(v, v))  # the upper bound; curved shapes converge long before max_iter


def _dot(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    return p[0] * q[0] + p[1] * q[1] + p[2] * q[2]


def _closest_on_simplex(points: list[tuple[float, ...]]) -> tuple[list, tuple[float, ...]]:
    """The smallest face of the simplex (1-4 points) holding its point nearest the origin, and that point."""
    best: tuple[float, list, tuple[float, ...]] | None = None
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            lam = _affine_projection(subset)
            if lam is None or min(lam) < -1e-12:
                continue
            p = tuple(sum(wt * q[i] for wt, q in zip(lam, subset, strict=True)) for i in range(3))
            d = _dot(p, p)
            if best is None or d < best[0] - 1e-18:  # ties keep the smaller face (visited first)
                best = (d, list(subset), p)
    assert best is not None  # a single vertex is always a valid face
    return best[1], best[2]


def _affine_projection(subset: tuple[tuple[float, ...], ...]) -> list[float] | None:
    """Barycentric weights of the origin's projection on the affine hull of the points, None if degenerate."""
    if len(subset) == 1:
        return [1.0]
    p0 = subset[0]
    q = [tuple(p[i] - p0[i] for i in range(3)) for p in subset[1:]]  # k - 1 edge vectors
    G = [[_dot(qi, qj) for qj in q] for qi in q]  # Gram matrix
    r = [-_dot(qi, p0) for qi in q]
    mu = _solve(G, r)
    if mu is None:
        return None
    return [1.0 - sum(mu), *mu]


def _solve(G: list[list[float]], r: list[float]) -> list[float] | None:
    """Solve a 1x1 - 3x3 symmetric positive system by Cramer's rule; None when (nearly) singular."""
    n = len(r)
    det = _det(G)
    scale = max(G[i][i] for i in range(n))
    if scale <= 0 or abs(det) <= 1e-12 * scale**n:
        return None
    out = []
    for j in range(n):
        Gj = [[r[i] if c == j else G[i][c] for c in range(n)] for i in range(n)]
        out.append(_det(Gj) / det)
    return out


def _det(M: list[list[float]]) -> float:
    if len(M) == 1:
        return M[0][0]
    if len(M) == 2:
        return M[0][0] * M[1][1] - M[0][1] * M[1][0]
    return (
        M[0][0] * (M[1][1] * M[2][2] - M[1][2] * M[2][1])
        - M[0][1] * (M[1][0] * M[2][2] - M[1][2] * M[2][0])
        + M[0][2] * (M[1][0] * M[2][1] - M[1][1] * M[2][0])
    )


# ----------------------------------------------------------------------------------------------- second definitions


def _disk(z: float):
    def f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.stack(
            [0.5 * u * np.cos(2 * np.pi * v), 0.5 * u * np.sin(2 * np.pi * v), np.full_like(u, z)], -1
        )

    return f


def _face(axis: int, sign: float):
    def f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        p = np.empty((len(u), 3))
        p[:, axis] = 0.5 * sign
        p[:, (axis + 1) % 3], p[:, (axis + 2) % 3] = u - 0.5, v - 0.5
        return p

    return f


def _triangle(a: np.ndarray, b: np.ndarray, c: np.ndarray):
    return lambda u, v: a + u[:, None] * (b - a) + (u * v)[:, None] * (c - b)


def _patches(kind: str) -> list:
    """Parametric patches (u, v) in [0, 1]^2 -> unit-solid surface points (N, 3)."""
    tau = 2 * np.pi

    def ring(radius: np.ndarray, z: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.stack([radius * np.cos(tau * v), radius * np.sin(tau * v), z], -1)

    if kind == "box":
        return [_face(axis, sign) for axis in range(3) for sign in (-1.0, 1.0)]
    if kind == "sphere":
        return [lambda u, v: ring(0.5 * np.sin(np.pi * u), 0.5 * np.cos(np.pi * u), v)]
    if kind == "cylinder":
        return [lambda u, v: ring(np.full_like(u, 0.5), u - 0.5, v), _disk(-0.5), _disk(0.5)]
    if kind == "cone":
        return [lambda u, v: ring(0.5 * (1 - u), u - 0.5, v), _disk(-0.5)]
    if kind == "pyramid":
        return [_triangle(_PYRAMID[4], _PYRAMID[i], _PYRAMID[(i + 1) % 4]) for i in range(4)] + [
            _face(2, -1.0)
        ]
    return [
        lambda u, v: ring(TORUS_MAJOR + TORUS_MINOR * np.cos(tau * u), _TORUS_HALF_Z * np.sin(tau * u), v)
    ]


def surface_points(s: Solid, spacing: float) -> tuple[np.ndarray, float]:
    """World points (N, 3) on the solid's surface, about ``spacing`` metres apart, and their covering radius.

    Every surface point lies within the covering radius of a sample (half the diagonal of the largest grid
    cell), so a distance measured between samples is off by at most twice it.
    """
    to_world = lambda p: s.center + (p * s.extent) @ s.rotation.T  # noqa: E731
    out, cover = [], 0.0
    for patch in _patches(s.kind):
        probe = to_world(patch(*_grid(17, 17))).reshape(17, 17, 3)  # world lengths of the parameter lines
        len_u = np.linalg.norm(np.diff(probe, axis=0), axis=-1).sum(0).max()
        len_v = np.linalg.norm(np.diff(probe, axis=1), axis=-1).sum(1).max()
        n_u, n_v = max(2, math.ceil(len_u / spacing) + 1), max(2, math.ceil(len_v / spacing) + 1)
        pts = to_world(patch(*_grid(n_u, n_v)))
        grid = pts.reshape(n_u, n_v, 3)
        step_u = np.linalg.norm(np.diff(grid, axis=0), axis=-1).max()
        step_v = np.linalg.norm(np.diff(grid, axis=1), axis=-1).max()
        cover = max(cover, 0.5 * math.hypot(step_u, step_v))
        out.append(pts)
    return np.concatenate(out), cover


def _grid(n_u: int, n_v: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.linspace(0.0, 1.0, n_u), np.linspace(0.0, 1.0, n_v), indexing="ij")
    return u.ravel(), v.ravel()


def contains(s: Solid, points: np.ndarray) -> np.ndarray:
    """Inside test (N,) bool of world points (N, 3): the solid's implicit definition."""
    p = (np.asarray(points, float) - s.center) @ s.rotation / s.extent  # unit coordinates
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    in_box = np.all(np.abs(p) <= 0.5, axis=1)
    r = np.hypot(x, y)
    if s.kind == "box":
        return in_box
    if s.kind == "sphere":
        return np.linalg.norm(p, axis=1) <= 0.5
    if s.kind == "cylinder":
        return in_box & (r <= 0.5)
    if s.kind == "cone":
        return in_box & (r <= 0.5 * (0.5 - z))
    if s.kind == "pyramid":
        return in_box & (np.maximum(np.abs(x), np.abs(y)) <= 0.5 * (0.5 - z))
    return ((r - TORUS_MAJOR) / TORUS_MINOR) ** 2 + (z / _TORUS_HALF_Z) ** 2 <= 1.0

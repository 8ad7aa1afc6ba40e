"""datagen.scenes.solids: the support-function measurements agree with the second definitions (surface samples, inside test)."""

from __future__ import annotations

import numpy as np
import pytest

from spatialboost.datagen.scenes import solids as S
from spatialboost.datagen.scenes.geometry import yaw_rotation


def _random_solid(kind: str, rng: np.random.Generator) -> S.Solid:
    extent = rng.uniform(0.15, 0.7, 3)
    if kind in ("sphere",):
        extent[:] = extent[0]
    if kind in ("cylinder", "cone", "torus"):
        extent[1] = extent[0]
    return S.Solid(kind, rng.uniform(-0.5, 0.5, 3), extent, yaw_rotation(rng.uniform(0, 2 * np.pi)))


@pytest.mark.parametrize("kind", S.SOLID_KINDS)
def test_extents_match_surface_samples(kind):
    rng = np.random.default_rng(1)
    for _ in range(3):
        s = _random_solid(kind, rng)
        pts, cover = S.surface_points(s, 0.005)
        for axis in (*np.eye(3), np.array([0.6, 0.8, 0.0]), np.array([0.48, 0.6, 0.64])):
            e = S.extent_along(s, axis)
            sampled = float(np.ptp(pts @ axis))
            assert sampled - 1e-9 <= e <= sampled + 2 * cover, (kind, axis, e, sampled)
            lo, hi = S.span(s, axis)
            assert hi - lo == pytest.approx(e)


@pytest.mark.parametrize("kind", S.SOLID_KINDS)
def test_volume_matches_the_inside_test(kind):
    s = _random_solid(kind, np.random.default_rng(2))
    unit = np.random.default_rng(3).uniform(-0.5, 0.5, (200_000, 3))
    share = S.contains(s, s.center + (unit * s.extent) @ s.rotation.T).mean()
    assert S.volume(s) == pytest.approx(np.prod(s.extent) * share, rel=0.02)


def test_surface_samples_lie_on_the_boundary_of_the_inside_test():
    """Pulled 0.1 % toward the centre a sample is inside, pushed 1 % out it is not (star-shaped about the centre;
    the torus is not, so it is checked about its tube's centre circle)."""
    rng = np.random.default_rng(4)
    for kind in S.SOLID_KINDS:
        s = _random_solid(kind, rng)
        pts, _ = S.surface_points(s, 0.02)
        if kind == "torus":
            local = (pts - s.center) @ s.rotation / s.extent
            ring = local[:, :2] / np.linalg.norm(local[:, :2], axis=1, keepdims=True) * S.TORUS_MAJOR
            centre = s.center + (np.c_[ring, np.zeros(len(ring))] * s.extent) @ s.rotation.T
        else:
            centre = s.center
        assert S.contains(s, centre + 0.999 * (pts - centre)).all(), kind
        assert not S.contains(s, centre + 1.01 * (pts - centre)).any(), kind


def test_gap_agrees_with_surface_samples_and_is_symmetric_and_turn_invariant():
    """For random pairs: gap <= the least sample distance <= gap + 2 covers (0 when one holds the other's samples)."""
    rng = np.random.default_rng(5)
    checked = 0
    while checked < 6:
        a, b = (
            _random_solid(str(k), rng)
            for k in rng.choice(["box", "sphere", "cylinder", "cone", "pyramid"], 2)
        )
        b = S.Solid(
            b.kind, b.center + [rng.uniform(-1.2, 1.2), rng.uniform(-1.2, 1.2), 0.0], b.extent, b.rotation
        )
        if (
            S.contains(a, S.surface_points(b, 0.02)[0]).any()
            or S.contains(b, S.surface_points(a, 0.02)[0]).any()
        ):
            continue  # overlapping: the generator never makes them
        g = S.gap(a, b)
        (pa, ca), (pb, cb) = S.surface_points(a, 0.02), S.surface_points(b, 0.02)
        nearest = min(_least_distance(pa, chunk) for chunk in np.array_split(pb, 1 + len(pb) // 512))
        assert g <= nearest + 1e-9 and nearest <= g + 2 * (ca + cb), (a.kind, b.kind, g, nearest)
        assert S.gap(b, a) == pytest.approx(g, abs=1e-6)
        R = yaw_rotation(1.1)
        turned = [S.Solid(s.kind, R @ s.center + [3.0, -1.0, 0.0], s.extent, R @ s.rotation) for s in (a, b)]
        assert S.gap(*turned) == pytest.approx(g, abs=1e-6)
        checked += 1


def _least_distance(p: np.ndarray, q: np.ndarray) -> float:
    d2 = (p * p).sum(1)[:, None] + (q * q).sum(1)[None, :] - 2 * p @ q.T
    return float(np.sqrt(max(0.0, d2.min())))


def test_touching_and_overlapping_solids_have_no_gap():
    box = S.Solid("box", np.array([0.0, 0.0, 0.2]), np.full(3, 0.4), yaw_rotation(0.3))
    on_top = S.Solid("cone", np.array([0.05, 0.0, 0.55]), np.array([0.3, 0.3, 0.3]), np.eye(3))
    inside = S.Solid("sphere", np.array([0.0, 0.0, 0.2]), np.full(3, 0.1), np.eye(3))
    assert S.gap(box, on_top) == pytest.approx(0.0, abs=1e-6)
    assert S.gap(box, inside) == 0.0
    with pytest.raises(ValueError, match="unknown solid"):
        S.Solid("chair", np.zeros(3), np.ones(3), np.eye(3))

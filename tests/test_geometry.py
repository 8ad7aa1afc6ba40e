"""Truth tables for the geometry conventions (datagen.scenes.geometry) and for the renderer that must obey them."""

from __future__ import annotations

import numpy as np
import pytest

from spatialboost.datagen.scenes import geometry as geo
from spatialboost.datagen.scenes.render import DrawItem, Light, get_renderer, projection_from_K, unit_mesh

W, H = 160, 120
K = geo.intrinsics_from_fov(W, H, np.deg2rad(60.0))
LIGHT = Light((0.3, -0.5, 0.8))


def _pose_looking_along_world_y(eye=(0.0, 0.0, 1.0)) -> np.ndarray:
    """A level camera at ``eye`` looking along world +y: camera +x = world +x, camera +y = world -z."""
    eye = np.asarray(eye, float)
    return geo.look_at(eye, eye + [0.0, 1.0, 0.0])


def _model(center, extent, yaw=0.0) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = geo.yaw_rotation(yaw) * np.asarray(extent, float)[None, :]
    M[:3, 3] = center
    return M


def _render(items, T, width=W, height=H, K_=K):
    return get_renderer().render(items, K_, T, width, height, LIGHT)


# ----------------------------------------------------------------------------------------------- pure functions


def test_intrinsics_from_fov_centred_square_pixels():
    K_ = geo.intrinsics_from_fov(200, 100, np.deg2rad(90.0))
    assert K_[0, 0] == pytest.approx(100.0) and K_[1, 1] == pytest.approx(100.0)
    assert (K_[0, 2], K_[1, 2]) == (100.0, 50.0)
    # the image's left and right borders are at +-45 degrees
    uv, _ = geo.project_points(np.array([[-1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]), K_)
    np.testing.assert_allclose(uv[:, 0], [0.0, 200.0], atol=1e-9)
    with pytest.raises(ValueError):
        geo.intrinsics_from_fov(10, 10, np.pi)


def test_pixel_centre_convention():
    # the point on the optical axis lands on the continuous centre (W/2, H/2): the corner shared by 4 pixels
    uv, z = geo.project_points(np.array([[0.0, 0.0, 2.0]]), K)
    np.testing.assert_allclose(uv[0], [W / 2, H / 2])
    assert z[0] == 2.0
    # pixel (0, 0)'s centre unprojects to a point that projects back to (0.5, 0.5)
    p = geo.unproject_pixel(0, 0, 3.0, K)
    np.testing.assert_allclose(geo.project_points(p, K)[0][0], [0.5, 0.5])
    assert p[0] < 0 and p[1] < 0  # top-left pixel: left (-x) and up (-y) in the OpenCV camera frame


def test_unproject_project_round_trip():
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, W, 50), rng.integers(0, H, 50)
    z = rng.uniform(0.2, 20.0, 50)
    pts = geo.unproject_pixel(xs, ys, z, K)  # (50, 3)
    uv, depth = geo.project_points(pts, K)
    np.testing.assert_allclose(uv, np.stack([xs + 0.5, ys + 0.5], 1), atol=1e-9)
    np.testing.assert_allclose(depth, z)


def test_unproject_depth_matches_unproject_pixel():
    depth = np.random.default_rng(1).uniform(0.5, 5.0, (H, W)).astype(np.float32)
    cloud = geo.unproject_depth(depth, K)
    assert cloud.shape == (H, W, 3)
    y, x = 17, 101
    np.testing.assert_allclose(cloud[y, x], geo.unproject_pixel(x, y, depth[y, x], K))
    np.testing.assert_allclose(cloud[..., 2], depth)


def test_ray_depth_longer_than_z_depth_off_axis():
    depth = np.full((H, W), 2.0)
    ray = geo.ray_depth_from_z_depth(depth, K)
    assert ray.min() >= 2.0 and ray[0, 0] > ray[H // 2, W // 2]
    corner = geo.unproject_pixel(0, 0, 2.0, K)
    assert ray[0, 0] == pytest.approx(np.linalg.norm(corner))


def test_camera_world_round_trip_and_rigid_inverse():
    T = geo.look_at([1.0, -2.0, 1.5], [0.2, 0.3, 0.1])
    pts = np.random.default_rng(2).normal(size=(20, 3))
    np.testing.assert_allclose(geo.world_to_camera(geo.camera_to_world(pts, T), T), pts, atol=1e-12)
    np.testing.assert_allclose(geo.rigid_inverse(T) @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)


def test_look_at_axes_truth_table():
    T = _pose_looking_along_world_y()
    np.testing.assert_allclose(T[:3, 0], [1, 0, 0], atol=1e-12)  # camera right = world +x
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)  # camera down = world -z
    np.testing.assert_allclose(T[:3, 2], [0, 1, 0], atol=1e-12)  # camera forward = world +y
    # the target projects to the image centre, a point to its world-right projects to the right half
    uv, z = geo.project_points(geo.world_to_camera(np.array([[0, 5, 1.0], [1, 5, 1.0], [0, 5, 2.0]]), T), K)
    np.testing.assert_allclose(uv[0], [W / 2, H / 2])
    assert uv[1, 0] > W / 2  # right
    assert uv[2, 1] < H / 2  # above -> smaller row
    assert np.all(z == 5.0)


def test_viewer_frame_truth_table_and_pitch_invariance():
    level = _pose_looking_along_world_y(eye=(0.0, 0.0, 1.5))
    pitched = geo.look_at([0.0, 0.0, 1.5], [0.0, 2.0, 0.0])  # same place and heading, looking down
    V = geo.viewer_frame(level)
    np.testing.assert_allclose(geo.viewer_frame(pitched), V, atol=1e-12)
    p = geo.transform_points(np.array([[1.0, 3.0, 0.0], [-1.0, 3.0, 0.0], [0.0, 6.0, 2.5]]), V)
    assert p[0, 0] > 0 > p[1, 0]  # world +x is the viewer's right
    assert p[2, 1] > p[0, 1] > 0  # larger y = farther
    assert p[2, 2] == pytest.approx(1.0)  # z is height above the camera
    # a camera turned to look along world -y swaps left and right
    back = geo.viewer_frame(geo.look_at([0.0, 0.0, 1.5], [0.0, -2.0, 1.5]))
    assert geo.transform_points(np.array([1.0, -3.0, 0.0]), back)[0] < 0
    # looking straight down: forward = the image's up direction
    down = geo.look_at([0.0, 0.0, 3.0], [0.0, 0.0, 0.0], up=[0.0, 1.0, 0.0])
    Vd = geo.viewer_frame(down)
    assert np.isfinite(Vd).all()
    np.testing.assert_allclose(Vd[:3, :3] @ Vd[:3, :3].T, np.eye(3), atol=1e-12)


def test_aabb_and_yaw_obb_recover_a_rotated_box():
    rng = np.random.default_rng(3)
    extent, yaw, center = np.array([0.8, 0.3, 0.5]), 0.6, np.array([1.0, -2.0, 0.25])
    local = rng.uniform(-0.5, 0.5, (4000, 3)) * extent
    local[:8] = (
        np.array([[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)]) * extent
    )
    pts = center + local @ geo.yaw_rotation(yaw).T
    c, e, R = geo.obb_from_points_yaw(pts)
    np.testing.assert_allclose(c, center, atol=1e-9)
    np.testing.assert_allclose(e, extent, atol=1e-9)
    np.testing.assert_allclose(R, geo.yaw_rotation(yaw), atol=1e-9)
    np.testing.assert_allclose(R[:, 2], [0, 0, 1])
    lo, hi = geo.aabb_from_points(pts)
    corners = geo.obb_corners(c, e, R)
    np.testing.assert_allclose(lo, corners.min(0), atol=1e-9)
    np.testing.assert_allclose(hi, corners.max(0), atol=1e-9)
    with pytest.raises(ValueError):
        geo.aabb_from_points(np.zeros((0, 3)))


def test_convex_hull_square_with_interior_points():
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.2, 0.7]], float)
    hull = geo.convex_hull_2d(pts)
    assert len(hull) == 4 and {tuple(p) for p in hull} == {(0, 0), (1, 0), (1, 1), (0, 1)}


# ----------------------------------------------------------------------------------------------- renderer


@pytest.mark.parametrize("shape", ["box", "sphere", "cylinder", "cone", "pyramid", "torus", "quad"])
def test_unit_meshes_fill_the_unit_box(shape):
    mesh = unit_mesh(shape, 32)
    pos, nrm = mesh[:, :3], mesh[:, 3:]
    assert mesh.shape[1] == 6 and len(mesh) % 3 == 0
    lo, hi = pos.min(0), pos.max(0)
    np.testing.assert_allclose(hi[:2], 0.5, atol=1e-6)
    np.testing.assert_allclose(lo[:2], -0.5, atol=1e-6)
    if shape != "quad":
        np.testing.assert_allclose([lo[2], hi[2]], [-0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-5)


def test_projection_from_K_maps_pixels_to_ndc():
    P = projection_from_K(K, W, H)
    p = geo.unproject_pixel(0, 0, 2.0, K)  # centre of the top-left pixel
    clip = P @ np.append(p, 1.0)
    ndc = clip[:3] / clip[3]
    np.testing.assert_allclose(ndc[:2], [2 * 0.5 / W - 1, 1 - 2 * 0.5 / H], atol=1e-12)
    assert -1 < ndc[2] < 1


def test_sphere_renders_where_K_predicts_with_true_front_depth():
    T = np.eye(4)  # camera frame == world frame here
    center, radius = np.array([0.4, -0.2, 3.0]), 0.3
    out = _render([DrawItem("sphere", _model(center, [2 * radius] * 3), (1.0, 0.0, 0.0), 5, 7)], T)
    uv, _ = geo.project_points(center, K)
    u, v = uv[0]
    x, y = int(u), int(v)
    assert out.instance[y, x] == 5 and out.semantic[y, x] == 7
    ray_point = geo.unproject_pixel(x, y, 1.0, K)  # true z of the front surface along this pixel's ray
    d = ray_point / np.linalg.norm(ray_point)
    b = d @ center
    t = b - np.sqrt(b * b - (center @ center - radius**2))
    assert out.depth[y, x] == pytest.approx(t * d[2], abs=2e-3)  # tessellation tolerance
    ys, xs = np.nonzero(out.instance == 5)
    assert abs(xs.mean() + 0.5 - u) < 1.0 and abs(ys.mean() + 0.5 - v) < 1.0
    assert out.depth[out.instance == 0].max() == 0.0  # background: no measurement
    assert out.rgb[y, x, 0] > 0 and out.rgb[y, x, 1] == 0


def test_object_at_camera_plus_x_appears_in_right_half():
    T = _pose_looking_along_world_y()
    for world_x, side in ((1.0, "right"), (-1.0, "left")):
        item = DrawItem("box", _model([world_x, 4.0, 1.0], [0.4, 0.4, 0.4]), (0, 1, 0), 1, 3)
        out = _render([item], T)
        xs = np.nonzero(out.instance == 1)[1]
        assert len(xs) > 0
        assert (xs.min() >= W // 2) if side == "right" else (xs.max() < W // 2)
    # and above (world +z) appears in the top half
    out = _render([DrawItem("box", _model([0.0, 4.0, 2.0], [0.4] * 3), (0, 1, 0), 1, 3)], T)
    assert np.nonzero(out.instance == 1)[0].max() < H // 2


def test_box_silhouette_is_exactly_the_K_projection():
    """A box face-on to the camera: a pixel is covered iff its centre is inside the projected front face."""
    T = np.eye(4)
    size, z_front = np.array([0.9, 0.5, 0.4]), 2.0
    center = np.array([0.13, -0.07, z_front + 0.2])
    out = _render([DrawItem("box", _model(center, size), (1, 1, 1), 1, 3)], T)
    uv, _ = geo.project_points(
        np.array([center - [size[0] / 2, size[1] / 2, 0.2], center + [size[0] / 2, size[1] / 2, -0.2]]), K
    )
    (u0, v0), (u1, v1) = uv
    u, v = geo.pixel_centers(H, W)
    inside = (u > u0) & (u < u1) & (v > v0) & (v < v1)
    near_edge = (np.minimum(abs(u - u0), abs(u - u1)) < 1e-3) | (np.minimum(abs(v - v0), abs(v - v1)) < 1e-3)
    assert np.array_equal((out.instance == 1) & ~near_edge, inside & ~near_edge)
    np.testing.assert_allclose(out.depth[inside], z_front, atol=1e-5)


def test_plane_depth_is_exact_metric_z():
    T = geo.look_at([0.0, -2.0, 1.6], [0.0, 2.0, 0.0])
    floor = DrawItem("quad", np.diag([20.0, 20.0, 1.0, 1.0]), (0.5, 0.5, 0.5), 0, 1)
    out = _render([floor], T)
    ys, xs = np.nonzero(out.semantic == 1)
    assert len(ys) > W * H // 3
    world = geo.camera_to_world(geo.unproject_pixel(xs, ys, out.depth[ys, xs], K), T)
    np.testing.assert_allclose(world[:, 2], 0.0, atol=1e-4 * out.depth.max())


def test_render_is_deterministic_and_size_changes_work():
    T = _pose_looking_along_world_y()
    items = [
        DrawItem("torus", _model([0.2, 3.0, 0.8], [0.6, 0.6, 0.18], yaw=0.3), (0.2, 0.4, 0.9), 1, 8),
        DrawItem("cone", _model([-0.5, 3.5, 0.9], [0.4, 0.4, 0.6]), (0.9, 0.4, 0.1), 2, 6),
    ]
    a = _render(items, T)
    small = _render(items, T, 64, 48, geo.intrinsics_from_fov(64, 48, np.deg2rad(60.0)))
    b = _render(items, T)
    assert small.rgb.shape == (48, 64, 3)
    for name in ("rgb", "depth", "instance", "semantic"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.instance.dtype == np.int32 and a.semantic.dtype == np.uint8 and a.depth.dtype == np.float32
    assert set(np.unique(a.instance)) == {0, 1, 2}


def test_missing_egl_gives_an_actionable_error(monkeypatch):
    import moderngl

    from spatialboost.datagen.scenes.render import Renderer, RendererUnavailableError
    from spatialboost.errors import UserError

    def no_egl(**_):
        raise RuntimeError("eglGetDisplay failed")

    monkeypatch.setattr(moderngl, "create_standalone_context", no_egl)
    with pytest.raises(RendererUnavailableError, match="libegl1 and libgl1-mesa-dri") as info:
        Renderer()
    assert isinstance(info.value, UserError)

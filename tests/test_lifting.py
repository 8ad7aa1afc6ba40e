"""Lifting: oracle depth + masks of rendered synthetic scenes recover their geometry; the real Middlebury photo."""

from __future__ import annotations

import numpy as np
import pytest

from spatialboost.datagen.real import rgbd
from spatialboost.datagen.real.lifting import LiftConfig, fit_plane_ransac, lift_view
from spatialboost.datagen.scenes.geometry import object_point_cloud, rigid_inverse
from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene


@pytest.fixture(scope="module")
def scene():
    return generate_scene(1, SyntheticConfig(image_size=128))


def _lift_gt(scene):
    v = scene.views[0]
    masks = np.stack([v.instance == o.id for o in scene.objects])
    return lift_view(v.rgb, v.depth, v.camera.K, masks, [o.name for o in scene.objects], scene_id="s")


def test_lifting_recovers_gravity_frame_and_boxes(scene):
    lifted = _lift_gt(scene)
    v_true, v_lift = scene.views[0], lifted.views[0]
    assert lifted.meta["frame"] == "floor"
    # the recovered world differs from the true one only by a yaw + horizontal shift (floor at z = 0 in both)
    T = v_true.camera.cam_to_world @ rigid_inverse(v_lift.camera.cam_to_world)  # lifted world -> true world
    assert T[2, 2] == pytest.approx(1.0, abs=2e-3) and T[2, 3] == pytest.approx(0.0, abs=0.01)
    assert len(lifted.objects) == len(scene.objects)
    for o_true, o in zip(scene.objects, lifted.objects, strict=True):
        # compare with the visible surface of the true object (a camera sees no back faces)
        pts = object_point_cloud(
            v_true.depth, v_true.instance, v_true.camera.K, v_true.camera.cam_to_world, o_true.id
        )
        np.testing.assert_allclose(T[:3, :3] @ o.centroid + T[:3, 3], pts.mean(0), atol=0.02)
        assert o.aabb_max[2] == pytest.approx(pts[:, 2].max(), abs=0.05)  # heights agree: gravity is right
        assert o.aabb_max[2] <= o_true.aabb_max[2] + 0.02
        assert o.name == o_true.name and o.color is not None
    assert len({o.description for o in lifted.objects}) == len(lifted.objects)  # unique referring expressions


def test_lifting_preserves_viewer_relations(scene):
    lifted = _lift_gt(scene)
    from spatialboost.datagen.scenes.geometry import viewer_frame

    def viewer_x(s):
        T = viewer_frame(s.views[0].camera.cam_to_world)
        return np.array([(T[:3, :3] @ o.centroid + T[:3, 3])[0] for o in s.objects])

    true_x, lift_x = viewer_x(scene), viewer_x(lifted)
    i, j = np.triu_indices(len(true_x), 1)
    clear = np.abs(true_x[i] - true_x[j]) > 0.15  # pairs clearly left/right of each other
    assert clear.sum() > 0
    np.testing.assert_array_equal((true_x[i] < true_x[j])[clear], (lift_x[i] < lift_x[j])[clear])


def test_no_detections_still_a_scene(scene):
    v = scene.views[0]
    s = lift_view(v.rgb, v.depth, v.camera.K, np.zeros((0, *v.depth.shape), bool), [])
    assert s.objects == [] and s.views[0].instance.max() == 0 and s.meta["frame"] == "floor"


def test_no_floor_falls_back_to_camera_frame_with_assumption():
    depth = np.full((40, 50), 3.0, np.float32)  # a wall facing the camera: no horizontal plane
    K = np.array([[50.0, 0, 25], [0, 50, 20], [0, 0, 1]])
    mask = np.zeros((1, 40, 50), bool)
    mask[0, 10:20, 10:20] = True
    s = lift_view(np.zeros((40, 50, 3), np.uint8), depth, K, mask, ["box"])
    assert s.meta["frame"] == "camera" and "assumption" in s.meta
    o = s.objects[0]
    # camera frame re-labelled z-up: forward distance is world y, image-up is world z
    assert o.centroid[1] == pytest.approx(3.0, abs=1e-6)
    assert o.centroid[2] > 0  # the mask is in the upper half of the image


def test_tiny_masks_are_dropped_and_recorded(scene):
    v = scene.views[0]
    m = np.zeros((1, *v.depth.shape), bool)
    m[0, 60, 60] = True
    s = lift_view(v.rgb, v.depth, v.camera.K, m, ["speck"], cfg=LiftConfig(min_object_points=5))
    assert s.objects == [] and s.meta["dropped_detections"][0]["label"] == "speck"


def test_ransac_is_seeded_and_finds_a_plane():
    rng = np.random.default_rng(0)
    pts = np.c_[
        rng.uniform(-2, 2, 500), np.full(500, 1.5), rng.uniform(1, 5, 500)
    ]  # y = 1.5: floor below camera
    pts = np.r_[pts, rng.uniform(-2, 2, (200, 3))]
    a = fit_plane_ransac(pts, np.array([0, -1.0, 0]), LiftConfig(), np.random.default_rng(1))
    b = fit_plane_ransac(pts, np.array([0, -1.0, 0]), LiftConfig(), np.random.default_rng(1))
    np.testing.assert_allclose(a.normal, [0, -1, 0], atol=2e-3)
    assert a.offset == pytest.approx(1.5, abs=5e-3) and a.normal.tolist() == b.normal.tolist()


def test_export_and_posed_multiview_fusion(tmp_path):
    scene = generate_scene(2, SyntheticConfig(image_size=96, views=3))
    seq = rgbd.export_scene(scene, tmp_path)
    frames = rgbd.read_sequence(seq)
    assert len(frames) == 3 and all(f.pose is not None and f.depth is not None for f in frames)
    views = []
    for f in frames:
        gt = rgbd.ground_truth(f)
        np.testing.assert_allclose(gt.depth, scene.views[int(f.key)].depth, atol=6e-4)  # millimetre PNG
        views.append(rgbd.PosedView(rgbd.load_frame_rgb(f), gt.depth, gt.K, f.pose, gt.instance, gt.labels))
    fused = rgbd.fuse_views(views, "fused")
    assert fused.meta["frame"] == "floor" and len(fused.views) == 3
    for o in fused.objects:
        t = scene.object_by_id(o.id)
        assert o.name == t.name
        # fused boxes lie within the true extents (visible surfaces), and heights agree
        assert o.aabb_max[2] <= t.aabb_max[2] + 0.02 and o.aabb_min[2] >= t.aabb_min[2] - 0.02
        assert (o.aabb_max - o.aabb_min)[2] == pytest.approx((t.aabb_max - t.aabb_min)[2], abs=0.08)


def test_middlebury_motorcycle_real_photo():
    """Real photo, real metric depth. skimage's stereo_motorcycle() is Middlebury 2014 "Motorcycle" (perfect)
    downsampled 4x to 500x741 (so focal 3979.911/4, doffs 124.343/4, disparity in that scale).
    z = baseline * f / (d + doffs), with baseline 0.193001 m; scene depth ~2.1-5.0 m."""
    skdata = pytest.importorskip("skimage.data")
    left, _, disp = skdata.stereo_motorcycle()
    scale = 4.0
    f, doffs, baseline = 3979.911 / scale, 124.343 / scale, 0.193001
    assert left.shape[:2] == disp.shape
    valid = np.isfinite(disp) & (disp > 0)
    depth = np.where(valid, baseline * f / (np.where(valid, disp, 0) + doffs), 0).astype(np.float32)
    assert 1.9 < np.percentile(depth[valid], 1) and np.percentile(depth[valid], 99) < 5.5
    h, w = depth.shape
    K = np.array([[f, 0, 1244.772 / scale], [0, f, 1019.507 / scale], [0, 0, 1]])
    mask = np.zeros((1, h, w), bool)
    mask[0, 150:400, 200:550] = True  # the motorcycle's body occupies the image centre
    s = lift_view(left, depth, K, mask, ["motorcycle"], scene_id="motorcycle")
    assert s.meta["frame"] in ("floor", "camera")
    o = s.objects[0]
    ext = o.aabb_max - o.aabb_min
    assert np.all(ext > 0.2) and np.all(ext < 3.0)  # a motorcycle-sized box, metres
    cam = s.views[0].camera.cam_to_world
    from spatialboost.datagen.scenes.geometry import world_to_camera

    z = world_to_camera(o.centroid[None], cam)[0, 2]
    assert 2.0 < z < 5.0  # in front of the camera, at the measured range


def test_box_support_gives_the_same_oriented_box():
    from spatialboost.datagen.real.lifting import _box_support
    from spatialboost.datagen.scenes.geometry import obb_from_points_yaw

    rng = np.random.default_rng(0)
    p = rng.normal(size=(3000, 3)) * [1.0, 0.3, 0.5]
    support = _box_support(p)
    assert len(support) < 100
    for a, b in zip(obb_from_points_yaw(p), obb_from_points_yaw(support), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_repeated_objects_are_ranked_by_box_centre_like_left_right():
    """Descriptions and "left of" answers use one centre (the box's): a lopsided cloud cannot contradict them."""
    from scene_kit import camera
    from spatialboost.datagen.questions import relations as R
    from spatialboost.datagen.questions.relations import SceneGraph
    from spatialboost.datagen.real.lifting import LiftedObject, describe, scene_object
    from spatialboost.datagen.scenes.scene import Scene, View

    rng = np.random.default_rng(0)
    dense = np.c_[rng.uniform(-0.05, 0.05, 500), rng.uniform(1.95, 2.05, 500), rng.uniform(0, 0.5, 500)]
    tail = np.c_[np.linspace(0.05, 1.2, 20), np.full(20, 2.0), np.full(20, 0.25)]
    lopsided = np.concatenate([dense, tail])  # centroid x ~0.06, box centre x ~0.58
    even = np.c_[
        rng.uniform(0.25, 0.45, 300), rng.uniform(1.9, 2.1, 300), rng.uniform(0, 0.5, 300)
    ]  # both ~0.35
    lifted = [LiftedObject("chair", lopsided, "red"), LiftedObject("chair", even, "red")]
    cam = camera((0.4, -3.0, 1.0), (0.4, 2.0, 0.3), 320, 240)
    descriptions = describe(lifted, cam.cam_to_world)
    assert descriptions == ["the red chair on the right", "the red chair on the left"]
    objects = [scene_object(i + 1, o, d) for i, (o, d) in enumerate(zip(lifted, descriptions, strict=True))]
    g = SceneGraph(
        Scene("lopsided", [View(np.zeros((240, 320, 3), np.uint8), cam)], objects, source="images")
    )
    assert R.left_right(g, 0, 1, 2).label == "right"
    assert objects[0].solid == "box"

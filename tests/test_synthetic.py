"""The synthetic scene engine: ground truth agrees with the geometry, output is a pure function of (seed, cfg)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from spatialboost.config import ConfigError, load_config
from spatialboost.datagen.scenes import geometry as geo
from spatialboost.datagen.scenes.scene import Scene
from spatialboost.datagen.scenes.synthetic import (
    OBJECT_CLASSES,
    SEMANTIC_CLASSES,
    SIZE_RANGES,
    SyntheticConfig,
    _Solid,
    describe_objects,
    generate_scene,
)

CFG = SyntheticConfig(image_size=128)
CFG_MV = SyntheticConfig(image_size=128, views=3)
SEEDS = range(12)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [generate_scene(s, CFG) for s in SEEDS]


@pytest.fixture(scope="module")
def mv_scenes() -> list[Scene]:
    return [generate_scene(s, CFG_MV) for s in range(6)]


def scene_digest(scene: Scene) -> str:
    h = hashlib.sha256()
    for v in scene.views:
        for a in (v.rgb, v.depth, v.instance, v.semantic, v.camera.K, v.camera.cam_to_world):
            h.update(a.tobytes())
    for o in scene.objects:
        h.update(o.description.encode())
        for a in (o.centroid, o.aabb_min, o.aabb_max, o.obb_center, o.obb_extent, o.obb_rotation):
            h.update(a.tobytes())
        h.update(repr(o.visible_pixels).encode())
    return h.hexdigest()


def _inside_obb(points: np.ndarray, obj, pad: float) -> np.ndarray:
    local = (points - obj.obb_center) @ obj.obb_rotation  # (M, 3) in the box axes
    return np.all(np.abs(local) <= 0.5 * obj.obb_extent + pad, axis=1)


# ----------------------------------------------------------------------------------------------- structure


def test_scene_structure_and_dtypes(scenes):
    assert len(set(OBJECT_CLASSES)) >= 5
    assert SEMANTIC_CLASSES[:3] == ["void", "floor", "wall"]
    for sc in scenes:
        assert CFG.min_objects <= len(sc.objects) <= CFG.max_objects
        assert [o.id for o in sc.objects] == list(range(1, len(sc.objects) + 1))
        assert sc.semantic_classes == SEMANTIC_CLASSES and sc.source == "synthetic"
        assert sc.meta["seed"] == SEEDS[scenes.index(sc)] and sc.meta["config"]["image_size"] == 128
        json.dumps(sc.meta)  # plain, serialisable
        (v,) = sc.views
        assert v.rgb.shape == (128, 128, 3) and v.rgb.dtype == np.uint8
        assert v.depth.dtype == np.float32 and v.instance.dtype == np.int32 and v.semantic.dtype == np.uint8
        assert v.camera.K.shape == (3, 3) and v.camera.cam_to_world.shape == (4, 4)
        for o in sc.objects:
            assert o.name in OBJECT_CLASSES and o.attributes["size"] in SIZE_RANGES
            assert SEMANTIC_CLASSES[o.attributes["class_id"]] == o.name
            assert np.all(o.aabb_min < o.aabb_max) and len(o.visible_pixels) == 1


def test_label_maps_agree(scenes):
    for sc in scenes:
        v = sc.views[0]
        counts = np.bincount(v.instance.ravel(), minlength=len(sc.objects) + 1)
        for o in sc.objects:
            assert o.visible_pixels[0] == counts[o.id]
            assert np.all(v.semantic[v.instance == o.id] == o.attributes["class_id"])
        background = v.instance == 0
        assert set(np.unique(v.semantic[background])) <= {0, 1, 2}
        assert np.all((v.depth > 0) == (v.semantic > 0))  # depth exactly where something was rendered
        assert np.count_nonzero(v.semantic == 1) > 0  # the floor is seen
        assert sum(o.visible_pixels[0] > 0 for o in sc.objects) >= len(sc.objects) - 2  # most objects visible


def test_object_pixels_lie_inside_their_true_3d_box(scenes):
    for sc in scenes:
        v = sc.views[0]
        for o in sc.objects:
            pts = geo.object_point_cloud(v.depth, v.instance, v.camera.K, v.camera.cam_to_world, o.id)
            if len(pts) == 0:
                continue
            assert _inside_obb(pts, o, pad=0.01).all(), (sc.scene_id, o.description)
            lo, hi = o.aabb_min - 0.01, o.aabb_max + 0.01
            assert np.all((pts >= lo) & (pts <= hi))
            # and the AABB is the box of the OBB
            corners = geo.obb_corners(o.obb_center, o.obb_extent, o.obb_rotation)
            if o.name in ("box", "pyramid"):
                np.testing.assert_allclose(corners.min(0), o.aabb_min, atol=1e-9)
                np.testing.assert_allclose(corners.max(0), o.aabb_max, atol=1e-9)


def test_floor_and_wall_pixels_unproject_onto_their_planes(scenes):
    for sc in scenes:
        v = sc.views[0]
        cloud = geo.camera_to_world(geo.unproject_depth(v.depth, v.camera.K), v.camera.cam_to_world)
        floor = cloud[v.semantic == 1]
        np.testing.assert_allclose(floor[:, 2], 0.0, atol=2e-3)
        wall = cloud[v.semantic == 2]
        if len(wall):
            half = sc.meta["room"]["half_size"]
            np.testing.assert_allclose(np.abs(wall[:, :2]).max(axis=1), half, atol=5e-3)


def test_objects_rest_on_floor_or_support_without_interpenetration(scenes):
    stacked = 0
    for sc in scenes:
        objs = sc.objects
        for o in objs:
            support = o.attributes["supported_by"]
            if support == 0:
                assert o.aabb_min[2] == 0.0
            else:
                stacked += 1
                base = sc.object_by_id(support)
                assert base.name in ("box", "cylinder")
                assert o.aabb_min[2] == pytest.approx(base.aabb_max[2])
                assert np.all(o.aabb_min[:2] >= base.aabb_min[:2]) and np.all(
                    o.aabb_max[:2] <= base.aabb_max[:2]
                )
        floor_objs = [o for o in objs if o.attributes["supported_by"] == 0]
        for i, a in enumerate(floor_objs):  # footprint circles are disjoint: check the OBB centres' distance
            for b in floor_objs[i + 1 :]:
                ra = (
                    0.5 * np.hypot(*a.obb_extent[:2])
                    if a.name in ("box", "pyramid")
                    else 0.5 * a.obb_extent[0]
                )
                rb = (
                    0.5 * np.hypot(*b.obb_extent[:2])
                    if b.name in ("box", "pyramid")
                    else 0.5 * b.obb_extent[0]
                )
                assert np.hypot(*(a.obb_center[:2] - b.obb_center[:2])) >= ra + rb
    assert stacked > 0  # the default config does stack


def test_centroid_of_solid_and_size_words(scenes):
    for sc in scenes:
        for o in sc.objects:
            h = o.aabb_max[2] - o.aabb_min[2]
            frac = (o.centroid[2] - o.aabb_min[2]) / h
            assert frac == pytest.approx(0.25 if o.name in ("cone", "pyramid") else 0.5)
            lo, hi = SIZE_RANGES[o.attributes["size"]]
            assert lo - 1e-9 <= o.obb_extent.max() <= hi + 1e-9


def test_descriptions_unique_and_well_formed():
    for seed in range(40):
        sc = generate_scene(
            seed, SyntheticConfig(image_size=32, min_objects=6, max_objects=10, classes=["box", "cone"])
        )
        descriptions = [o.description for o in sc.objects]
        assert len(set(descriptions)) == len(descriptions), descriptions
        for o in sc.objects:
            assert o.description.startswith("the ") and o.name in o.description and o.color in o.description
            if o.attributes["disambiguation"] != "none":
                assert o.attributes["size"] in o.description


def test_description_truth_table_left_right():
    def solid(size, x):
        return _Solid("cylinder", "red", size, np.array([0.2, 0.2, 0.3]), 0.0, np.array([x, 3.0, 0.0]))

    viewer = np.array([[-1.0, 3.0, 0.1], [1.0, 3.0, 0.1], [0.0, 3.0, 0.1]])  # viewer-frame centroids
    names = [d for d, _ in describe_objects([solid("small", -1), solid("small", 1)], viewer[:2])]
    assert names == ["the small red cylinder on the left", "the small red cylinder on the right"]
    names = [d for d, _ in describe_objects([solid("small", -1), solid("large", 1)], viewer[:2])]
    assert names == ["the small red cylinder", "the large red cylinder"]
    three = describe_objects([solid("small", -1), solid("small", 1), solid("small", 0)], viewer)
    assert [d for d, _ in three] == [
        "the leftmost small red cylinder",
        "the rightmost small red cylinder",
        "the second small red cylinder from the left",
    ]
    assert [d for d, _ in describe_objects([solid("small", 0)], viewer[:1])] == ["the red cylinder"]


def test_generated_left_right_follows_the_image(scenes):
    """A "... on the left" object's pixels really are left of its twin's in the first view."""
    checked = 0
    for seed in range(60):
        sc = generate_scene(
            seed, SyntheticConfig(image_size=64, min_objects=8, max_objects=10, classes=["sphere"])
        )
        v = sc.views[0]
        for o in sc.objects:
            if o.description.endswith(" on the left"):
                twin = next(t for t in sc.objects if t.description == o.description.replace("left", "right"))
                uv, _ = geo.project_points(
                    geo.world_to_camera(np.stack([o.centroid, twin.centroid]), v.camera.cam_to_world),
                    v.camera.K,
                )
                assert uv[0, 0] < uv[1, 0]
                checked += 1
    assert checked > 0


# ----------------------------------------------------------------------------------------------- multi-view


def test_multiview_centroids_project_into_masks(mv_scenes):
    for sc in mv_scenes:
        assert len(sc.views) == 3
        K0 = sc.views[0].camera.K
        centres = [v.camera.cam_to_world[:3, 3] for v in sc.views]
        assert np.linalg.norm(centres[1] - centres[0]) > 0.3  # a real baseline
        for v in sc.views:
            np.testing.assert_array_equal(v.camera.K, K0)
            for o in sc.objects:
                if o.name == "torus":  # its centroid is in the hole
                    continue
                (u, vv), z = (
                    a[0]
                    for a in geo.project_points(
                        geo.world_to_camera(o.centroid, v.camera.cam_to_world), v.camera.K
                    )
                )
                x, y = int(np.floor(u)), int(np.floor(vv))
                if not (0 <= x < v.rgb.shape[1] and 0 <= y < v.rgb.shape[0]):
                    continue
                hit = v.instance[y, x]
                assert v.depth[y, x] <= z + 1e-3  # the ray meets a surface before the centroid
                if hit != o.id:  # then something nearer occludes it
                    assert hit != 0 and v.depth[y, x] < z


def test_multiview_shares_the_scene(mv_scenes):
    one = generate_scene(3, CFG)
    many = mv_scenes[3]
    assert [o.description for o in one.objects] == [o.description for o in many.objects]
    np.testing.assert_array_equal(one.objects[0].centroid, many.objects[0].centroid)


# ----------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_regardless_of_order():
    cfg = SyntheticConfig(image_size=64, views=2)
    alone = scene_digest(generate_scene(7, cfg))
    for s in range(7):
        generate_scene(s, cfg)
    assert scene_digest(generate_scene(7, cfg)) == alone
    assert scene_digest(generate_scene(8, cfg)) != alone


def test_same_bytes_in_a_fresh_process_with_other_thread_count():
    cfg = SyntheticConfig(image_size=64, views=2)
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from test_synthetic import scene_digest;"
        "from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene;"
        "print(scene_digest(generate_scene(11, SyntheticConfig(image_size=64, views=2))))"
    )
    env = dict(os.environ, LP_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == scene_digest(generate_scene(11, cfg))


def test_scene_id_default_and_override():
    assert generate_scene(5, SyntheticConfig(image_size=32)).scene_id == "synthetic-5"
    assert generate_scene(5, SyntheticConfig(image_size=32), scene_id="s/5").scene_id == "s/5"


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override",
    [
        "views=0",
        "image_size=8",
        "min_objects=5",  # with max_objects=3 below
        "classes=[box,hexagon]",
        "classes=[]",
        "fov_deg=[70,50]",
        "fov_deg=[5,60]",
        "stack_prob=1.5",
        "room_half_size=[2.0,3.0]",
        "tessellation=4",
    ],
)
def test_config_validation_errors(override):
    overrides = [override] + (["max_objects=3"] if override.startswith("min_objects") else [])
    with pytest.raises(ConfigError):
        load_config(SyntheticConfig, overrides=overrides)


def test_config_round_trip_and_generate_validates():
    cfg = load_config(SyntheticConfig, overrides=["views=2", "classes=[box,sphere]", "fov_deg=[40,50]"])
    assert cfg.views == 2 and cfg.classes == ["box", "sphere"] and cfg.fov_deg == (40.0, 50.0)
    with pytest.raises(ConfigError, match="views"):
        generate_scene(0, SyntheticConfig(views=-1))
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(SyntheticConfig, overrides=["nope=1"])


def test_shadows_change_rgb_only():
    with_shadows = generate_scene(0, SyntheticConfig(image_size=96, views=2))
    without = generate_scene(0, SyntheticConfig(image_size=96, views=2, shadows=False))
    for a, b in zip(with_shadows.views, without.views, strict=True):
        for name in ("depth", "instance", "semantic"):
            assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
        darker = a.rgb.astype(int).sum(-1) < b.rgb.astype(int).sum(-1)
        changed = (a.rgb != b.rgb).any(-1)
        assert darker.sum() > 20 and np.all(a.semantic[changed] == 1)  # shadows fall on the floor only
        assert darker.sum() > 5 * (changed & ~darker).sum()  # (checker tile edges may round either way)

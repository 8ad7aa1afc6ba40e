"""Truth tables for every relation on hand-built scenes with known geometry (datagen.questions.relations)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scene_kit import ROUND, box, camera, four_boxes, make_scene, solid, turned
from spatialboost.datagen.questions import relations as R
from spatialboost.datagen.questions.relations import SAME, SceneGraph


@pytest.fixture(scope="module")
def g() -> SceneGraph:
    # camera at (0, -4, 1.5) looking along +y: viewer frame == world axes shifted to the camera
    return SceneGraph(four_boxes(num_views=2))


A, B, C, D = (
    1,
    2,
    3,
    4,
)  # red box left-front, blue cube right-back, green block on the cube, yellow pillar far left


@pytest.mark.parametrize(
    "a, b, label",
    [
        (A, B, "left"),
        (B, A, "right"),
        (D, B, "left"),
        (B, C, None),  # same lateral position (stacked): unanswerable
        (A, D, None),  # A is 0.5 m right of D in 3D but left of it in the image: never contradict the image
    ],
)
def test_left_right(g, a, b, label):
    assert R.left_right(g, 0, a, b).label == label


@pytest.mark.parametrize(
    "a, b, label", [(A, B, "in front of"), (B, A, "behind"), (D, A, "behind"), (B, C, None)]
)
def test_front_behind(g, a, b, label):
    assert R.front_behind(g, 0, a, b).label == label


@pytest.mark.parametrize("a, b, label", [(C, B, "above"), (B, C, "below"), (A, B, None), (A, D, None)])
def test_above_below(g, a, b, label):
    assert R.above_below(g, a, b).label == label


@pytest.mark.parametrize(
    "a, b, label", [(A, B, "smaller"), (B, A, "bigger"), (A, D, SAME), (C, B, "smaller")]
)
def test_bigger_smaller(g, a, b, label):
    assert R.bigger_smaller(g, a, b).label == label


def test_taller_shorter_and_tie():
    s = make_scene(
        [
            box(1, (-1, 0, 0.4), (0.5, 0.5, 0.8)),
            box(2, (1, 0, 0.42), (0.5, 0.5, 0.84)),
            box(3, (0, 1, 0.2), (1, 1, 0.4)),
        ],
        [camera((0, -4, 1.5), (0, 0, 0.3))],
    )
    h = SceneGraph(s)
    assert R.taller_shorter(h, 1, 2).label == SAME  # 0.80 vs 0.84 m: inside the 10 % margin
    assert R.taller_shorter(h, 1, 3).label == "taller"
    assert R.taller_shorter(h, 3, 2).label == "shorter"
    assert R.taller_shorter(h, 1, 3).value == pytest.approx(0.4)


def test_metric_facts(g):
    assert R.center_distance(g, B, C).value == pytest.approx(0.5)
    assert R.center_distance(g, A, B).value == pytest.approx(math.sqrt(4 + 2.25 + 0.01), abs=1e-4)
    assert R.surface_distance(g, B, C).value == 0.0  # C rests on B
    assert R.surface_distance(g, A, B).value == pytest.approx(math.hypot(1.3, 0.8), abs=1e-4)
    assert R.object_height(g, D).value == pytest.approx(1.0)
    assert R.object_width(g, 0, B).value == pytest.approx(0.8)
    assert R.object_depth(g, 0, D).value == pytest.approx(0.5)
    assert R.object_count(g, 0).value == 4


def test_closest_and_farthest(g):
    near = R.closest_object(g, 0)
    assert near.value[0] == A and near.value[1] == pytest.approx(math.sqrt(1 + 16 + 1.21), abs=1e-3)
    assert R.farthest_object(g, 0).value[0] == D


def test_multiview_facts(g):
    assert R.camera_motion(g, 0, 1).value == pytest.approx([3.0, 1.0, 0.5], abs=1e-4)  # right, forward, up
    assert R.camera_motion(g, 1, 0).value[2] == pytest.approx(-0.5, abs=1e-4)
    assert R.closer_view(g, A, 0, 1).label == "first"  # 4.27 m vs 5.25 m
    assert R.closer_view(g, A, 1, 0).label == "second"


def test_pixel_facts(g):
    s = g.scene
    xs, ys = g.object_pixels(0)[A]
    x, y = int(xs[0]), int(ys[0])
    assert R.instance_at(g, 0, x, y).value == A
    d = R.depth_at(g, 0, x, y)
    assert d.value == pytest.approx(float(s.views[0].depth[y, x]), abs=1e-4)
    X, Y, Z = R.point_3d(g, 0, x, y).value
    world = s.views[0].camera.cam_to_world @ np.array([X, Y, Z, 1.0])
    o = s.object_by_id(A)
    assert np.all(world[:3] >= o.aabb_min - 1e-3) and np.all(
        world[:3] <= o.aabb_max + 1e-3
    )  # lands on A's box
    xb, yb = g.object_pixels(0)[D]
    assert R.closer_point(g, 0, x, y, int(xb[0]), int(yb[0])).label == "first"


def test_left_right_cannot_flip_silently():
    """An object at camera +x is "right"; the same camera turned 180 deg about world z sees it "left"."""
    cam = camera((0, -4, 1.5), (0, 0, 0.3))
    p_right = (cam.cam_to_world @ np.array([1.0, 0.0, 4.0, 1.0]))[:3]  # camera-frame +x
    p_left = (cam.cam_to_world @ np.array([-1.0, 0.0, 4.0, 1.0]))[:3]
    objs = [
        box(1, (p_right[0], p_right[1], 0.3), (0.5, 0.5, 0.6)),
        box(2, (p_left[0], p_left[1], 0.3), (0.5, 0.5, 0.6)),
    ]
    scene = make_scene(objs, [cam])
    g = SceneGraph(scene)
    assert R.left_right(g, 0, 1, 2).label == "right"
    assert R.left_right(g, 0, 2, 1).label == "left"
    cols = {k: g.object_pixels(0)[k][0].mean() for k in (1, 2)}
    assert cols[1] > cols[2]  # "right" object has the larger image columns

    turned = camera((0, -4, 1.5), (0, 0, 0.3))
    turned.cam_to_world = np.diag([-1.0, -1.0, 1.0, 1.0]) @ turned.cam_to_world  # 180 deg about world z
    g2 = SceneGraph(
        make_scene(
            [box(1, objs[0].obb_center, (0.5, 0.5, 0.6)), box(2, objs[1].obb_center, (0.5, 0.5, 0.6))],
            [turned],
        )
    )
    # the turned camera looks at -y from (0, 4, 1.5): the same world objects swap sides
    assert R.left_right(g2, 0, 1, 2).label == "left"
    cols2 = {k: g2.object_pixels(0)[k][0].mean() for k in (1, 2)}
    assert cols2[1] < cols2[2]


def test_left_agrees_with_image_columns_on_random_scenes():
    from scene_kit import random_scene

    checked = 0
    for seed in range(15):
        g = SceneGraph(random_scene(seed, width=96, height=72))
        px = g.object_pixels(0)
        for a in px:
            for b in px:
                d = R.left_right(g, 0, a, b)
                if d.label is None or len(px[a][0]) < 20 or len(px[b][0]) < 20:
                    continue
                ca, cb = np.median(px[a][0]), np.median(px[b][0])
                assert (ca < cb) == (d.label == "left"), (seed, a, b, d)
                checked += 1
    assert checked > 10


def test_recompute_and_values_match(g):
    fact = {"fn": "center_distance", "args": {"a": A, "b": B}}
    assert R.values_match(R.recompute(g, fact).value, 2.502, tol=1e-3)
    assert not R.values_match([1, 2], [1, 2, 3])
    with pytest.raises(KeyError, match="known"):
        R.recompute(g, {"fn": "nope", "args": {}})


def test_left_right_against_rendered_synthetic_scenes():
    """On scenes from the real engine, a "left" decision always matches the objects' image columns."""
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene

    checked = 0
    for seed in range(12):
        g = SceneGraph(generate_scene(seed, SyntheticConfig(image_size=96, views=2)))
        for view in range(2):
            px = g.object_pixels(view)
            for a in px:
                for b in px:
                    d = R.left_right(g, view, a, b)
                    if d.label is None or min(len(px[a][0]), len(px[b][0])) < 30:
                        continue
                    ca, cb = np.median(px[a][0]), np.median(px[b][0])
                    assert (ca < cb) == (d.label == "left"), (seed, view, a, b, d, ca, cb)
                    checked += 1
    assert checked > 50


# ----------------------------------------------------------------------------------------------- solids: truth tables
# Widths, depths, heights, gaps and volumes come from the object's solid, whatever its yaw or the room's.


def _solid_graph(objects, eye=(0.0, -4.0, 1.5), target=(0.0, 0.0, 0.3)) -> SceneGraph:
    return SceneGraph(make_scene(objects, [camera(eye, target)]))


@pytest.mark.parametrize("kind", ROUND)
@pytest.mark.parametrize("yaw_deg", [0.0, 20.0, 45.0, 77.0])
def test_round_solid_width_is_its_diameter_from_every_side(kind, yaw_deg):
    """A 0.70 m round solid is 0.70 m wide and deep from any view, whatever its yaw (the issue's cylinder)."""
    extent = (0.7, 0.7, 0.21 if kind == "torus" else 0.5)
    o = solid(1, kind, (0.1, 0.2, extent[2] / 2), extent, np.radians(yaw_deg))
    for azimuth in (0.0, 33.0, 90.0, 151.0):
        a = np.radians(azimuth)
        h = _solid_graph([o], eye=(0.1 + 3 * np.sin(a), 0.2 - 3 * np.cos(a), 1.5), target=(0.1, 0.2, 0.2))
        assert R.object_width(h, 0, 1).value == pytest.approx(0.7, abs=1e-4)
        assert R.object_depth(h, 0, 1).value == pytest.approx(0.7, abs=1e-4)
        assert R.object_height(h, 1).value == pytest.approx(extent[2], abs=1e-4)


def test_turned_box_and_pyramid_width_and_depth():
    """A 0.6 x 0.2 footprint turned by 30 deg, seen along +y: width 0.6 cos30 + 0.2 sin30, depth 0.6 sin30 + 0.2 cos30."""
    yaw = np.radians(30.0)
    width, depth = 0.6 * np.cos(yaw) + 0.2 * np.sin(yaw), 0.6 * np.sin(yaw) + 0.2 * np.cos(yaw)
    for kind in ("box", "pyramid"):
        h = _solid_graph([solid(1, kind, (0.0, 0.0, 0.25), (0.6, 0.2, 0.5), yaw)])
        assert R.object_width(h, 0, 1).value == pytest.approx(width, abs=1e-4)
        assert R.object_depth(h, 0, 1).value == pytest.approx(depth, abs=1e-4)


@pytest.mark.parametrize(
    "yaw_deg, offset, gap",
    [
        (30.0, 0.70, 0.30),  # world-AABB gap: 0.06 m
        (45.0, 0.56, 0.16),  # world AABBs overlap: was reported as touching ("gap 0.00 m")
        (0.0, 0.40, 0.00),  # faces touch
    ],
)
def test_gap_between_turned_boxes_is_hand_computed(yaw_deg, offset, gap):
    """Two 0.4 m cubes turned alike, ``offset`` apart along their own x axis: their faces are offset - 0.4 apart."""
    yaw = np.radians(yaw_deg)
    axis = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    a = solid(1, "box", (0.0, 0.0, 0.2), (0.4, 0.4, 0.4), yaw)
    b = solid(2, "box", tuple(offset * axis + [0.0, 0.0, 0.2]), (0.4, 0.4, 0.4), yaw, "blue")
    h = _solid_graph([a, b])
    assert R.surface_distance(h, 1, 2).value == pytest.approx(gap, abs=1e-4)
    assert R.surface_distance(h, 2, 1).value == pytest.approx(gap, abs=1e-4)


def test_gap_between_round_and_flat_solids_is_hand_computed():
    yaw = np.radians(37.0)
    normal = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    cyl = solid(1, "cylinder", (0.0, 0.0, 0.3), (0.5, 0.5, 0.6))
    wall = solid(
        2, "box", tuple((0.6 + 0.1) * normal + [0, 0, 0.3]), (0.2, 0.9, 0.6), yaw, "blue"
    )  # face at 0.6
    on_top = solid(
        3, "sphere", (0.05, 0.0, 0.6 + 0.15), (0.3, 0.3, 0.3), 0.0, "green"
    )  # rests on the cylinder
    above_apex = solid(4, "box", (-1.2, 0.0, 0.9), (0.3, 0.3, 0.2), 0.3, "pink")  # bottom at z = 0.8
    cone = solid(5, "cone", (-1.2, 0.0, 0.25), (0.4, 0.4, 0.5), 1.0, "cyan")  # apex at z = 0.5
    h = _solid_graph([cyl, wall, on_top, above_apex, cone])
    assert R.surface_distance(h, 1, 2).value == pytest.approx(0.6 - 0.25, abs=1e-4)
    assert R.surface_distance(h, 1, 3).value == 0.0
    assert R.surface_distance(h, 4, 5).value == pytest.approx(0.3, abs=1e-4)
    assert R.above_below(h, 3, 1).label == "above" and R.vertical_span(h, 3).value == pytest.approx(
        [0.6, 0.9]
    )


def test_bigger_compares_the_solids_volumes():
    """A 0.50 m ball (0.065 m^3) is smaller than a 0.45 m cube (0.091 m^3), though its box (0.125 m^3) is bigger."""
    ball = solid(1, "sphere", (-0.6, 0.0, 0.25), (0.5, 0.5, 0.5))
    cube = solid(2, "box", (0.6, 0.0, 0.225), (0.45, 0.45, 0.45), 0.4, "blue")
    h = _solid_graph([ball, cube])
    assert R.bigger_smaller(h, 1, 2).label == "smaller" and R.bigger_smaller(h, 2, 1).label == "bigger"
    assert R.object_volume(h, 1).value == pytest.approx(np.pi / 6 * 0.5**3, abs=1e-4)


def _measured(g: SceneGraph) -> dict:
    """Every solid-derived fact of every object and pair (the numbers the templates print)."""
    out: dict = {}
    ids = sorted(g.objects)
    for a in ids:
        out[("height", a)] = R.object_height(g, a).value
        out[("span", a)] = R.vertical_span(g, a).value
        out[("volume", a)] = R.object_volume(g, a).value
        for v in range(g.num_views):
            out[("width", v, a)] = R.object_width(g, v, a).value
            out[("depth", v, a)] = R.object_depth(g, v, a).value
        for b in ids:
            if a != b:
                for fn in (R.surface_distance, R.center_distance, R.above_below, R.bigger_smaller):
                    out[(fn.__name__, a, b)] = fn(g, a, b)
    return out


def test_turning_the_whole_room_changes_no_answer():
    """Objects and cameras turned together about z (and moved): every measurement and conversation is the same."""
    import random

    from spatialboost.datagen.questions.conversations import ConversationConfig, build_conversation, to_llava
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene

    for seed in (11, 12, 13):
        scene = generate_scene(seed, SyntheticConfig(image_size=64, views=2, min_objects=5))
        g0 = SceneGraph(scene)
        for yaw_deg, shift in ((90.0, (0, 0, 0)), (37.0, (1.5, -0.7, 0.0)), (-128.0, (0.2, 3.0, 0.0))):
            g1 = SceneGraph(turned(scene, np.radians(yaw_deg), shift))
            m0, m1 = _measured(g0), _measured(g1)
            for key, value in m0.items():
                other = m1[key]
                if isinstance(value, R.Decision):
                    assert value.label == other.label, key
                    value, other = value.value, other.value
                assert np.allclose(value, other, atol=2e-4), (seed, yaw_deg, key, value, other)
            cfg = ConversationConfig()
            turns = [build_conversation(g, cfg, random.Random(seed)) for g in (g0, g1)]
            texts = [to_llava("s", ["v", "v"], t)["conversations"] for t in turns]
            assert texts[0] == texts[1], (seed, yaw_deg)

"""``validate`` re-derives the numbers taken from the solids (sizes, heights, gaps, distances, volumes) a second
way, so a wrong measurement function cannot validate its own answers; and every printed number is checked."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from scene_kit import camera, four_boxes, make_scene, random_scene, solid
from spatialboost.datagen.dataset.validate import Rederived, check_fact
from spatialboost.datagen.questions import relations as R
from spatialboost.datagen.questions.conversations import ConversationConfig, build_conversation
from spatialboost.datagen.questions.phrasing import Context
from spatialboost.datagen.questions.relations import Decision, SceneGraph
from spatialboost.datagen.questions.templates import TEMPLATES
from spatialboost.datagen.scenes.geometry import obb_corners, transform_points


@pytest.fixture(scope="module")
def g() -> SceneGraph:
    objects = [
        solid(1, "cylinder", (-0.8, 0.0, 0.35), (0.7, 0.7, 0.7), 0.6),
        solid(2, "box", (0.8, 0.6, 0.2), (0.4, 0.4, 0.4), np.radians(45.0), "blue"),
        solid(
            3,
            "box",
            (0.8 + 0.56 * np.cos(np.pi / 4), 0.6 + 0.56 * np.sin(np.pi / 4), 0.2),
            (0.4, 0.4, 0.4),
            np.radians(45.0),
            "green",
        ),  # fmt: skip
        solid(4, "sphere", (0.0, 1.5, 0.25), (0.5, 0.5, 0.5), 0.0, "pink"),
    ]
    return SceneGraph(make_scene(objects, [camera((0.0, -4.0, 1.5), (0.0, 0.5, 0.3))]))


def _fact(fn: str, args: dict, d: Decision) -> dict:
    return {"fn": fn, "args": args, "value": d.value, "label": d.label, "expect": [], "support": []}


# The bugs, as measurement functions: the width of a square box of any yaw, the gap between world AABBs,
# the volume of the box.
def _box_width(g: SceneGraph, view: int, a: int) -> Decision:
    o = g.objects[a]
    x = transform_points(
        obb_corners(o.obb_center, o.obb_extent, o.obb_rotation), g.view(view).world_to_viewer
    )
    return Decision(round(float(np.ptp(x[:, 0])), 4), R.METRIC)


def _aabb_gap(g: SceneGraph, a: int, b: int) -> Decision:
    oa, ob = g.objects[a], g.objects[b]
    gap = np.maximum(0.0, np.maximum(oa.aabb_min - ob.aabb_max, ob.aabb_min - oa.aabb_max))
    return Decision(round(float(np.linalg.norm(gap)), 4), R.METRIC)


def _box_volume(g: SceneGraph, a: int) -> Decision:
    return Decision(round(float(np.prod(g.objects[a].obb_extent)), 4), R.METRIC)


@pytest.mark.parametrize(
    "fn, wrong, args",
    [
        ("object_width", _box_width, {"view": 0, "a": 1}),
        ("surface_distance", _aabb_gap, {"a": 2, "b": 3}),  # 0.16 m apart, AABBs overlap
        ("surface_distance", _aabb_gap, {"a": 1, "b": 4}),
        ("object_volume", _box_volume, {"a": 4}),
    ],
)
def test_a_wrong_measurement_function_does_not_validate_itself(g, monkeypatch, fn, wrong, args):
    monkeypatch.setitem(R.FACTS._items, fn, wrong)  # generation and recomputation share the bug
    fact = _fact(fn, args, wrong(g, **args))
    errors = check_fact(g, fact, "", "s1 turn 1")
    assert any("re-derived" in e for e in errors), errors


@pytest.mark.parametrize(
    "fn, args",
    [
        ("object_width", {"view": 0, "a": 1}),
        ("object_depth", {"view": 0, "a": 2}),
        ("object_height", {"a": 4}),
        ("vertical_span", {"a": 1}),
        ("surface_distance", {"a": 2, "b": 3}),
        ("surface_distance", {"a": 1, "b": 4}),
        ("center_distance", {"a": 1, "b": 3}),
        ("object_volume", {"a": 1}),
        ("object_volume", {"a": 4}),
    ],
)
def test_right_measurements_pass(g, fn, args):
    assert check_fact(g, _fact(fn, args, R.FACTS.get(fn)(g, **args)), "", "s1 turn 1") == []


def test_every_generated_measurement_rederives():
    """No false alarms: every fact of conversations on box scenes and synthetic scenes of every solid."""
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene

    scenes = [random_scene(s, num_views=1 + s % 2) for s in range(6)]
    scenes += [generate_scene(s, SyntheticConfig(image_size=64, min_objects=6)) for s in range(6)]
    checked = 0
    for i, scene in enumerate(scenes):
        g = SceneGraph(scene)
        r = Rederived(g)
        for k in range(3):
            for qa in build_conversation(g, ConversationConfig(), random.Random(100 * i + k)):
                assert check_fact(g, qa.fact, qa.answer, qa.template, r) == [], qa.answer
                checked += qa.fact["fn"] in (
                    "surface_distance",
                    "object_width",
                    "bigger_smaller",
                    "above_below",
                )
    assert checked >= 10


@pytest.mark.parametrize(
    "template, pattern", [("above_below", r"\d\.\d\d-\d\.\d\d m"), ("bigger_smaller", r"\d\.\d{3} m\^3")]
)
def test_printed_heights_and_volumes_are_checked(template, pattern):
    """The height spans of above/below and the volumes of bigger/smaller are facts the answer must state."""
    g = SceneGraph(four_boxes())
    for seed in range(200):
        qa = TEMPLATES.get(template).fn(g.scene, Context(graph=g), random.Random(seed))
        if qa is not None:
            break
    assert qa is not None and re.search(pattern, qa.answer)
    assert check_fact(g, qa.fact, qa.answer, "t") == []
    tampered = re.sub(
        r"(\d)\.(\d)", lambda m: f"{(int(m.group(1)) + 1) % 10}.{m.group(2)}", qa.answer, count=1
    )
    assert any("does not state" in e for e in check_fact(g, qa.fact, tampered, "t")), tampered

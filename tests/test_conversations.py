"""Templates and the conversation builder: every answer equals its recomputed fact; structure and edge cases."""

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest

from scene_kit import camera, four_boxes, make_scene, random_scene
from spatialboost.config import ConfigError, load_config
from spatialboost.datagen.questions import relations as R
from spatialboost.datagen.questions.conversations import (
    ConversationConfig,
    build_conversation,
    level_sequence,
    to_llava,
)
from spatialboost.datagen.questions.phrasing import from_coords
from spatialboost.datagen.questions.relations import SceneGraph
from spatialboost.datagen.questions.templates import TEMPLATES

RANK = {"pixel": 0, "object": 1, "scene": 2, "caption": 3}


def _check_fact(g: SceneGraph, fact: dict, answer: str | None) -> None:
    d = R.recompute(g, fact)
    assert R.values_match(d.value, fact["value"]), fact
    assert d.label == fact["label"] and d.label is not None, fact
    for token in fact["expect"]:
        assert token in answer, (token, answer)
    for sub in fact["support"]:
        _check_fact(g, sub, answer)


@pytest.fixture(scope="module")
def corpus():
    """(graph, cfg, turns) over random scenes, 1-3 views, both coordinate conventions and all orders;
    every other scene adds one turn of each auxiliary template (A/B choices, readouts)."""
    auxiliary = {name: 1 for name, t in TEMPLATES.items() if t.auxiliary}
    out = []
    for seed in range(40):
        views = 1 + seed % 3
        g = SceneGraph(random_scene(seed, num_views=views))
        cfg = ConversationConfig(
            coords=("pixels", "norm1000")[seed % 2],
            order=("forward", "reverse", "shuffled")[seed % 3],
            extra_turns=auxiliary if seed % 4 < 2 else {},
        )
        out.append((g, cfg, build_conversation(g, cfg, random.Random(seed))))
    return out


def test_every_answer_recomputes_from_ground_truth(corpus):
    for g, _, turns in corpus:
        for qa in turns:
            _check_fact(g, qa.fact, qa.answer)


def test_every_template_is_exercised(corpus):
    seen = {qa.template for _, _, turns in corpus for qa in turns}
    assert seen == set(TEMPLATES.names())


def test_turn_counts_and_caption_last(corpus):
    for g, cfg, turns in corpus:
        assert turns[-1].level == "caption"
        extra = sum(cfg.extra_turns.values())
        if len(g.visible(0)) >= 3:
            assert 8 <= len(turns) <= 12 + extra, [qa.template for qa in turns]
        assert len({qa.question for qa in turns}) == len(turns)


def test_extra_turns_follow_their_level_and_choices_are_balanced():
    """Auxiliary turns sit after their level's default turns; A/B answers are the decision, 50/50."""
    cfg = ConversationConfig(extra_turns={"choice_closer_point": 2, "choice_closer_object": 1})
    letters = []
    for seed in range(30):
        turns = build_conversation(SceneGraph(random_scene(seed)), cfg, random.Random(seed))
        levels = [RANK[qa.level] for qa in turns]
        assert levels == sorted(levels)
        for qa in turns:
            if qa.template.startswith("choice_"):
                fact = qa.fact
                assert fact["choices"] == ["A", "B"] and qa.answer.startswith(fact["answer_choice"] + ".")
                letters.append(fact["answer_choice"])
    assert len(letters) > 40
    assert 0.35 < letters.count("A") / len(letters) < 0.65


def test_choice_closer_point_asks_about_one_image_row():
    """The two points lie on (nearly) the same row: their height in the image gives nothing away."""
    cfg = ConversationConfig(levels=["pixel"], turns={"pixel": 0}, caption=False,
                             extra_turns={"choice_closer_point": 3})  # fmt: skip
    for seed in range(10):
        for qa in build_conversation(SceneGraph(random_scene(seed)), cfg, random.Random(seed)):
            args = qa.fact["args"]
            assert abs(args["y1"] - args["y2"]) <= 1


@pytest.mark.parametrize("name", ["choice_closer_point", "choice_closer_point_fine"])
def test_closer_point_pairs_keep_their_depth_gap_and_the_letter_names_the_closer_point(name):
    """The default pairs differ by at least 0.25 m and 10%; the fine pairs by less, but by at least 0.08 m and 4%
    (clear of the relation's tie margin). The answer letter names the point the depth map puts closer."""
    from spatialboost.datagen.dataset.validate import check_fact
    from spatialboost.datagen.questions.choices import FINE_POINT_GAP, MIN_POINT_GAP

    cfg = ConversationConfig(levels=["pixel"], turns={"pixel": 0}, caption=False, extra_turns={name: 4})
    gaps = []
    for seed in range(12):
        scene = random_scene(seed)
        graph = SceneGraph(scene)
        for qa in build_conversation(graph, cfg, random.Random(seed)):
            assert qa.template == name and check_fact(graph, qa.fact, qa.answer, qa.template) == []
            a = qa.fact["args"]
            depth = scene.views[a["view"]].depth
            d1, d2 = float(depth[a["y1"], a["x1"]]), float(depth[a["y2"], a["x2"]])
            clear = abs(d1 - d2) >= max(MIN_POINT_GAP, 0.1 * min(d1, d2))
            if name.endswith("_fine"):
                assert not clear and abs(d1 - d2) >= max(FINE_POINT_GAP[0], FINE_POINT_GAP[1] * min(d1, d2))
            else:
                assert clear
            assert qa.answer == ("A." if d1 < d2 else "B.")
            gaps.append(abs(d1 - d2))
    assert len(gaps) > 20


def test_orders():
    g = SceneGraph(four_boxes())
    fwd = [
        RANK[qa.level] for qa in build_conversation(g, ConversationConfig(order="forward"), random.Random(1))
    ]
    rev = [
        RANK[qa.level] for qa in build_conversation(g, ConversationConfig(order="reverse"), random.Random(1))
    ]
    assert fwd == sorted(fwd) and fwd[0] == 0
    assert rev[:-1] == sorted(rev[:-1], reverse=True) and rev[-1] == 3
    seqs = {tuple(level_sequence(ConversationConfig(order="shuffled"), random.Random(s))) for s in range(10)}
    assert len(seqs) > 1 and all(sorted(s) == sorted(next(iter(seqs))) for s in seqs)


def test_levels_and_turns_config():
    g = SceneGraph(four_boxes())
    cfg = ConversationConfig(levels=["pixel"], turns={"pixel": 4}, caption=False)
    turns = build_conversation(g, cfg, random.Random(0))
    assert [qa.level for qa in turns] == ["pixel"] * 4
    with pytest.raises(ConfigError):
        load_config(ConversationConfig, overrides=["levels=[pixel, voxel]"])
    with pytest.raises(ConfigError):
        load_config(ConversationConfig, overrides=["order=sideways"])


def test_deterministic():
    g = SceneGraph(random_scene(5, num_views=2))
    a = build_conversation(g, ConversationConfig(), random.Random(7))
    b = build_conversation(SceneGraph(random_scene(5, num_views=2)), ConversationConfig(), random.Random(7))
    assert [(q.question, q.answer) for q in a] == [(q.question, q.answer) for q in b]


def test_object_rationale_cites_points_on_the_objects(corpus):
    cited = 0
    for g, _, turns in corpus:
        for qa in turns:
            if (
                qa.level == "object"
                and qa.fact["support"]
                and qa.fact["fn"] in ("left_right", "front_behind")
            ):
                a, b = qa.fact["args"]["a"], qa.fact["args"]["b"]
                ids = [
                    R.instance_at(g, s["args"]["view"], s["args"]["x"], s["args"]["y"]).value
                    for s in qa.fact["support"]
                ]
                assert ids == [a, b]
                cited += 1
    assert cited > 10


def test_pixel_points_land_on_objects_often(corpus):
    on, total = 0, 0
    for g, _, turns in corpus:
        for qa in turns:
            if qa.fact["fn"] == "depth_at":
                a = qa.fact["args"]
                total += 1
                on += (
                    R.instance_at(g, a["view"], a["x"], a["y"]).value is not None
                    and g.scene.views[a["view"]].instance[a["y"], a["x"]] > 0
                )
    assert on / total > 0.5


def test_norm1000_coordinates_round_trip(corpus):
    for g, cfg, turns in corpus:
        if cfg.coords != "norm1000":
            continue
        for qa in turns:
            if qa.fact["fn"] == "depth_at":
                assert "0-1000" in qa.question
                cx, cy = map(int, re.search(r"\((\d+), (\d+)\)", qa.question).groups())
                from spatialboost.datagen.questions.phrasing import Context

                ctx = Context(graph=g, coords="norm1000")
                assert from_coords(ctx, 0, cx, cy) == (qa.fact["args"]["x"], qa.fact["args"]["y"])


def test_multiview_questions_appear_only_with_views(corpus):
    for g, _, turns in corpus:
        mv = [qa for qa in turns if qa.template.startswith("mv_")]
        if g.num_views == 1:
            assert not mv
    assert any(qa.template.startswith("mv_") for _, _, t in corpus for qa in t)


def test_empty_scene_and_missing_maps():
    empty = make_scene([], [camera((0, -4, 1.5), (0, 1, 0.3))])
    turns = build_conversation(empty, ConversationConfig(), random.Random(0))
    assert {qa.level for qa in turns} <= {"pixel", "scene", "caption"} and len(turns) >= 3
    assert "no objects" in turns[-1].answer
    for qa in turns:
        _check_fact(SceneGraph(empty), qa.fact, qa.answer)

    bare = four_boxes()
    for v in bare.views:
        v.depth = v.instance = v.semantic = None
    turns = build_conversation(bare, ConversationConfig(), random.Random(0))
    assert turns and all(qa.level != "pixel" for qa in turns)

    nothing = make_scene([], [camera((0, -4, 1.5), (0, 1, 0.3))])
    nothing.views[0].depth = nothing.views[0].instance = None
    turns = build_conversation(nothing, ConversationConfig(caption=False), random.Random(0))
    assert len(turns) >= 1


def test_to_llava_one_image_token_per_view():
    g = SceneGraph(four_boxes(num_views=3))
    turns = build_conversation(g, ConversationConfig(), random.Random(0))
    rec = to_llava("s0", ["a.png", "b.png", "c.png"], turns)
    conv = rec["conversations"]
    assert rec["image"] == ["a.png", "b.png", "c.png"]
    assert conv[0]["value"].startswith("<image>\n<image>\n<image>\n")
    assert sum(c["value"].count("<image>") for c in conv) == 3
    assert [c["from"] for c in conv] == ["human", "gpt"] * len(turns)
    single = to_llava("s1", ["a.png"], turns)
    assert single["image"] == "a.png" and single["conversations"][0]["value"].count("<image>") == 1


def test_numbers_have_units_and_two_decimals(corpus):
    for _, _, turns in corpus:
        for qa in turns:
            for num in re.findall(r"(\d+\.\d+) m(?![\^\w])", qa.answer):
                assert len(num.split(".")[1]) == 2


def _conversations_digest() -> str:
    """sha256 of the records + facts generated for fixed scenes and seeds (hand-built and synthetic)."""
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene

    h = hashlib.sha256()
    scenes = [random_scene(s, num_views=1 + s % 3) for s in range(24)]
    scenes += [generate_scene(s, SyntheticConfig(image_size=64, views=1 + s % 2)) for s in range(4)]
    for i, scene in enumerate(scenes):
        for seed in range(2):
            order = ("forward", "reverse", "shuffled")[i % 3]
            cfg = ConversationConfig(coords=("pixels", "norm1000")[seed], order=order)
            turns = build_conversation(SceneGraph(scene), cfg, random.Random(1000 * seed + i))
            rec = {
                "llava": to_llava(f"s{i}", ["v"] * len(scene.views), turns),
                "facts": [t.fact for t in turns],
            }
            h.update(json.dumps(rec, sort_keys=True, default=repr).encode())
    return h.hexdigest()


def test_outputs_for_fixed_seeds_are_pinned():
    """Speed-ups of the text generator must not change a single generated byte for the same seeds.

    Pinned on this environment (numpy renderer + CPython's ``random``); if a dependency upgrade moves it,
    check the diff of a few conversations before re-pinning.
    """
    assert _conversations_digest() == "dfeca400eb24c44fa2b5c97e5d827a6bc39260f96fe46af1f958b5f135bdfc10"

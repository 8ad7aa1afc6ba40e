"""Question templates: pure functions ``(scene, ctx, rng) -> QA | None`` filled from the scene graph.

Levels (paper Sec. 3.2, "narrow to broad"): ``pixel`` (depth / 3D position of points), ``object`` (relations
between two objects, citing pixel-level answers about points on them as the rationale), ``scene`` (metric
distances, sizes, layout, count) and ``caption`` (a template-based description, the last turn).
Multi-view templates (``multiview=True``) ask cross-view questions and only run on scenes with >= 2 views.

Every QA carries a machine-readable ``fact``: ``{"fn", "args", "value", "label", "expect", "support"}``:
the named function of ``relations.FACTS`` that produced the answer, its arguments, its value and label,
the substrings the answer must contain (``expect``), and the facts cited in the rationale (``support``).
A template returns ``None`` when its question cannot be answered without guessing (near-ties, no depth,
too few objects); the conversation builder then tries another.

The QA and context types and the phrasing templates share (numbers, points, facts, picking points and
pairs) live in ``phrasing``; this module holds the registry and the templates. Coordinates in questions: ``ctx.coords == "pixels"``: integer ``(x, y)`` = (column, row), origin top-left;
``"norm1000"``: ``(x, y)`` scaled to 0-1000 over the width/height, origin top-left (pixel = floor(v * W / 1000)).
The convention is stated in every question that gives a point. Distances: metres with 2 decimals (``"2.13 m"``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from spatialboost.datagen.questions import relations as R
from spatialboost.datagen.questions.phrasing import (
    QA,
    Context,
    cap,
    coord_note,
    decided_pair,
    depth_fact,
    depth_rationale,
    desc,
    in_view_text,
    m,
    make_fact,
    pick_object,
    sample_point,
    xy,
)
from spatialboost.datagen.questions.relations import FACTS, METRIC, SAME, Decision, SceneGraph
from spatialboost.datagen.scenes.scene import Scene
from spatialboost.registry import Registry

LEVELS = ("pixel", "object", "scene", "caption")
COORDS = ("pixels", "norm1000")


@dataclass(frozen=True)
class Template:
    name: str
    level: str
    fn: Callable[[Scene, Context, random.Random], QA | None]
    multiview: bool = False
    weight: float = 1.0
    auxiliary: bool = False  # never drawn by default; asked for by name (ConversationConfig.extra_turns)


TEMPLATES: Registry[Template] = Registry("question template")


def template(
    name: str, level: str, multiview: bool = False, weight: float = 1.0, auxiliary: bool = False
) -> Callable:
    def deco(fn: Callable[[Scene, Context, random.Random], QA | None]) -> Callable:
        TEMPLATES.add(name, Template(name, level, fn, multiview, weight, auxiliary))
        return fn

    return deco


# ----------------------------------------------------------------------------------------------- pixel level


@template("depth_at", "pixel", weight=2.0)
def t_depth_at(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    p = sample_point(ctx, rng, v)
    if p is None:
        return None
    pt = xy(ctx, v, p.x, p.y)
    q = rng.choice(
        (
            f"What is the depth value at coordinate {pt}?",
            f"How far from the camera is the surface at {pt}?",
            f"What is the metric depth at point {pt}?",
        )
    )
    ctx.points.append(p)
    d = Decision(p.depth, METRIC)
    fact = make_fact("depth_at", {"view": v, "x": p.x, "y": p.y}, d, [m(p.depth)])
    answer = f"The depth at {pt} is {m(p.depth)}."
    return QA("pixel", "depth_at", in_view_text(ctx, v, f"{q} {coord_note(ctx)}"), answer, fact)


@template("closer_point", "pixel")
def t_closer_point(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    p1, p2 = sample_point(ctx, rng, v), sample_point(ctx, rng, v)
    if p1 is None or p2 is None:
        return None
    d = R.closer_point(ctx.graph, v, p1.x, p1.y, p2.x, p2.y)
    if not d.ok:
        return None
    s1, s2 = xy(ctx, v, p1.x, p1.y), xy(ctx, v, p2.x, p2.y)
    q = rng.choice(
        (
            f"Which point is closer to the camera, {s1} or {s2}?",
            f"Of the points {s1} and {s2}, which one is nearer to the viewer?",
        )
    )
    ctx.points += [p1, p2]
    win = s1 if d.label == "first" else s2
    verdict = f"so {win} is closer"
    answer = f"{s1} is at {m(p1.depth)} and {s2} is at {m(p2.depth)}, {verdict}."
    args = {"view": v, "x1": p1.x, "y1": p1.y, "x2": p2.x, "y2": p2.y}
    fact = make_fact("closer_point", args, d, [verdict], [depth_fact(p1), depth_fact(p2)])
    return QA("pixel", "closer_point", in_view_text(ctx, v, f"{q} {coord_note(ctx)}"), answer, fact)


@template("point_3d", "pixel")
def t_point_3d(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    p = sample_point(ctx, rng, v)
    if p is None:
        return None
    d = R.point_3d(ctx.graph, v, p.x, p.y)
    pt = xy(ctx, v, p.x, p.y)
    q = rng.choice(
        (
            f"What is the 3D position of the point at {pt} in camera coordinates?",
            f"Give the 3D coordinates of the surface point seen at {pt}, relative to the camera.",
        )
    )
    ctx.points.append(p)
    pos = "(" + ", ".join(f"{c:.2f}" for c in d.value) + ") m"
    answer = f"The point at {pt} is at {pos} (x right, y down, z forward)."
    fact = make_fact("point_3d", {"view": v, "x": p.x, "y": p.y}, d, [pos])
    note = f"{coord_note(ctx)[:-1]}; answer in metres with x right, y down, z forward)"
    return QA("pixel", "point_3d", in_view_text(ctx, v, f"{q} {note}"), answer, fact)


# ----------------------------------------------------------------------------------------------- object level


def _yes_no(asked: str, label: str) -> str:
    return "Yes" if asked == label else "No"


@template("left_right", "object", weight=1.5)
def t_left_right(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    got = decided_pair(ctx, rng, lambda a, b: R.left_right(ctx.graph, v, a, b))
    if got is None:
        return None
    a, b, d, A, B = got
    asked = rng.choice(("left", "right"))
    q = rng.choice(
        (
            f"Is {A} to the {asked} of {B}?",
            f"Is {A} on the {asked} side of {B}?",
            f"From the camera's viewpoint, is {A} {asked} of {B}?",
        )
    )
    why, support, _ = depth_rationale(ctx, rng, v, a, b)
    statement = f"{A} is to the {d.label} of {B}"
    answer = (
        f"{why}In 3D their centres are {m(abs(d.value))} apart sideways. "
        f"{_yes_no(asked, d.label)}, {statement}."
    )
    fact = make_fact("left_right", {"view": v, "a": a, "b": b}, d, [statement, m(abs(d.value))], support)
    return QA("object", "left_right", in_view_text(ctx, v, q), answer, fact)


@template("front_behind", "object", weight=1.5)
def t_front_behind(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    got = decided_pair(ctx, rng, lambda a, b: R.front_behind(ctx.graph, v, a, b))
    if got is None:
        return None
    a, b, d, A, B = got
    why, support, (pa, pb) = depth_rationale(ctx, rng, v, a, b)
    if pa is not None and pb is not None and (pa.depth < pb.depth) != (d.label == "in front of"):
        why, support = (
            "",
            [],
        )  # the cited points disagree with the boxes (large or slanted objects): cite none
    asked = rng.choice(("in front of", "behind"))
    q = rng.choice(
        (
            f"Is {A} {asked} {B}?",
            f"Seen from the camera, is {A} {asked} {B}?",
            f"Is {A} {'closer to' if asked == 'in front of' else 'farther from'} the camera than {B}?",
        )
    )
    statement = f"{A} is {d.label} {B}"
    answer = f"{why}{_yes_no(asked, d.label)}, {statement}."
    fact = make_fact("front_behind", {"view": v, "a": a, "b": b}, d, [statement], support)
    return QA("object", "front_behind", in_view_text(ctx, v, q), answer, fact)


@template("above_below", "object", weight=0.5)
def t_above_below(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    got = decided_pair(ctx, rng, lambda a, b: R.above_below(ctx.graph, a, b))
    if got is None:
        return None
    a, b, d, A, B = got
    spans = [R.vertical_span(ctx.graph, o) for o in (a, b)]
    (sa, sb) = (f"{s.value[0]:.2f}-{s.value[1]:.2f} m" for s in spans)
    asked = rng.choice(("above", "below"))
    q = rng.choice((f"Is {A} {asked} {B}?", f"Is {A} located {asked} {B}?"))
    statement = f"{A} is {d.label} {B}"
    answer = f"{cap(A)} spans heights {sa} and {B} {sb}. {_yes_no(asked, d.label)}, {statement}."
    support = [
        make_fact("vertical_span", {"a": o}, s, [t]) for o, s, t in ((a, spans[0], sa), (b, spans[1], sb))
    ]
    fact = make_fact("above_below", {"a": a, "b": b}, d, [statement], support)
    return QA("object", "above_below", in_view_text(ctx, v, q), answer, fact)


@template("bigger_smaller", "object")
def t_bigger_smaller(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    got = decided_pair(ctx, rng, lambda a, b: R.bigger_smaller(ctx.graph, a, b), need_ok=False)
    if got is None:
        return None
    a, b, d, A, B = got
    q = rng.choice((f"Is {A} bigger than {B}?", f"Which is larger, {A} or {B}?", f"Is {A} smaller than {B}?"))
    vols = [R.object_volume(ctx.graph, o) for o in (a, b)]
    va, vb = (f"{v.value:.3f} m^3" for v in vols)
    statement = f"{A} and {B} are about the same size" if d.label == SAME else f"{A} is {d.label} than {B}"
    answer = f"{cap(A)} has a volume of {va} and {B} {vb}, so {statement}."
    support = [
        make_fact("object_volume", {"a": o}, v, [t]) for o, v, t in ((a, vols[0], va), (b, vols[1], vb))
    ]
    fact = make_fact("bigger_smaller", {"a": a, "b": b}, d, [statement], support)
    return QA("object", "bigger_smaller", in_view_text(ctx, ctx.view, q), answer, fact)


@template("taller_shorter", "object")
def t_taller_shorter(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    got = decided_pair(ctx, rng, lambda a, b: R.taller_shorter(ctx.graph, a, b), need_ok=False)
    if got is None:
        return None
    a, b, d, A, B = got
    ha, hb = R.object_height(ctx.graph, a).value, R.object_height(ctx.graph, b).value
    q = rng.choice((f"Is {A} taller than {B}?", f"Which is taller, {A} or {B}?", f"Is {A} shorter than {B}?"))
    statement = f"{A} and {B} are about the same height" if d.label == SAME else f"{A} is {d.label} than {B}"
    answer = f"{cap(A)} is {m(ha)} tall and {B} is {m(hb)} tall, so {statement}."
    heights = [
        make_fact("object_height", {"a": o}, R.object_height(ctx.graph, o), [f"{m(h)} tall"])
        for o, h in ((a, ha), (b, hb))
    ]
    fact = make_fact("taller_shorter", {"a": a, "b": b}, d, [statement], heights)
    return QA("object", "taller_shorter", in_view_text(ctx, ctx.view, q), answer, fact)


# ----------------------------------------------------------------------------------------------- scene level


@template("center_distance", "scene", weight=1.5)
def t_center_distance(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    got = decided_pair(ctx, rng, lambda a, b: R.center_distance(ctx.graph, a, b), need_ok=False)
    if got is None:
        return None
    a, b, d, A, B = got
    q = rng.choice(
        (
            f"How far is {A} from {B}?",
            f"What is the distance between {A} and {B}?",
            f"How many metres separate the centres of {A} and {B}?",
        )
    )
    answer = f"The centres of {A} and {B} are {m(d.value)} apart."
    fact = make_fact("center_distance", {"a": a, "b": b}, d, [m(d.value)])
    return QA("scene", "center_distance", q, answer, fact)


@template("surface_distance", "scene")
def t_surface_distance(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    got = decided_pair(ctx, rng, lambda a, b: R.surface_distance(ctx.graph, a, b), need_ok=False)
    if got is None:
        return None
    a, b, d, A, B = got
    q = rng.choice(
        (f"How large is the gap between {A} and {B}?", f"What is the closest distance between {A} and {B}?")
    )
    answer = (
        f"{cap(A)} and {B} touch (gap {m(0.0)})."
        if d.value == 0
        else f"Their closest surfaces are {m(d.value)} apart."
    )
    fact = make_fact("surface_distance", {"a": a, "b": b}, d, [m(d.value)])
    return QA("scene", "surface_distance", q, answer, fact)


_SIZE_WORDS = {
    "object_width": ("wide", "width"),
    "object_height": ("tall", "height"),
    "object_depth": ("deep", "depth"),
}


@template("object_size", "scene")
def t_object_size(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    a = pick_object(ctx, rng, v)
    if a is None:
        return None
    fn = rng.choice(tuple(_SIZE_WORDS))
    args = {"a": a} if fn == "object_height" else {"view": v, "a": a}
    d = FACTS.get(fn)(ctx.graph, **args)
    adj, noun = _SIZE_WORDS[fn]
    A = desc(ctx, a)
    q = rng.choice((f"How {adj} is {A}?", f"What is the {noun} of {A} in metres?"))
    if fn != "object_height":
        q = in_view_text(ctx, v, f"{q} (as seen from the camera)")
    answer = f"{cap(A)} is {m(d.value)} {adj}."
    return QA("scene", "object_size", q, answer, make_fact(fn, args, d, [m(d.value)]))


def _count_text(n: int) -> str:
    return "no objects" if n == 0 else ("1 object" if n == 1 else f"{n} objects")


@template("object_count", "scene", weight=0.7)
def t_object_count(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    d = R.object_count(ctx.graph, v)
    q = rng.choice(("How many objects are there in the image?", "How many distinct objects can you see?"))
    text = _count_text(d.value)
    return QA(
        "scene",
        "object_count",
        in_view_text(ctx, v, q),
        f"There are {text}.",
        make_fact("object_count", {"view": v}, d, [text]),
    )


@template("closest_object", "scene")
def t_closest_object(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    nearest = rng.random() < 0.5
    fn = "closest_object" if nearest else "farthest_object"
    d = FACTS.get(fn)(ctx.graph, v)
    if not d.ok:
        return None
    obj, dist, other = d.value
    word = "closest to" if nearest else "farthest from"
    q = rng.choice((f"Which object is {word} the camera?", f"Name the object {word} the viewer."))
    statement = f"{cap(desc(ctx, obj))} is {word} the camera, {m(dist)} away"
    answer = f"{statement} (the next one is at {m(other)})."
    fact = make_fact(fn, {"view": v}, d, [statement, f"next one is at {m(other)}"])
    return QA("scene", "closest_object", in_view_text(ctx, v, q), answer, fact)


def _layout_text(ctx: Context, ids: list[int]) -> str:
    return "from left to right: " + ", ".join(desc(ctx, i) for i in ids)


@template("layout", "scene", weight=0.7)
def t_layout(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    d = R.left_to_right(ctx.graph, v)
    if not d.ok or len(d.value) > 5:
        return None
    q = rng.choice(
        ("List the objects from left to right.", "In what order do the objects appear from left to right?")
    )
    text = cap(_layout_text(ctx, d.value))
    return QA(
        "scene",
        "layout",
        in_view_text(ctx, v, q),
        text + ".",
        make_fact("left_to_right", {"view": v}, d, [text]),
    )


# ----------------------------------------------------------------------------------------------- caption


@FACTS.register("caption")
def scene_caption(g: SceneGraph, view: int) -> Decision:
    """A deterministic, template-based description of the scene from one view (value = the text)."""
    ctx = Context(graph=g, view=view)
    ids = g.visible(view)
    parts = [
        f"The image shows {_count_text(len(ids))}"
        + (": " + ", ".join(desc(ctx, i) for i in ids) if ids else "")
    ]
    near, far = R.closest_object(g, view), R.farthest_object(g, view)
    if near.ok:
        parts.append(f"{cap(desc(ctx, near.value[0]))} is closest to the camera, at {m(near.value[1])}")
    if far.ok:
        parts.append(f"{desc(ctx, far.value[0])} is farthest, at {m(far.value[1])}")
    order = R.left_to_right(g, view)
    if order.ok and len(order.value) <= 5:
        parts.append(cap(_layout_text(ctx, order.value)))
    depth = g.scene.views[view].depth
    if not ids and depth is not None and (depth > 0).any():
        valid = depth[depth > 0]
        parts.append(
            f"Visible surfaces lie between {m(float(valid.min()))} and {m(float(valid.max()))} from the camera"
        )
    return Decision(". ".join(cap(p) for p in parts) + ".", METRIC)


@template("caption", "caption")
def t_caption(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    d = scene_caption(ctx.graph, ctx.view)
    q = rng.choice(
        ("Describe the scene.", "Give a short description of the image.", "Summarise what the image shows.")
    )
    return QA(
        "caption",
        "caption",
        in_view_text(ctx, ctx.view, q),
        d.value,
        make_fact("caption", {"view": ctx.view}, d, [d.value]),
    )


# ----------------------------------------------------------------------------------------------- multi-view


def _two_views(ctx: Context, rng: random.Random) -> tuple[int, int] | None:
    if ctx.graph.num_views < 2:
        return None
    v1, v2 = rng.sample(range(ctx.graph.num_views), 2)
    return v1, v2


@template("mv_closer_view", "object", multiview=True)
def t_mv_closer_view(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    views = _two_views(ctx, rng)
    if views is None:
        return None
    v1, v2 = views
    both = sorted(set(ctx.graph.visible(v1)) & set(ctx.graph.visible(v2)))
    if not both:
        return None
    a = rng.choice(both)
    d = R.closer_view(ctx.graph, a, v1, v2)
    if not d.ok:
        return None
    A = desc(ctx, a)
    d1, d2 = R.camera_distance(ctx.graph, v1, a), R.camera_distance(ctx.graph, v2, a)
    q = f"In which view is {A} closer to the camera, view {v1 + 1} or view {v2 + 1}?"
    win = v1 if d.label == "first" else v2
    verdict = f"closer in view {win + 1}"
    answer = f"{cap(A)} is {m(d1)} from the camera in view {v1 + 1} and {m(d2)} in view {v2 + 1}, so it is {verdict}."
    return QA(
        "object",
        "mv_closer_view",
        q,
        answer,
        make_fact("closer_view", {"a": a, "v1": v1, "v2": v2}, d, [verdict]),
    )


def _signed(x: float, pos: str, neg: str) -> str:
    return f"{m(abs(x))} {pos if x >= 0 else neg}"


@template("mv_camera_motion", "scene", multiview=True)
def t_mv_camera_motion(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    views = _two_views(ctx, rng)
    if views is None:
        return None
    v1, v2 = views
    d = R.camera_motion(ctx.graph, v1, v2)
    dx, dy, dz = d.value
    q = rng.choice(
        (
            f"How did the camera move from view {v1 + 1} to view {v2 + 1}?",
            f"Relative to view {v1 + 1}, where is the camera of view {v2 + 1}?",
        )
    )
    motion = ", ".join(
        (
            _signed(dx, "to the right", "to the left"),
            _signed(dy, "forward", "backward"),
            _signed(dz, "up", "down"),
        )
    )
    answer = f"The camera moved {motion} (in the horizontal frame of view {v1 + 1})."
    return QA(
        "scene", "mv_camera_motion", q, answer, make_fact("camera_motion", {"v1": v1, "v2": v2}, d, [motion])
    )


@template("mv_same_object", "object", multiview=True)
def t_mv_same_object(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    views = _two_views(ctx, rng)
    if views is None:
        return None
    v1, v2 = views
    both = sorted(set(ctx.graph.object_pixels(v1)) & set(ctx.graph.object_pixels(v2)))
    if not both:
        return None
    a = rng.choice(both)
    p1, p2 = sample_point(ctx, rng, v1, a), sample_point(ctx, rng, v2, a)
    if p1 is None or p2 is None or p1.obj != a or p2.obj != a:
        return None
    s1, s2 = xy(ctx, v1, p1.x, p1.y), xy(ctx, v2, p2.x, p2.y)
    q = f"The point {s1} in view {v1 + 1} lies on an object. Where does that object appear in view {v2 + 1}? {coord_note(ctx)}"
    answer = f"It is {desc(ctx, a)}; in view {v2 + 1} it is visible, for example at {s2}."
    d = R.instance_at(ctx.graph, v1, p1.x, p1.y)
    support = [
        make_fact(
            "instance_at", {"view": v2, "x": p2.x, "y": p2.y}, R.instance_at(ctx.graph, v2, p2.x, p2.y), []
        )
    ]
    return QA(
        "object",
        "mv_same_object",
        q,
        answer,
        make_fact("instance_at", {"view": v1, "x": p1.x, "y": p1.y}, d, [desc(ctx, a), s2], support),
    )

"""The phrasing every question template shares: the QA and context types, how numbers, points and objects are
written (metres with 2 decimals, ``(x, y)`` in the context's coordinates, "In view k, ..."), the machine-readable
``fact`` of an answer, and how points and object pairs are picked for a question or a rationale.

``templates`` (the open-ended questions) and ``choices`` (the A/B ones) both phrase through this module, so a
new template family reads the same as the old ones. Coordinates: ``ctx.coords == "pixels"``: integer ``(x, y)``
= (column, row), origin top-left; ``"norm1000"``: ``(x, y)`` scaled to 0-1000 over the width/height.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spatialboost.datagen.questions import relations as R
from spatialboost.datagen.questions.relations import METRIC, Decision, SceneGraph


@dataclass
class QA:
    level: str
    template: str
    question: str
    answer: str
    fact: dict[str, Any]


@dataclass
class PointNote:
    """A pixel-level answer already given in the conversation (for object-level rationales)."""

    view: int
    x: int
    y: int
    depth: float
    obj: int  # 0 = background


@dataclass
class Context:
    graph: SceneGraph
    view: int = 0
    coords: str = "pixels"
    focus: list[int] = field(default_factory=list)  # object ids pixel-level turns should land on
    points: list[PointNote] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- formatting


def m(x: float) -> str:
    """Metres with 2 decimals: ``2.13 m``."""
    return f"{x:.2f} m"


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def make_fact(
    fn: str, args: dict[str, Any], d: Decision, expect: list[str], support: list | None = None
) -> dict:
    return {
        "fn": fn,
        "args": args,
        "value": d.value,
        "label": d.label,
        "expect": expect,
        "support": support or [],
    }


def in_view_text(ctx: Context, view: int, q: str = "") -> str:
    """``q`` prefixed with "In view k, " in multi-view samples (1-based in text)."""
    if ctx.graph.num_views > 1:
        return f"In view {view + 1}, {q[:1].lower()}{q[1:]}"
    return q


def coord_note(ctx: Context) -> str:
    if ctx.coords == "norm1000":
        return "(x, y are normalised to 0-1000 across the width and height, origin at the top-left)"
    return "(x, y in pixels, origin at the top-left)"


def view_size(ctx: Context, view: int) -> tuple[int, int]:
    cam = ctx.graph.scene.views[view].camera
    return cam.width, cam.height


def to_coords(ctx: Context, view: int, x: int, y: int) -> tuple[int, int]:
    if ctx.coords == "pixels":
        return x, y
    w, h = view_size(ctx, view)
    return round((x + 0.5) * 1000 / w), round((y + 0.5) * 1000 / h)


def from_coords(ctx: Context, view: int, cx: int, cy: int) -> tuple[int, int]:
    if ctx.coords == "pixels":
        return cx, cy
    w, h = view_size(ctx, view)
    return min(cx * w // 1000, w - 1), min(cy * h // 1000, h - 1)


def xy(ctx: Context, view: int, x: int, y: int) -> str:
    cx, cy = to_coords(ctx, view, x, y)
    return f"({cx}, {cy})"


def desc(ctx: Context, obj: int) -> str:
    return ctx.graph.objects[obj].description


# ----------------------------------------------------------------------------------------------- point sampling


def snap_point(ctx: Context, view: int, x: int, y: int) -> tuple[int, int]:
    """The pixel a question's coordinates refer to (identity for pixels; exact round trip for W, H <= 1000)."""
    if ctx.coords == "pixels":
        return x, y
    return from_coords(ctx, view, *to_coords(ctx, view, x, y))


def sample_point(ctx: Context, rng: random.Random, view: int, obj: int | None = None) -> PointNote | None:
    """A pixel with valid depth: on ``obj`` if given, else on a focus object (often), else anywhere."""
    g = ctx.graph
    depth = g.scene.views[view].depth
    if depth is None:
        return None
    pixels = g.object_pixels(view)
    if obj is not None and obj not in pixels:
        return None
    if obj is None and pixels and rng.random() < 0.8:
        cands = [o for o in ctx.focus if o in pixels] or sorted(pixels)
        cited = {p.obj for p in ctx.points if p.view == view}
        fresh = [o for o in cands if o not in cited]
        obj = rng.choice(fresh or cands)
    if obj is not None and obj in pixels:
        xs, ys = pixels[obj]
        i = rng.randrange(len(xs))
        x, y = snap_point(ctx, view, int(xs[i]), int(ys[i]))
    else:
        h, w = depth.shape
        for _ in range(20):
            x, y = snap_point(ctx, view, rng.randrange(w), rng.randrange(h))
            if depth[y, x] > 0:
                break
        else:
            return None
    d = float(depth[y, x])
    if d <= 0:
        return None
    inst = g.scene.views[view].instance
    return PointNote(view, x, y, R.depth_at(g, view, x, y).value, int(inst[y, x]) if inst is not None else 0)


def cite(ctx: Context, rng: random.Random, view: int, obj: int) -> PointNote | None:
    """A point on ``obj`` for a rationale: one already asked about if any, else a fresh one."""
    for p in reversed(ctx.points):
        if p.view == view and p.obj == obj:
            return p
    return sample_point(ctx, rng, view, obj)


def depth_fact(p: PointNote) -> dict:
    args = {"view": p.view, "x": p.x, "y": p.y}
    return {
        "fn": "depth_at",
        "args": args,
        "value": p.depth,
        "label": METRIC,
        "expect": [m(p.depth)],
        "support": [],
    }


def depth_rationale(ctx: Context, rng: random.Random, view: int, a: int, b: int) -> tuple[str, list, tuple]:
    """ "The point (x1, y1) on A is at 2.10 m and the point (x2, y2) on B is at 3.40 m." plus support facts."""
    pa, pb = cite(ctx, rng, view, a), cite(ctx, rng, view, b)
    if pa is None or pb is None:
        return "", [], (pa, pb)
    text = (
        f"The point {xy(ctx, view, pa.x, pa.y)} on {desc(ctx, a)} is at a depth of {m(pa.depth)} and "
        f"the point {xy(ctx, view, pb.x, pb.y)} on {desc(ctx, b)} is at {m(pb.depth)}. "
    )
    return text, [depth_fact(pa), depth_fact(pb)], (pa, pb)


def pick_pair(ctx: Context, rng: random.Random, view: int) -> tuple[int, int] | None:
    """Two distinct visible objects, preferring the conversation's focus objects."""
    vis = ctx.graph.visible(view)
    if len(vis) < 2:
        return None
    focus = [o for o in ctx.focus if o in vis]
    pool = focus if len(focus) >= 2 and rng.random() < 0.7 else vis
    a, b = rng.sample(pool, 2)
    return a, b


def decided_pair(
    ctx: Context, rng: random.Random, decide: Callable[[int, int], Decision], need_ok: bool = True
) -> tuple[int, int, Decision, str, str] | None:
    """Two visible objects of the current view, the relation ``decide(a, b)`` between them, and their
    descriptions; None when no pair exists or (with ``need_ok``) the relation is a near-tie."""
    pair = pick_pair(ctx, rng, ctx.view)
    if pair is None:
        return None
    a, b = pair
    d = decide(a, b)
    if need_ok and not d.ok:
        return None
    return a, b, d, desc(ctx, a), desc(ctx, b)


def pick_object(ctx: Context, rng: random.Random, view: int) -> int | None:
    vis = ctx.graph.visible(view)
    return rng.choice(vis) if vis else None

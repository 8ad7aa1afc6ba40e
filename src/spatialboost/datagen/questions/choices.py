"""Auxiliary templates: questions the text alone cannot answer, and dense multi-point readouts.

They are registered with ``auxiliary=True``: never drawn by the default conversation mix (its outputs stay
as they were), added by name with ``ConversationConfig.extra_turns``. Two kinds:

- **balanced A/B choices**, answered by the letter alone: "Which point is closer to the camera: (A)
  (12, 40) or (B) (51, 41)? Answer with A or B." -> "A.". The correct letter is drawn 50/50 and the question
  carries no cue to it: the two points of ``choice_closer_point`` lie on the same image row (a point lower in the image
  is usually closer, which a text-only model would otherwise learn from the coordinates), and gaps are
  large enough to be visible. Their facts add ``choices`` (["A", "B"]) and ``answer_choice`` so the image
  gain can score the decision token (``train.image_gain``), chance 50%;
- **readouts**: ``depth_readout`` asks the depth at several points in one turn and answers the depths alone,
  in the order asked (a compact, dense pixel-level answer: many depth values per image for few tokens).

Why terse answers: with a from-scratch LM, an answer's loss is mostly text it can copy from the question
(coordinates, object names); the few tokens that need the image are a small share of the gradient and the
LM learns to read far more slowly. Measured: A/B questions answered "A." were read (85% accuracy with the
right images, 52% with other scenes', the frozen-feature probe's bound) after 300 steps, while the same
questions followed by a rationale echoing the coordinates stayed at chance after 500 (docs/results.md).

Every fact is one of ``relations.FACTS`` (validated like any other), with its arguments in the A/B order
of the question, so label "first" / "in front of" / "left" / "bigger" means A.
"""

from __future__ import annotations

import random

from spatialboost.datagen.questions import relations as R
from spatialboost.datagen.questions.phrasing import (
    QA,
    Context,
    coord_note,
    depth_fact,
    desc,
    in_view_text,
    m,
    make_fact,
    pick_pair,
    sample_point,
    snap_point,
    view_size,
    xy,
)
from spatialboost.datagen.questions.templates import template
from spatialboost.datagen.scenes.scene import Scene

CHOICES = ["A", "B"]
MIN_POINT_GAP = 0.25  # metres between the two points' depths (and 10% of the nearer one)
# the fine pairs of ``choice_closer_point_fine``: closer than the default's gap (below 0.25 m or 10%), yet at least
# 0.08 m and 4% apart, clear of the closer_point relation's own tie margin (0.05 m or 3%)
FINE_POINT_GAP = (0.08, 0.04)
MIN_OBJECT_GAP = 0.30  # metres between two objects' viewer-forward centres
READOUT_POINTS = 6


def _choice_fact(fn: str, args: dict, d: R.Decision, letter: str, support: list | None = None) -> dict:
    fact = make_fact(fn, args, d, [f"{letter}."], support)
    fact.update(choices=list(CHOICES), answer_choice=letter)
    return fact


def _ab_order(rng: random.Random, first_is_answer: bool) -> bool:
    """Whether to swap the pair so the correct letter is drawn 50/50 (independently of the pair)."""
    want_a = rng.random() < 0.5
    return want_a != first_is_answer


def _clear_gap(d1: float, d2: float) -> bool:
    """The default pairs' depth gap: large enough to be visible."""
    return abs(d1 - d2) >= max(MIN_POINT_GAP, 0.1 * min(d1, d2))


def _fine_gap(d1: float, d2: float) -> bool:
    """A gap the default pairs exclude (below theirs) but clear of the relation's tie margin."""
    metres, share = FINE_POINT_GAP
    return not _clear_gap(d1, d2) and abs(d1 - d2) >= max(metres, share * min(d1, d2))


def _same_row_pair(
    ctx: Context, rng: random.Random, view: int, gap=_clear_gap
) -> tuple[int, int, int, int] | None:
    """Two pixels on (nearly) the same row, far apart in x, with valid depths whose difference passes ``gap``."""
    depth = ctx.graph.scene.views[view].depth
    if depth is None:
        return None
    w, h = view_size(ctx, view)
    for _ in range(40):
        y = rng.randrange(h)
        x1, x2 = rng.randrange(w), rng.randrange(w)
        y2 = min(h - 1, max(0, y + rng.choice((-1, 0, 1))))
        (x1, y1), (x2, y2) = snap_point(ctx, view, x1, y), snap_point(ctx, view, x2, y2)
        d1, d2 = float(depth[y1, x1]), float(depth[y2, x2])
        if abs(x1 - x2) < w / 8 or d1 <= 0 or d2 <= 0:
            continue
        if gap(d1, d2):
            return x1, y1, x2, y2
    return None


@template("choice_closer_point", "pixel", auxiliary=True)
def t_choice_closer_point(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    return _closer_point_choice(ctx, rng, "choice_closer_point", _clear_gap)


@template("choice_closer_point_fine", "pixel", auxiliary=True)
def t_choice_closer_point_fine(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    """``choice_closer_point`` on pairs closer in depth than its gap (FINE_POINT_GAP): harder for the VLM."""
    return _closer_point_choice(ctx, rng, "choice_closer_point_fine", _fine_gap)


def _closer_point_choice(ctx: Context, rng: random.Random, name: str, gap) -> QA | None:
    v = ctx.view
    pair = _same_row_pair(ctx, rng, v, gap)
    if pair is None:
        return None
    x1, y1, x2, y2 = pair
    d = R.closer_point(ctx.graph, v, x1, y1, x2, y2)
    if not d.ok:
        return None
    if _ab_order(rng, d.label == "first"):
        x1, y1, x2, y2 = x2, y2, x1, y1
        d = R.closer_point(ctx.graph, v, x1, y1, x2, y2)
    letter = "A" if d.label == "first" else "B"
    sa, sb = xy(ctx, v, x1, y1), xy(ctx, v, x2, y2)
    q = f"Which point is closer to the camera: (A) {sa} or (B) {sb}? Answer with A or B. {coord_note(ctx)}"
    args = {"view": v, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
    fact = _choice_fact("closer_point", args, d, letter)
    return QA("pixel", name, in_view_text(ctx, v, q), f"{letter}.", fact)


def _object_choice(ctx: Context, rng: random.Random, decide, first_label: str, min_gap: float = 0.0):
    """(a, b, decision, letter) for two visible objects, A/B drawn 50/50; None on near-ties."""
    pair = pick_pair(ctx, rng, ctx.view)
    if pair is None:
        return None
    a, b = pair
    d = decide(a, b)
    if not d.ok or d.label == R.SAME or abs(float(d.value)) < min_gap or desc(ctx, a) == desc(ctx, b):
        return None
    if _ab_order(rng, d.label == first_label):
        a, b = b, a
        d = decide(a, b)
    return a, b, d, "A" if d.label == first_label else "B"


def _object_qa(ctx: Context, rng: random.Random, name: str, relation: str, decide, first_label: str,
               question: str, in_view: bool = True, min_gap: float = 0.0) -> QA | None:  # fmt: skip
    """An A/B question about two visible objects; ``question`` has ``{A}`` and ``{B}``; answer the letter."""
    got = _object_choice(ctx, rng, decide, first_label, min_gap)
    if got is None:
        return None
    a, b, d, letter = got
    q = question.format(A=desc(ctx, a), B=desc(ctx, b))
    args = {"view": ctx.view, "a": a, "b": b} if in_view else {"a": a, "b": b}
    fact = _choice_fact(relation, args, d, letter)
    return QA("object", name, in_view_text(ctx, ctx.view, q), f"{letter}.", fact)


@template("choice_closer_object", "object", auxiliary=True)
def t_choice_closer_object(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    return _object_qa(
        ctx, rng, "choice_closer_object", "front_behind", lambda a, b: R.front_behind(ctx.graph, ctx.view, a, b),
        "in front of", "Which object is closer to the camera: (A) {A} or (B) {B}? Answer with A or B.",
        min_gap=MIN_OBJECT_GAP,
    )  # fmt: skip


@template("choice_left_right", "object", auxiliary=True)
def t_choice_left_right(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    return _object_qa(
        ctx, rng, "choice_left_right", "left_right", lambda a, b: R.left_right(ctx.graph, ctx.view, a, b),
        "left", "Seen from the camera, which object is further left: (A) {A} or (B) {B}? Answer with A or B.",
    )  # fmt: skip


@template("choice_bigger", "object", auxiliary=True)
def t_choice_bigger(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    return _object_qa(
        ctx, rng, "choice_bigger", "bigger_smaller", lambda a, b: R.bigger_smaller(ctx.graph, a, b),
        "bigger", "Which object is bigger: (A) {A} or (B) {B}? Answer with A or B.", in_view=False,
    )  # fmt: skip


@template("depth_readout", "pixel", auxiliary=True)
def t_depth_readout(scene: Scene, ctx: Context, rng: random.Random) -> QA | None:
    v = ctx.view
    points = []
    for _ in range(READOUT_POINTS * 3):
        p = sample_point(ctx, rng, v)
        if p is not None and all((p.x, p.y) != (q.x, q.y) for q in points):
            points.append(p)
        if len(points) == READOUT_POINTS:
            break
    if len(points) < 2:
        return None
    listed = ", ".join(xy(ctx, v, p.x, p.y) for p in points)
    q = f"What is the depth at each of these points, in order: {listed}? {coord_note(ctx)}"
    answer = ", ".join(m(p.depth) for p in points) + "."
    first, rest = points[0], points[1:]
    fact = make_fact("depth_at", {"view": v, "x": first.x, "y": first.y}, R.Decision(first.depth, R.METRIC),
                      [m(first.depth)], [depth_fact(p) for p in rest])  # fmt: skip
    ctx.points += points
    return QA("pixel", "depth_readout", in_view_text(ctx, v, q), answer, fact)

"""Hierarchical spatial Chain-of-Thought conversations from a scene, and their LLaVA records.

A conversation is a list of ``QA`` turns, generated level by level (pixel -> object -> scene in the paper's
forward order, or reversed / shuffled for the Table 7 ablation), then an optional template-based caption as
the last turn. Turns are generated in the order they are shown, so an object-level rationale only cites
pixel-level answers that came before it. Multi-view scenes swap a share of the object/scene turns for
cross-view questions. The result depends only on (scene, config, rng): no global state.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from spatialboost.config import ConfigError
from spatialboost.constants import IMAGE_TOKEN
from spatialboost.datagen.questions import choices as _choices  # noqa: F401  (registers the auxiliary templates)
from spatialboost.datagen.questions.phrasing import QA, Context
from spatialboost.datagen.questions.relations import SceneGraph
from spatialboost.datagen.questions.templates import COORDS, TEMPLATES, Template
from spatialboost.datagen.scenes.scene import Scene

SPATIAL_LEVELS = ("pixel", "object", "scene")


@dataclass
class ConversationConfig:
    levels: list[str] = field(
        default_factory=lambda: list(SPATIAL_LEVELS)
    )  # which spatial levels, forward order
    order: Literal["forward", "reverse", "shuffled"] = "forward"
    turns: dict[str, int] = field(default_factory=lambda: {"pixel": 3, "object": 4, "scene": 3})
    caption: bool = True  # a template-based scene caption as the last turn
    coords: Literal["pixels", "norm1000"] = "pixels"  # how (x, y) points are written in questions
    multiview_share: float = 0.4  # share of object/scene turns that are cross-view in multi-view samples
    attempts: int = 8  # templates tried per turn before giving up on it
    # extra turns of named auxiliary templates (datagen.questions.choices: balanced A/B questions, multi-point
    # readouts), each placed after the turns of its level, e.g. {"choice_closer_point": 2}
    extra_turns: dict[str, int] = field(default_factory=dict)

    def validate(self) -> None:
        bad = [lv for lv in self.levels if lv not in SPATIAL_LEVELS]
        if bad or not self.levels:
            raise ConfigError(f"conversation.levels: {bad or 'empty'}; choose from {list(SPATIAL_LEVELS)}")
        if any(n < 0 for n in self.turns.values()) or set(self.turns) - set(SPATIAL_LEVELS):
            raise ConfigError(
                f"conversation.turns: non-negative counts for {list(SPATIAL_LEVELS)}, got {self.turns}"
            )
        if not 0.0 <= self.multiview_share <= 1.0:
            raise ConfigError(f"conversation.multiview_share must be in [0, 1], got {self.multiview_share}")
        if self.coords not in COORDS:
            raise ConfigError(f"conversation.coords must be one of {list(COORDS)}")
        if self.attempts < 1:
            raise ConfigError("conversation.attempts must be >= 1")
        for name, n in self.extra_turns.items():
            if name not in TEMPLATES or not TEMPLATES.get(name).auxiliary or n < 0:
                known = [k for k, t in TEMPLATES.items() if t.auxiliary]
                raise ConfigError(
                    f"conversation.extra_turns: {name!r}={n}; name one of {known} with a count >= 0"
                )


@functools.cache
def _by_level() -> dict[tuple[str, bool], list[Template]]:
    """Registered templates grouped by (level, multiview); built once (the registry is filled at import)."""
    out: dict[tuple[str, bool], list[Template]] = {}
    for _, t in TEMPLATES.items():
        if t.auxiliary:
            continue
        out.setdefault((t.level, t.multiview), []).append(t)
    return out


def level_sequence(cfg: ConversationConfig, rng: random.Random) -> list[str]:
    """The level of each spatial turn, in the order shown (caption excluded)."""
    return [level for level, _ in turn_plan(cfg, rng)]


def turn_plan(cfg: ConversationConfig, rng: random.Random) -> list[tuple[str, str | None]]:
    """(level, auxiliary template name or None) of each spatial turn, in the order shown."""
    levels = list(cfg.levels) if cfg.order != "reverse" else list(reversed(cfg.levels))
    extra = {lv: [n for n, k in sorted(cfg.extra_turns.items()) if TEMPLATES.get(n).level == lv for _ in range(k)]
             for lv in levels}  # fmt: skip
    seq = [
        item for lv in levels for item in [(lv, None)] * cfg.turns.get(lv, 0) + [(lv, n) for n in extra[lv]]
    ]
    if cfg.order == "shuffled":
        rng.shuffle(seq)
    return seq


def _choose(pool: list[Template], used: dict[str, int], rng: random.Random) -> Template:
    """Weighted choice that prefers templates used least so far (variety within a conversation)."""
    counts = [used.get(t.name, 0) for t in pool]
    least = min(counts)
    fresh = [t for t, n in zip(pool, counts, strict=True) if n == least]
    if len(fresh) == 1:
        rng.random()  # the draw rng.choices would make: later turns see the same random stream
        return fresh[0]
    return rng.choices(fresh, weights=[t.weight for t in fresh])[0]


def _one_turn(
    scene: Scene, ctx: Context, level: str, cfg: ConversationConfig, rng: random.Random, state: dict[str, Any]
) -> QA | None:
    pools = state["pools"]
    multi = ctx.graph.num_views > 1 and level in ("object", "scene") and rng.random() < cfg.multiview_share
    pool = pools.get((level, multi)) or pools.get((level, False), [])
    for _ in range(cfg.attempts if pool else 0):
        qa = _choose(pool, state["used"], rng).fn(scene, ctx, rng)
        if qa is not None and qa.question not in state["asked"]:
            state["used"][qa.template] = state["used"].get(qa.template, 0) + 1
            state["asked"].add(qa.question)
            return qa
    return None


def _named_turn(
    scene: Scene, ctx: Context, t: Template, cfg: ConversationConfig, rng: random.Random, state
) -> QA | None:
    """One turn of a named (auxiliary) template, tried ``cfg.attempts`` times."""
    for _ in range(cfg.attempts):
        qa = t.fn(scene, ctx, rng)
        if qa is not None and qa.question not in state["asked"]:
            state["asked"].add(qa.question)
            return qa
    return None


def build_conversation(scene: Scene | SceneGraph, cfg: ConversationConfig, rng: random.Random) -> list[QA]:
    """About 8-12 QA turns for one scene (never empty); ``scene`` may be a prebuilt ``SceneGraph``."""
    graph = scene if isinstance(scene, SceneGraph) else SceneGraph(scene)
    ctx = Context(graph=graph, view=0, coords=cfg.coords)
    visible = graph.visible(0)
    ctx.focus = rng.sample(visible, min(3, len(visible)))
    state: dict[str, Any] = {"pools": _by_level(), "used": {}, "asked": set()}
    turns = []
    for level, name in turn_plan(cfg, rng):
        if name is None:
            qa = _one_turn(graph.scene, ctx, level, cfg, rng, state)
        else:
            qa = _named_turn(graph.scene, ctx, TEMPLATES.get(name), cfg, rng, state)
        if qa is not None:
            turns.append(qa)
    if cfg.caption or not turns:
        pools = state["pools"]
        fallback = pools[("caption", False)][0] if cfg.caption else TEMPLATES.get("object_count")
        turns.append(fallback.fn(graph.scene, ctx, rng))
    return turns


def to_llava(sample_id: str, images: list[str], turns: list[QA]) -> dict[str, Any]:
    """A LLaVA record: one ``<image>`` placeholder per view in the first human turn."""
    conv = []
    for i, qa in enumerate(turns):
        prefix = f"{IMAGE_TOKEN}\n" * len(images) if i == 0 else ""
        conv.append({"from": "human", "value": prefix + qa.question})
        conv.append({"from": "gpt", "value": qa.answer})
    return {"id": sample_id, "image": images[0] if len(images) == 1 else list(images), "conversations": conv}

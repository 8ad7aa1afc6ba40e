"""Reference tokens: the encoder's feature at a queried point, or pooled over a named object, in the text.

With reference tokens (``data.ref_tokens``), every point ``(x, y)`` and every object description that a
question names is followed by one special token -- ``<point>`` or ``<region>`` -- whose embedding the VLM
replaces with the projected encoder feature of that place (``models.vlm.SpatialVLM.embed``), added to the
token's own embedding (which says which kind of reference it is). This is SpatialRGPT's region-token idea
applied to points too: the LM no longer has to find "(37, 12)" among the image tokens by itself, and in
stage 3 the answer's gradient reaches the encoder exactly where the question looks.

Only questions get reference tokens (answers are targets). Which place a token means is read from the
text and the sample's ground-truth sidecar (``gt/<id>.npz``, written by the data engine for synthetic and
real images alike):

- points: every ``(x, y)`` in a question, in the convention the question states (pixels, or 0-1000 when it
  says "normalised to 0-1000"), in the view the turn's fact names (``view`` or ``v1``; else view 0);
- regions: every object description of the sample (``meta["objects"][i]["description"]``) found in the
  question (longest first, case-insensitive at the first letter), if the object is visible in some view;
  its feature is pooled over its instance mask in every view.

Geometry: a reference is a sparse weight vector over the sample's image tokens (views x h x w, row-major),
summing to 1. Points are bilinear between patch centres; regions weight each patch by the share of it the
mask covers. Images go through the encoder's resize-short-side + centre-crop (``spatialboost.image_transform``),
so the same geometry is applied here (``crop_geometry``; masks resize by nearest neighbour as every target
does); a point cut off by the crop is clamped to the nearest patch centre.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from spatialboost.constants import REF_TOKENS
from spatialboost.image_transform import ImageTransform, crop_geometry

REF_KINDS = tuple(REF_TOKENS)

_POINT = re.compile(r"\((\d+), (\d+)\)")
_NORM1000 = "normalised to 0-1000"


@dataclass(frozen=True)
class Ref:
    kind: str  # "point" | "region"
    view: int = 0  # point: its view; region: unused (pooled over every view)
    x: float = 0.0  # point: pixel column in the view's own image
    y: float = 0.0  # point: pixel row
    obj: int = 0  # region: instance id


# ------------------------------------------------------------------------------------------ text -> refs


def annotate_record(record: dict, meta: dict, kinds: tuple[str, ...]) -> tuple[dict, list[Ref]]:
    """``record`` with reference tokens inserted into its human turns, and the refs in text order."""
    facts = meta.get("facts", [])
    sizes = meta.get("sizes", [])
    objects = meta.get("objects", [])
    conv, refs, turn = [], [], 0
    for message in record["conversations"]:
        if message["from"] in ("human", "user"):
            fact = facts[turn] if turn < len(facts) else {}
            text, found = annotate_question(message["value"], fact, sizes, objects, kinds)
            conv.append({**message, "value": text})
            refs += found
            turn += 1
        else:
            conv.append(message)
    return {**record, "conversations": conv}, refs


def annotate_question(
    text: str, fact: dict, sizes: list, objects: list[dict], kinds: tuple[str, ...]
) -> tuple[str, list[Ref]]:
    """One question with its reference tokens, and the refs in the order their tokens appear."""
    spans: list[tuple[int, int, Ref]] = []  # (start, end, ref) of each mention
    if "point" in kinds:
        spans += _point_spans(text, fact, sizes)
    if "region" in kinds:
        spans += _region_spans(text, objects, taken=[(s, e) for s, e, _ in spans])
    spans.sort(key=lambda t: t[0])
    out, last = [], 0
    for _, end, ref in spans:
        out.append(text[last:end] + " " + REF_TOKENS[ref.kind])
        last = end
    return "".join(out) + text[last:], [ref for _, _, ref in spans]


def _point_spans(text: str, fact: dict, sizes: list) -> list[tuple[int, int, Ref]]:
    args = fact.get("args", {})
    view = int(args.get("view", args.get("v1", 0)))
    if view >= len(sizes):
        return []
    w, h = sizes[view]
    norm = _NORM1000 in text
    spans = []
    for match in _POINT.finditer(text):
        x, y = int(match.group(1)), int(match.group(2))
        if norm:  # pixel = floor(v * W / 1000), the centre of that pixel
            x, y = math.floor(x * w / 1000), math.floor(y * h / 1000)
        if 0 <= x < w and 0 <= y < h:
            spans.append((match.start(), match.end(), Ref("point", view, float(x), float(y))))
    return spans


def _region_spans(text: str, objects: list[dict], taken: list[tuple[int, int]]) -> list[tuple[int, int, Ref]]:
    spans: list[tuple[int, int, Ref]] = []
    visible = [o for o in objects if sum(o.get("visible_pixels", [1])) > 0]  # a hidden object has no place
    for obj in sorted(visible, key=lambda o: -len(o["description"])):
        needle = obj["description"]
        first = f"[{re.escape(needle[:1].lower())}{re.escape(needle[:1].upper())}]"  # "The ..." too
        for match in re.finditer(rf"(?<!\w){first}{re.escape(needle[1:])}(?!\w)", text):
            s, e = match.span()
            if any(s < te and ts < e for ts, te in taken + [(a, b) for a, b, _ in spans]):
                continue  # inside a longer description already matched
            spans.append((s, e, Ref("region", obj=int(obj["id"]))))
    return spans


# ------------------------------------------------------------------------------------------ refs -> weights


def point_weights(ref: Ref, size: tuple[int, int], side: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(cols, vals) over one image's grid x grid tokens: bilinear between the 4 nearest patch centres.

    ``size``: the view's (width, height), as the sidecar stores it."""
    px, py = crop_geometry(size[1], size[0], side).to_input(ref.x + 0.5, ref.y + 0.5)  # input pixels
    patch = side / grid
    gx, gy = px / patch - 0.5, py / patch - 0.5  # patch-centre coordinates
    gx, gy = min(max(gx, 0.0), grid - 1.0), min(max(gy, 0.0), grid - 1.0)
    x0, y0 = math.floor(gx), math.floor(gy)
    x1, y1 = min(x0 + 1, grid - 1), min(y0 + 1, grid - 1)
    fx, fy = gx - x0, gy - y0
    weights: dict[int, float] = {}
    for (yy, xx), w in (((y0, x0), (1 - fx) * (1 - fy)), ((y0, x1), fx * (1 - fy)),
                        ((y1, x0), (1 - fx) * fy), ((y1, x1), fx * fy)):  # fmt: skip
        if w > 0:
            weights[yy * grid + xx] = weights.get(yy * grid + xx, 0.0) + w
    cols = np.fromiter(weights, dtype=np.int64)
    return cols, np.array([weights[c] for c in cols], dtype=np.float32)


def mask_coverage(mask: np.ndarray, side: int, grid: int) -> np.ndarray:
    """(grid * grid,) share of each patch a boolean (H, W) mask covers, after the encoders' resize + crop."""
    cropped = ImageTransform(side).target(mask.astype(np.float32))  # (side, side), nearest
    t = torch.from_numpy(cropped)[None, None]
    return torch.nn.functional.adaptive_avg_pool2d(t, grid)[0, 0].flatten().numpy()


def ref_weights(
    refs: list[Ref], sizes: list, instance: np.ndarray | None, side: int, grid: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per ref, (cols, vals) over the sample's image tokens (view-major), vals summing to 1.

    ``instance``: (V, H, W) instance ids (regions need it). A region no view shows gets uniform weights
    over the sample's tokens (its token then says "the object" without a place; never silently dropped).
    """
    n = grid * grid
    out = []
    for ref in refs:
        if ref.kind == "point":
            cols, vals = point_weights(ref, sizes[ref.view], side, grid)
            out.append((cols + ref.view * n, vals))
            continue
        cover = (
            np.concatenate([mask_coverage(inst == ref.obj, side, grid) for inst in instance])
            if instance is not None
            else np.zeros(0, dtype=np.float32)
        )
        if cover.sum() <= 0:
            cover = np.ones(len(sizes) * n, dtype=np.float32)
        cols = np.flatnonzero(cover)
        out.append((cols.astype(np.int64), (cover[cols] / cover[cols].sum()).astype(np.float32)))
    return out

"""Dataset checks: schema, files, shard hashes, and every answer recomputed from the ground truth.

``validate_dataset(dir)`` returns a list of failures (empty = valid). Each answer's recorded fact is
recomputed with the named function of ``relations.FACTS`` on the ground-truth sidecar; its value and label
must match and the answer must contain the fact's ``expect`` strings (the facts cited in a rationale too).

The numbers taken from the objects' solids (sizes, heights, bottom/top heights, gaps, centre distances,
volumes) are then re-derived a second way, without the support functions that produced them
(``Rederived``: surface samples and an inside test of each solid, ``datagen.scenes.solids``), so a wrong
measurement function cannot validate its own answers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spatialboost.constants import IMAGE_TOKEN
from spatialboost.datagen.dataset.writer import load_sample_gt, verify_shard
from spatialboost.datagen.questions import templates as _templates  # noqa: F401  (registers the "caption" fact)
from spatialboost.datagen.questions.relations import SceneGraph, recompute, values_match
from spatialboost.datagen.scenes import solids
from spatialboost.dataset_format import check_dataset_dir, iter_records, read_manifest, record_images
from spatialboost.errors import UserError
from spatialboost.io import confined


def check_schema(record: Any) -> list[str]:
    """LLaVA record schema: id, image(s), alternating human/gpt turns, one <image> per view up front."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return ["record without a string 'id'"]
    rid = record["id"]
    img = record.get("image")
    if not (isinstance(img, str) or (isinstance(img, list) and img and all(isinstance(p, str) for p in img))):
        return [f"{rid}: 'image' must be a path or a non-empty list of paths"]
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv or len(conv) % 2:
        return [f"{rid}: 'conversations' must be a non-empty list of human/gpt pairs"]
    errors = []
    for i, turn in enumerate(conv):
        want = "human" if i % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != want or not isinstance(turn.get("value"), str):
            errors.append(f"{rid}: turn {i} must be {{'from': '{want}', 'value': str}}")
        elif not turn["value"].strip():
            errors.append(f"{rid}: turn {i} is empty")
    if errors:
        return errors
    n = len(record_images(record))
    if (
        not conv[0]["value"].startswith(f"{IMAGE_TOKEN}\n" * n)
        or sum(t["value"].count(IMAGE_TOKEN) for t in conv) != n
    ):
        errors.append(
            f"{rid}: the first human turn must start with exactly {n} {IMAGE_TOKEN!r} placeholder(s)"
        )
    return errors


SAMPLE_SPACING = 0.01  # metres between the surface samples of the re-derivation
PRINT_TOL = 0.006  # metres: answers print 2 decimals (0.005) + float slack
VOLUME_GRID = 32  # inside-test grid per box axis for volumes
VOLUME_TOL = (0.0006, 0.05)  # cubic metres (3 printed decimals) + relative grid error


class Rederived:
    """The solid-derived numbers of a scene, measured a second way: surface samples and an inside test.

    Samples lie on the surface and every surface point is within ``cover`` of one, so a sampled extent
    is short of the true one by at most ``2 cover``. A gap is at most the distance of any sample pair (the
    closest pair found by alternating nearest samples) and at least the samples' separation along any
    direction (the pair's, the box axes) minus ``2 cover`` of each.
    """

    def __init__(self, g: SceneGraph) -> None:
        self.g = g
        self._samples: dict[int, tuple[np.ndarray, float]] = {}

    def samples(self, a: int) -> tuple[np.ndarray, float]:
        if a not in self._samples:
            self._samples[a] = solids.surface_points(self.g.solids[a], SAMPLE_SPACING)
        return self._samples[a]

    def extent(self, a: int, axis: np.ndarray) -> tuple[float, float]:
        """(low, high) bounds of the extent of A along a unit direction (metres)."""
        pts, cover = self.samples(a)
        s = pts @ axis
        return float(s.max() - s.min()), float(s.max() - s.min()) + 2 * cover

    def span(self, a: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """Bounds of A's bottom and top heights: ((bottom_lo, bottom_hi), (top_lo, top_hi))."""
        pts, cover = self.samples(a)
        lo, hi = float(pts[:, 2].min()), float(pts[:, 2].max())
        return (lo - cover, lo), (hi, hi + cover)

    def centre(self, a: int) -> np.ndarray:
        """Midpoint of A's sampled extents along its own axes (world)."""
        pts, _ = self.samples(a)
        R = self.g.solids[a].rotation
        local = pts @ R
        return R @ (0.5 * (local.min(0) + local.max(0)))

    def gap(self, a: int, b: int) -> tuple[float, float]:
        """(lower, upper) bounds of the distance between A's and B's solids (metres)."""
        (pa, ca), (pb, cb) = self.samples(a), self.samples(b)
        p = pa[np.argmin(np.linalg.norm(pa - self.g.solids[b].center, axis=1))]
        for _ in range(8):  # alternate nearest samples: a closest pair of the two sample sets
            q = pb[np.argmin(np.linalg.norm(pb - p, axis=1))]
            p_next = pa[np.argmin(np.linalg.norm(pa - q, axis=1))]
            if np.array_equal(p_next, p):
                break
            p = p_next
        upper = float(np.linalg.norm(q - p))
        if upper <= 1e-12:
            return 0.0, 0.0
        # separating directions: the pair's, and the box axes of both (face normals of boxes)
        dirs = np.concatenate([[(q - p) / upper], self.g.solids[a].rotation.T, self.g.solids[b].rotation.T])
        dirs = np.concatenate([dirs, -dirs])
        separation = (pb @ dirs.T).min(0) - (pa @ dirs.T).max(0)
        return max(0.0, float(separation.max()) - 2 * (ca + cb)), upper

    def volume(self, a: int) -> float:
        """Volume of A (cubic metres): the box volume times the share of grid cell centres inside."""
        s = self.g.solids[a]
        t = (np.arange(VOLUME_GRID) + 0.5) / VOLUME_GRID - 0.5
        unit = np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)
        inside = solids.contains(s, s.center + (unit * s.extent) @ s.rotation.T)
        return float(np.prod(s.extent)) * float(inside.mean())


def _within(value: float, lo: float, hi: float, tol: float) -> bool:
    return lo - tol <= value <= hi + tol


def rederive_errors(r: Rederived, fact: dict[str, Any], where: str) -> list[str]:
    """Failures of a recorded measurement against its independent re-derivation ([] for other facts)."""
    fn, args, value = fact.get("fn"), fact.get("args", {}), fact.get("value")
    if fn in ("object_width", "object_depth"):
        axis = r.g.view(args["view"]).world_to_viewer[0 if fn == "object_width" else 1, :3]
        bounds = [r.extent(args["a"], axis)]
        values = [value]
    elif fn == "object_height":
        bounds, values = [r.extent(args["a"], np.array([0.0, 0.0, 1.0]))], [value]
    elif fn == "vertical_span":
        bounds, values = list(r.span(args["a"])), list(value)
    elif fn == "surface_distance":
        bounds, values = [r.gap(args["a"], args["b"])], [value]
    elif fn == "center_distance":
        d = float(np.linalg.norm(r.centre(args["a"]) - r.centre(args["b"])))
        bounds, values = [(d, d)], [value]
    elif fn == "object_volume":
        v = r.volume(args["a"])
        tol = VOLUME_TOL[0] + VOLUME_TOL[1] * v
        if not _within(value, v, v, tol):
            return [f"{where}: object_volume {value} m^3, the solid re-derived holds {v:.4f} m^3"]
        return []
    else:
        return []
    return [
        f"{where}: {fn} {v} m, re-derived from the solids' surfaces: {lo:.4f}-{hi:.4f} m"
        for v, (lo, hi) in zip(values, bounds, strict=True)
        if not (isinstance(v, int | float) and math.isfinite(v) and _within(v, lo, hi, PRINT_TOL))
    ]


def check_fact(
    g: SceneGraph, fact: dict[str, Any], answer: str, where: str, rederived: Rederived | None = None
) -> list[str]:
    try:
        d = recompute(g, fact)
    except Exception as e:  # a malformed fact is a failure to report, not a crash
        return [f"{where}: cannot recompute fact {fact.get('fn')!r}: {e}"]
    errors = []
    if d.label is None or d.label != fact.get("label") or not values_match(d.value, fact.get("value")):
        errors.append(
            f"{where}: {fact['fn']} recomputes to {d.value!r}/{d.label!r}, recorded {fact.get('value')!r}/{fact.get('label')!r}"
        )
    rederived = rederived or Rederived(g)
    try:
        errors += rederive_errors(rederived, fact, where)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        errors.append(f"{where}: cannot re-derive fact {fact.get('fn')!r}: {e}")
    for token in fact.get("expect", []):
        if token not in answer:
            errors.append(f"{where}: answer does not state {token!r}")
    for sub in fact.get("support", []):
        errors += check_fact(g, sub, answer, where + " (rationale)", rederived)
    return errors


def check_record(dataset_dir: Path, record: dict[str, Any]) -> list[str]:
    errors = check_schema(record)
    if errors:
        return errors
    rid = record["id"]
    try:
        for rel in record_images(record):
            with Image.open(confined(dataset_dir, rel)) as im:
                im.verify()
        scene = load_sample_gt(dataset_dir, record, load_rgb=False)
    except (OSError, ValueError, KeyError) as e:
        return [f"{rid}: unreadable image or ground truth ({e})"]
    answers = [t["value"] for t in record["conversations"][1::2]]
    facts = scene.meta["facts"]
    if len(facts) != len(answers) or len(scene.views) != len(record_images(record)):
        return [
            f"{rid}: {len(answers)} answers / {len(record_images(record))} images but {len(facts)} facts / {len(scene.views)} views"
        ]
    g = SceneGraph(scene)
    rederived = Rederived(g)
    for i, (fact, answer) in enumerate(zip(facts, answers, strict=True)):
        errors += check_fact(g, fact, answer, f"{rid} turn {i + 1} ({fact.get('template')})", rederived)
    return errors


def validate_dataset(
    dataset_dir: str | Path, max_samples: int | None = None
) -> tuple[list[str], dict[str, int]]:
    """(failures, counts) for a dataset directory."""
    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max-samples must be >= 1, got {max_samples} (leave it out to check every sample)")
    root = check_dataset_dir(dataset_dir)
    manifest = read_manifest(root)
    errors: list[str] = []
    if not manifest.get("complete"):
        c = manifest["counts"]
        errors.append(
            f"incomplete dataset: {c.get('shards')} of {c.get('shards_planned')} shards; rerun the generate command"
        )
    for entry in manifest["shards"]:
        state = verify_shard(root, entry["shard"])
        if state is None or state["hash"] != entry.get("hash"):
            errors.append(f"{entry['file']}: content hash mismatch (corrupt or modified shard)")
    counts = {"samples": 0, "turns": 0}
    seen: set[str] = set()
    for record in iter_records(root, errors):  # a line that is not JSON is listed in errors
        if max_samples is not None and counts["samples"] >= max_samples:
            break
        rid = record.get("id") if isinstance(record, dict) else None
        if rid is not None and rid in seen:
            errors.append(f"{rid}: duplicate id")
        seen.add(rid)
        errors += check_record(root, record)
        conv = record.get("conversations") if isinstance(record, dict) else None
        counts["samples"] += 1
        counts["turns"] += len(conv) // 2 if isinstance(conv, list) else 0
    return errors, counts

"""Label noise of the image path, measured where exact ground truth exists.

Rendered synthetic scenes are exported as RGB-D folders, then run through the *image* path (perception
backends -> lifting -> scene graph) with oracle backends (ground-truth depth and masks, optionally degraded:
relative depth noise, a global depth-scale error, mask erosion). The answers the image path would generate
are compared with the ground-truth scene's answers: relation accuracy per relation (left/right,
front/behind, above/below, bigger/smaller, taller/shorter; pairs the truth answers), abstention rate, and
the relative error of object-centre distances. With ``--depth depth-pro --detector owlv2 --segmenter sam2
--model-path ...`` on a GPU machine the same script measures the real pipeline.

    python benchmarks/label_noise.py --scenes 40 [--image-size 128]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from spatialboost.datagen.image_source import ImagesConfig, ImageSource, collect_items
from spatialboost.datagen.questions import relations as R
from spatialboost.datagen.questions.relations import SceneGraph
from spatialboost.datagen.real import rgbd
from spatialboost.datagen.real.images import ImageLimits
from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene

PAIR_RELATIONS = {
    "left_right": lambda g, a, b: R.left_right(g, 0, a, b),
    "front_behind": lambda g, a, b: R.front_behind(g, 0, a, b),
    "above_below": R.above_below,
    "bigger_smaller": R.bigger_smaller,
    "taller_shorter": R.taller_shorter,
}
SETTINGS = {
    "clean": {},
    "depth_noise_2pct": {"depth_noise": 0.02},
    "depth_noise_5pct": {"depth_noise": 0.05},
    "depth_scale_1.10": {"depth_scale": 1.10},
    "erode_2px": {"erode_px": 2},
}


def match_ids(lifted, truth) -> dict[int, int]:
    """Lifted object id -> ground-truth id, by the majority of its pixels in the true instance map."""
    inst_l, inst_t = lifted.views[0].instance, truth.views[0].instance
    out = {}
    for o in lifted.objects:
        ids = inst_t[inst_l == o.id]
        ids = ids[ids > 0]
        if len(ids):
            out[o.id] = int(np.bincount(ids).argmax())
    return out


def compare(lifted, truth, stats: dict) -> None:
    gl, gt = SceneGraph(lifted), SceneGraph(truth)
    ids = match_ids(lifted, truth)
    lifted_ids = sorted(ids)
    for i, a in enumerate(lifted_ids):
        for b in lifted_ids[i + 1 :]:
            for name, fn in PAIR_RELATIONS.items():
                want = fn(gt, ids[a], ids[b]).label
                if want is None:
                    continue
                got = fn(gl, a, b).label
                s = stats.setdefault(name, {"n": 0, "correct": 0, "abstained": 0})
                s["n"] += 1
                s["correct"] += int(got == want)
                s["abstained"] += int(got is None)
            d_true = R.center_distance(gt, ids[a], ids[b]).value
            d_lift = R.center_distance(gl, a, b).value
            stats.setdefault("distance_rel_err", []).append(abs(d_lift - d_true) / max(d_true, 1e-6))
    stats.setdefault("objects_found", []).append(len(ids) / max(len(truth.objects), 1))


def run_setting(root: Path, truths: list, options: dict, args) -> dict:
    cfg = ImagesConfig(
        input=str(root), depth=args.depth, detector=args.detector, segmenter=args.segmenter,
        model_paths=dict(s.split("=", 1) for s in args.model_path), vocabulary=sorted({o.name for t in truths for o in t.objects}),
        device=args.device, oracle={**options, "seed": 0},
    )  # fmt: skip
    items, _ = collect_items(root, False, ImageLimits(min_side=16))
    with tempfile.TemporaryDirectory() as cache:
        source = ImageSource(cfg, items, Path(cache))
        by_name = {t.scene_id: t for t in truths}
        stats: dict = {}
        for i, item in enumerate(items):
            lifted = source.make_scene(i, i, item.rel)
            compare(lifted, by_name[item.rel.split("/")[0]], stats)
    return stats


def summarise(name: str, stats: dict) -> str:
    parts = [f"{name:18s}"]
    for rel in PAIR_RELATIONS:
        s = stats.get(rel, {"n": 0})
        if s["n"]:
            parts.append(
                f"{rel} {s['correct'] / s['n']:.3f} (n={s['n']}, abst {s['abstained'] / s['n']:.2f})"
            )
    err = np.array(stats.get("distance_rel_err", [np.nan]))
    parts.append(f"dist rel err median {np.median(err):.3f} p90 {np.percentile(err, 90):.3f}")
    parts.append(f"objects found {np.mean(stats.get('objects_found', [0])):.2f}")
    return " | ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--depth", default="oracle")
    p.add_argument("--detector", default="oracle")
    p.add_argument("--segmenter", default="oracle")
    p.add_argument("--model-path", action="append", default=[])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    truths = [
        generate_scene(s, SyntheticConfig(image_size=args.image_size), scene_id=f"s{s:04d}")
        for s in range(args.scenes)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for t in truths:
            rgbd.export_scene(t, root)
        settings = SETTINGS if args.depth == "oracle" else {"model": {}}
        for name, options in settings.items():
            print(summarise(name, run_setting(root, truths, options, args)), flush=True)


if __name__ == "__main__":
    main()

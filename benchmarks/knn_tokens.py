"""Where does a finished study's kNN classification loss sit? (issue 23)

The study's ``cls-knn`` probe is DINO's weighted kNN on the CLS token. This re-scores it from the probe
features the study cached, for the base and for each named run's exported encoder (matched to its cached
features by the weights' sha256), three ways: on the CLS token as the probe does, on the CLS token centred
(the train mean subtracted: a shift shared by every image, to which cosine similarity is blind, is removed),
and on the mean patch token (the features stage 3 supervises through the reference tokens). Also how far each
run's CLS token moved from the base's on the same test images, in the measure of stage 3's CLS anchor
(``models.vlm.cls_anchor_loss``: squared distance over the base's squared norm). No training, no new features:
only what the study wrote.

    .venv/bin/python benchmarks/knn_tokens.py --study DIR --base dinov2-small-offline \\
        --runs llm-dual-choices-points-lr2e-05-g0-s400-dinov2-s,llm-full-choices-points-lr2e-05-g0-s400-dinov2-s

Writes ``STUDY/knn-tokens.json`` and prints one line per encoder (top-1 on the study's test split; the
majority-class rate is the chance level).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from spatialboost.eval.features import FeatureSet, load_feature_set
from spatialboost.eval.probes import KnnConfig, cls_knn_probe
from spatialboost.eval.runner import resolve_encoder
from spatialboost.io import atomic_write_json
from spatialboost.models.encoder_base import weights_sha256
from spatialboost.models.vlm import relative_drift
from spatialboost.studies.replicate.report import majority_rate


def cached_features(study: Path) -> dict[str, dict[str, Path]]:
    """weights sha256 -> split (train/test) -> the cached probe-feature folder."""
    found: dict[str, dict[str, Path]] = {}
    for d in sorted((study / "cache" / "features").iterdir()):
        meta = json.loads((d / "meta.json").read_text())
        split = meta["dataset"].split("/")[1]
        if split in ("train", "test"):
            found.setdefault(meta["encoder"]["weights_sha256"], {})[split] = d
    return found


def knn_top1(train: FeatureSet, test: FeatureSet, features: dict[str, np.ndarray]) -> float:
    """The study's ``cls-knn`` probe, with ``features[split]`` in place of each split's CLS token."""
    swap = {split: replace(fs, cls=features[split]) for split, fs in (("train", train), ("test", test))}
    return cls_knn_probe(swap["train"], swap["test"], KnnConfig(), seed=0).metrics["top1"]


def mean_patch(fs: FeatureSet) -> np.ndarray:
    return np.stack([np.asarray(fs.patch[i], np.float32).mean(0) for i in range(len(fs))])


def cls_drift(test: FeatureSet, base_test: FeatureSet) -> float:
    """sum |CLS - CLS_base|^2 / sum |CLS_base|^2 over the same test images (0 for the base itself)."""
    cls, ref = (torch.from_numpy(np.asarray(fs.cls, np.float64)) for fs in (test, base_test))
    same_truth = np.array_equal(test.label, base_test.label) and np.array_equal(test.depth, base_test.depth)
    if cls.shape != ref.shape or not same_truth:
        raise ValueError("the run's and the base's test features are not of the same images")
    return float(relative_drift(cls, ref))


def score(train: FeatureSet, test: FeatureSet, base_test: FeatureSet) -> dict[str, float]:
    mu = np.asarray(train.cls, np.float32).mean(0, keepdims=True)
    return {
        "cls_drift": cls_drift(test, base_test),
        "cls": knn_top1(train, test, {"train": train.cls, "test": test.cls}),
        "cls_centred": knn_top1(train, test, {"train": train.cls - mu, "test": test.cls - mu}),
        "mean_patch": knn_top1(train, test, {"train": mean_patch(train), "test": mean_patch(test)}),
        "majority": majority_rate(test.label),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, required=True)
    ap.add_argument("--base", required=True, help="the study's base encoder (a registered name or a folder)")
    ap.add_argument("--runs", required=True, help="comma-separated run names under STUDY/runs/seedN/")
    args = ap.parse_args()
    cached = cached_features(args.study)
    encoders = {"base": args.base}
    for seed_dir in sorted((args.study / "runs").glob("seed*")):
        for run in filter(None, args.runs.split(",")):
            if (seed_dir / run / "encoder").is_dir():
                encoders[f"{run} {seed_dir.name}"] = str(seed_dir / run / "encoder")
    results, base_test = {}, None
    for label, source in encoders.items():
        feats = cached.get(weights_sha256(resolve_encoder(source)), {})
        if set(feats) != {"train", "test"}:
            print(f"{label}: no cached train and test features (was it probed by this study?)")
            if label == "base":
                raise SystemExit("the base's features are needed for every comparison")
            continue
        test = load_feature_set(feats["test"])
        base_test = base_test or test  # the base comes first
        results[label] = score(load_feature_set(feats["train"]), test, base_test)
        r = results[label]
        print(f"{label:64s} kNN CLS {r['cls']:.4f}  centred {r['cls_centred']:.4f}  mean patch {r['mean_patch']:.4f}"
              f"  (majority {r['majority']:.4f})  CLS drift {r['cls_drift']:.4f}", flush=True)  # fmt: skip
    atomic_write_json(args.study / "knn-tokens.json", results)


if __name__ == "__main__":
    main()

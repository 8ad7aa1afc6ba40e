"""Frozen-feature probes of one encoder on the synthetic benchmark (``spatialboost.eval``), one seed.

The probe scenes are rendered once per process (``ProbeBench``) and the features are cached by weights
hash (``eval.features``), so the base is extracted once for the whole study. The probe head's seed is the
study seed: the base row's std is the probe heads' own noise (kNN is deterministic: std 0).

The depth probe is the noisy one: on DINOv2-S at the real sizes, 35 heads on the same frozen base gave depth
RMSE 0.727 m with a std of 0.015 m (2.1%), as large as the changes the study measures, where seg varies by
0.2% and linear classification not at all. So the depth probe trains ``Sizes.depth_heads`` heads (seeds
``head_seed``) and records their mean, each scene's mean, and each head's metrics (``DepthHeads``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialboost.eval.datasets.synthetic import SyntheticProbeDataset, SyntheticSceneFn
from spatialboost.eval.features import FeatureSet, encoder_identity, extract_features
from spatialboost.eval.probes import ProbeConfigs, ProbeResult, run_probe
from spatialboost.eval.specs import SPECS
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.studies.replicate.study import Sizes

log = logging.getLogger(__name__)

# probe -> metric -> one value per scored scene (the depth probe's: its metrics are their mean)
PerScene = dict[str, dict[str, list[float]]]
PROBES = tuple(name for name, spec in SPECS.items() if spec.bench == "2d")  # depth, seg, cls-linear, cls-knn
# (probe, metric) -> column of the study's tables
COLUMNS = {
    ("depth", "rmse"): "depth RMSE (m)",
    ("depth", "absrel"): "AbsRel",
    ("depth", "delta1"): "delta1",
    ("seg", "miou"): "seg mIoU",
    ("cls-linear", "top1"): "cls linear",
    ("cls-knn", "top1"): "cls kNN",
}
# depth head k of study seed s trains with probe seed s + 1000 k (head 0: the study seed itself, the one-head probe)
HEAD_SEED_STRIDE = 1000


def head_seed(seed: int, head: int) -> int:
    return seed + HEAD_SEED_STRIDE * head


@dataclass
class DepthHeads:
    """The depth probe with several heads: each metric's and each scene's mean over the heads, and every
    head's own metrics (head 0 first: the one-head probe of the same seed)."""

    metrics: dict[str, float]
    per_scene: dict[str, list[float]]
    heads: list[dict[str, float]]


def average_heads(results: list[ProbeResult]) -> DepthHeads:
    """``DepthHeads`` of the depth probe's results, one per head (the same scored scenes)."""
    if not results:
        raise ValueError("average_heads needs at least one head")
    scenes = [_scene_values("depth", r) for r in results]
    per_scene = {m: np.mean([s[m] for s in scenes], axis=0).tolist() for m in scenes[0]}
    metrics = {m: float(np.mean([r.metrics[m] for r in results])) for m in results[0].metrics}
    return DepthHeads(metrics, per_scene, [dict(r.metrics) for r in results])


def depth_heads_of(record: dict) -> list[dict[str, float]]:
    """Each depth head's metrics in a study record; a record written before heads were kept had one head, its
    depth metrics."""
    return record.get("depth_heads") or [record["metrics"]["depth"]]


@dataclass
class BenchRun:
    """One encoder's probes on one split: {probe: metrics} (depth: the heads' mean), per-scene values, and
    the depth heads' own metrics."""

    metrics: dict[str, dict[str, float]]
    per_scene: PerScene
    depth_heads: list[dict[str, float]]


class ProbeBench:
    """The probe splits (train + val + test scenes, held-out seeds) and the feature cache."""

    def __init__(self, sizes: Sizes, cache_dir: Path) -> None:
        scene_fn = SyntheticSceneFn(sizes.image_size)
        counts = {"train": sizes.probe_train, "val": sizes.probe_val, "test": sizes.probe_test}
        self.splits = {s: SyntheticProbeDataset(s, n, scene_fn=scene_fn) for s, n in counts.items()}
        self.image_size = sizes.image_size
        self.cache_dir = cache_dir
        self.configs = ProbeConfigs()
        self.depth_heads = sizes.depth_heads
        if sizes.probe_epochs > 0:
            for probe_cfg in (self.configs.depth, self.configs.seg, self.configs.cls_linear):
                probe_cfg.epochs = sizes.probe_epochs

    def features(self, encoder: VisionEncoder, split: str):
        side = self.image_size - self.image_size % encoder.spec.patch_size
        return extract_features(encoder, self.splits[split], self.cache_dir, "last", side, 32, "float32",
                                encoder_identity(encoder))  # fmt: skip

    def run(self, encoder: VisionEncoder, split: str, seed: int) -> BenchRun:
        """Heads trained on the train split, scored on ``split`` (val or test); depth with ``depth_heads``
        heads."""
        train, scored = self._train_and(encoder, split)
        metrics, per_scene = {}, {}
        for probe in PROBES:
            if probe == "depth":
                depth = self._depth(train, scored, seed)
                metrics[probe], per_scene[probe] = depth.metrics, depth.per_scene
                continue
            result = run_probe(probe, train, scored, self.configs, seed)
            metrics[probe] = result.metrics
            if result.per_image:
                per_scene[probe] = _scene_values(probe, result)
        log.info("probes on %s (seed %d): depth RMSE %.4f (%d heads), seg mIoU %.4f, cls linear %.4f", split,
                 seed, metrics["depth"]["rmse"], self.depth_heads, metrics["seg"]["miou"],
                 metrics["cls-linear"]["top1"])  # fmt: skip
        return BenchRun(metrics, per_scene, depth.heads)

    def depth(self, encoder: VisionEncoder, split: str, seed: int) -> DepthHeads:
        """The depth probe alone, as ``run`` records it: for a record written with fewer heads or without
        per-scene values (``runner.upgrade_record``)."""
        return self._depth(*self._train_and(encoder, split), seed)

    def _depth(self, train: FeatureSet, scored: FeatureSet, seed: int) -> DepthHeads:
        return average_heads([run_probe("depth", train, scored, self.configs, head_seed(seed, k))
                              for k in range(self.depth_heads)])  # fmt: skip

    def _train_and(self, encoder: VisionEncoder, split: str) -> tuple[FeatureSet, FeatureSet]:
        encoder.eval().requires_grad_(False)
        return self.features(encoder, "train"), self.features(encoder, split)


def _scene_values(probe: str, result: ProbeResult) -> dict[str, list[float]]:
    """The per-scene values of ``probe``'s study columns (``COLUMNS``) in its result."""
    per_image = result.per_image or {}
    return {m: per_image[m] for p, m in COLUMNS if p == probe}

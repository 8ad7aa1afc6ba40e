"""Frozen-feature probes of one encoder on the synthetic benchmark (``spatialboost.eval``), one seed.

The probe scenes are rendered once per process (``ProbeBench``) and the features are cached by weights
hash (``eval.features``), so the base is extracted once for the whole study. The probe head's seed is the
study seed: the base row's std is the probe heads' own noise (kNN is deterministic: std 0).
"""

from __future__ import annotations

import logging
from pathlib import Path

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


class ProbeBench:
    """The probe splits (train + val + test scenes, held-out seeds) and the feature cache."""

    def __init__(self, sizes: Sizes, cache_dir: Path) -> None:
        scene_fn = SyntheticSceneFn(sizes.image_size)
        counts = {"train": sizes.probe_train, "val": sizes.probe_val, "test": sizes.probe_test}
        self.splits = {s: SyntheticProbeDataset(s, n, scene_fn=scene_fn) for s, n in counts.items()}
        self.image_size = sizes.image_size
        self.cache_dir = cache_dir
        self.configs = ProbeConfigs()
        if sizes.probe_epochs > 0:
            for probe_cfg in (self.configs.depth, self.configs.seg, self.configs.cls_linear):
                probe_cfg.epochs = sizes.probe_epochs

    def features(self, encoder: VisionEncoder, split: str):
        side = self.image_size - self.image_size % encoder.spec.patch_size
        return extract_features(encoder, self.splits[split], self.cache_dir, "last", side, 32, "float32",
                                encoder_identity(encoder))  # fmt: skip

    def run(
        self, encoder: VisionEncoder, split: str, seed: int
    ) -> tuple[dict[str, dict[str, float]], PerScene]:
        """({probe: metrics}, per-scene values) of heads trained on the train split, scored on ``split`` (val or
        test)."""
        train, scored = self._train_and(encoder, split)
        out, per_scene = {}, {}
        for probe in PROBES:
            result = run_probe(probe, train, scored, self.configs, seed)
            out[probe] = result.metrics
            if result.per_image:
                per_scene[probe] = _scene_values(probe, result)
        log.info("probes on %s (seed %d): depth RMSE %.4f, seg mIoU %.4f, cls linear %.4f", split, seed,
                 out["depth"]["rmse"], out["seg"]["miou"], out["cls-linear"]["top1"])  # fmt: skip
        return out, per_scene

    def depth_per_scene(self, encoder: VisionEncoder, split: str, seed: int) -> tuple[float, PerScene]:
        """The depth probe alone (RMSE, per-scene values): what ``run`` records, for a record written before
        per-scene values were kept (``runner.add_per_scene``)."""
        result = run_probe("depth", *self._train_and(encoder, split), self.configs, seed)
        return result.metrics["rmse"], {"depth": _scene_values("depth", result)}

    def _train_and(self, encoder: VisionEncoder, split: str) -> tuple[FeatureSet, FeatureSet]:
        encoder.eval().requires_grad_(False)
        return self.features(encoder, "train"), self.features(encoder, split)


def _scene_values(probe: str, result: ProbeResult) -> dict[str, list[float]]:
    """The per-scene values of ``probe``'s study columns (``COLUMNS``) in its result."""
    per_image = result.per_image or {}
    return {m: per_image[m] for p, m in COLUMNS if p == probe}

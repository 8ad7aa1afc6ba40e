"""The 2D probes (``eval.probes``: depth, seg, cls) as a bench beside the 3D and robot benches (``eval.benches``).

``Bench2D`` is built once per job from the 2D task names: it builds the dataset's train and test splits (the
synthetic benchmark at the probe resolution, or a real dataset, optionally an evenly spaced subset), picks the
probes the tasks ask for (``all``: those whose ``ProbeSpec.targets`` the dataset has) and the depth scoring protocol. Run per
encoder and seed, it extracts (or reads cached) features once per encoder and split and trains every probe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spatialboost.config import ConfigError
from spatialboost.errors import UserError
from spatialboost.eval.datasets import ProbeDataset, build_dataset, parse_data_spec
from spatialboost.eval.depth_protocol import DESCRIPTIONS, SlidingCrops, eigen_depth_probe, resolve_protocol
from spatialboost.eval.features import (
    TARGET_OF_TASK,
    FeatureSet,
    encoder_identity,
    extract_features,
    resize_sample,
)
from spatialboost.eval.probes import ProbeConfigs, ProbeResult, run_probe
from spatialboost.eval.specs import SPECS, TASKS
from spatialboost.image_transform import ImageTransform
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.preprocess import transform_for

log = logging.getLogger(__name__)


@dataclass
class ProbeDataConfig:
    spec: str = "synthetic"  # synthetic | nyu:PATH | ade20k:PATH | voc:PATH | imagefolder:PATH
    num_train: int = 64  # synthetic scenes in the train split
    num_test: int = 32  # synthetic scenes in the test split
    max_train: int = 0  # >0: evenly spaced subset of a real dataset's train split
    max_test: int = 0

    def validate(self) -> None:
        if self.num_train <= 0 or self.num_test <= 0 or self.max_train < 0 or self.max_test < 0:
            raise ConfigError("data.num_train/num_test must be > 0 and data.max_train/max_test >= 0")


class _Subset(ProbeDataset):
    def __init__(self, base: ProbeDataset, n: int) -> None:
        self.base = base
        self.indices = np.linspace(0, len(base) - 1, n).round().astype(int).tolist()
        self.name, self.split, self.tasks = base.name, base.split, base.tasks
        self.seg_classes, self.cls_classes = base.seg_classes, base.cls_classes
        self.skipped = base.skipped

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, index: int):
        return self.base[self.indices[index]]

    @property
    def identity(self) -> str:
        return f"{self.base.identity}/subset{len(self)}"


def build_splits(data: ProbeDataConfig, image_size: int, scene_fn=None) -> tuple[ProbeDataset, ProbeDataset]:
    name, _ = parse_data_spec(data.spec)
    opts: dict[str, Any] = {}
    if name == "synthetic":
        opts = {"image_size": image_size, "scene_fn": scene_fn}
    train = build_dataset(data.spec, "train", num_scenes=data.num_train, **opts)
    test = build_dataset(data.spec, "test", num_scenes=data.num_test, **opts)
    if data.max_train and data.max_train < len(train):
        train = _Subset(train, data.max_train)
    if data.max_test and data.max_test < len(test):
        test = _Subset(test, data.max_test)
    return train, test


def probes_for(tasks: list[str], dataset: ProbeDataset) -> list[str]:
    """The probes of the 2D ``tasks`` in report order; ``all``: every 2D probe whose targets the dataset has."""
    has = {TARGET_OF_TASK[t] for t in dataset.tasks}
    if "all" in tasks:
        return [s.name for s in SPECS.values() if s.bench == "2d" and set(s.targets) <= has]
    missing = [t for t in tasks if any(not set(SPECS[p].targets) <= has for p in TASKS.get(t).probes)]
    if missing:
        raise UserError(f"dataset {dataset.name} has no {missing} targets (it has {list(dataset.tasks)})")
    return list(dict.fromkeys(p for t in tasks for p in TASKS.get(t).probes))


def preview_targets(test_ds: ProbeDataset, transform: ImageTransform, k: int) -> dict[str, np.ndarray]:
    """The first ``k`` test images (uint8) and depth maps as the encoder sees them."""
    samples = [resize_sample(test_ds[i], transform) for i in range(min(k, len(test_ds)))]
    image = np.stack([np.round(s.image * 255.0).astype(np.uint8) for s in samples])
    return {"image": image, "depth": np.stack([s.depth for s in samples])}


class Bench2D:
    """The 2D probes of one job: its splits, probes and depth protocol, and the current encoder's features."""

    kind = "2d"

    def __init__(self, tasks: list[str], data: ProbeDataConfig, cfgs: ProbeConfigs, image_size: int,
                 cache_dir: str | Path, layers: str = "last", batch_size: int = 32, dtype: str = "float32",
                 scene_fn=None) -> None:  # fmt: skip
        self.data, self.cfgs, self.size = data, cfgs, image_size
        self.cache_dir, self.layers, self.batch_size, self.dtype = Path(cache_dir), layers, batch_size, dtype
        self.train, self.test = build_splits(data, image_size, scene_fn)
        self.probes = probes_for(tasks, self.train)
        self.n_test = len(self.test)  # images: an accuracy's sampling noise (runner.aggregate)
        self.scoring = resolve_protocol(cfgs.depth.protocol, data.spec) if "depth" in self.probes else None
        self._encoder: VisionEncoder | None = None  # whose features ``_feats`` holds (one encoder at a time)
        self._feats: dict[str, FeatureSet] = {}
        self._crops: SlidingCrops | None = None

    def _side(self, encoder: VisionEncoder) -> int:
        return self.size - self.size % encoder.spec.patch_size

    def _extract(self, encoder: VisionEncoder, ds: ProbeDataset, identity: dict) -> FeatureSet:
        return extract_features(encoder, ds, self.cache_dir, self.layers, self._side(encoder), self.batch_size,
                                self.dtype, identity)  # fmt: skip

    def features(self, encoder: VisionEncoder, identity: dict | None = None) -> dict[str, FeatureSet]:
        """``train`` and ``test`` features of ``encoder`` (and ``test-eigen``: the sliding crops of the whole
        test images, under the ``nyu-eigen`` depth protocol), extracted on its first run."""
        if encoder is not self._encoder:
            identity = identity or encoder_identity(encoder)
            self._feats = {split: self._extract(encoder, ds, identity)
                           for split, ds in (("train", self.train), ("test", self.test))}  # fmt: skip
            self._crops = None
            if self.scoring == "nyu-eigen":  # the whole test images, by sliding crops (eval.depth_protocol)
                self._crops = SlidingCrops(self.test, transform_for(encoder.spec, self._side(encoder)))
                self._feats["test-eigen"] = self._extract(encoder, self._crops, identity)
            self._encoder = encoder
        return self._feats

    def run(self, encoder: VisionEncoder, seed: int, identity: dict | None = None) -> dict[str, ProbeResult]:
        feats = self.features(encoder, identity)
        out = {}
        for probe in self.probes:
            if probe == "depth" and "test-eigen" in feats:
                res = eigen_depth_probe(
                    feats["train"], feats["test-eigen"], self._crops, self.cfgs.depth, seed
                )
            else:
                res = run_probe(probe, feats["train"], feats["test"], self.cfgs, seed)
            res.protocol = {"layers": self.layers, **res.protocol}
            out[probe] = res
        return out

    def task(self, probe: str) -> str:
        """What a run of ``probe`` records as its task: its spec's (``cls`` for both cls probes)."""
        return SPECS[probe].task

    def fields(self) -> dict[str, Any]:
        """The job summary's entries this bench owns: the dataset and the depth protocol."""
        dataset = {"spec": self.data.spec, "train": self.train.identity, "test": self.test.identity,
                   "n_train": len(self.train), "n_test": len(self.test),
                   "skipped": {"train": list(self.train.skipped), "test": list(self.test.skipped)}}  # fmt: skip
        return {
            "dataset": dataset,
            "depth_protocol": None if self.scoring is None else DESCRIPTIONS[self.scoring],
        }

    def info(self) -> None:
        """Nothing under the summary's ``benches``: ``fields`` says what this bench ran on."""
        return None

    def previews(self, probed: VisionEncoder) -> dict[str, Any]:
        """The depth grid's targets: the first test images as ``probed`` (the job's probed encoder) sees them."""
        if "depth" not in self.probes:
            return {"test": None}
        test: ProbeDataset = self.test
        if self.scoring == "nyu-eigen":  # the crops the depth probe scored
            test = SlidingCrops(self.test, transform_for(probed.spec, self._side(probed)))
        return {"test": preview_targets(test, transform_for(probed.spec, self.size), self.cfgs.depth.preview)}

    def close(self) -> None:
        self._encoder, self._feats, self._crops = None, {}, None

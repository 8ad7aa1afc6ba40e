"""Probe tasks beyond the 2D set, chosen by name: the 3D probes and the robot probe.

``TASKS`` maps a task name (``corr``, ``register``, ``sem3d``, ``all3d``, ``robot``) to the bench that runs it
and the probes it reports. A bench is built once per job (data, caches) and run per encoder and seed:
``bench.run(encoder, seed) -> {probe: ProbeResult}``. ``spatialboost probe`` (``eval.job.run_job``) and the
replicate study (a list of task names in its config) both use ``build_benches``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialboost.config import to_dict
from spatialboost.eval.datasets.multiview import build_multiview
from spatialboost.eval.features import FeatureSet, encoder_identity, extract_features
from spatialboost.eval.probes import ProbeResult
from spatialboost.eval.probes3d import Probe3DConfig, SceneFeatures, run_probe_3d
from spatialboost.eval.robot import RobotBench
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    bench: str  # "3d" | "robot"
    probes: tuple[str, ...]


TASKS: Registry[Task] = Registry("probe task")
TASKS.add("corr", Task("3d", ("corr",)))
TASKS.add("register", Task("3d", ("register",)))
TASKS.add("sem3d", Task("3d", ("sem3d",)))
TASKS.add("all3d", Task("3d", ("corr", "register", "sem3d")))
TASKS.add("robot", Task("robot", ("robot",)))


def is_bench_task(task: str) -> bool:
    """Whether ``task`` runs on a bench (3D, robot) rather than as a 2D probe of ``eval.runner``."""
    return task in TASKS


class Bench3D:
    """Multi-view splits (test always; train for sem3d) and their features per encoder."""

    kind = "3d"

    def __init__(self, spec: str, cfg: Probe3DConfig, probes: list[str], image_size: int, cache_dir: str | Path,
                 layers: str = "last", batch_size: int = 32, dtype: str = "float32") -> None:  # fmt: skip
        cfg.validate()
        self.cfg, self.probes, self.size = cfg, probes, image_size
        self.cache_dir, self.layers, self.batch_size, self.dtype = Path(cache_dir), layers, batch_size, dtype
        splits = ["train", "test"] if "sem3d" in probes else ["test"]
        counts = {"train": cfg.num_train, "test": cfg.num_test}
        self.splits = {s: build_multiview(spec, s, counts[s], cfg.views, image_size) for s in splits}
        self._feats: dict[tuple[str, str], SceneFeatures] = {}
        self.seconds = {"features": 0.0, **{p: 0.0 for p in probes}}

    def features(self, encoder: VisionEncoder, split: str, identity: dict | None = None) -> SceneFeatures:
        identity = identity or encoder_identity(encoder)
        key = (identity["weights_sha256"], split)
        if key not in self._feats:
            t0 = time.perf_counter()
            side = self.size - self.size % encoder.spec.patch_size
            ds = self.splits[split]
            fs: FeatureSet = extract_features(encoder, ds, self.cache_dir, self.layers, side, self.batch_size,
                                              self.dtype, identity)  # fmt: skip
            self._feats[key] = SceneFeatures.build(fs, ds)
            self.seconds["features"] += time.perf_counter() - t0
        return self._feats[key]

    def run(self, encoder: VisionEncoder, seed: int, identity: dict | None = None) -> dict[str, ProbeResult]:
        identity = identity or encoder_identity(encoder)
        train = self.features(encoder, "train", identity) if "train" in self.splits else None
        test = self.features(encoder, "test", identity)
        out = {}
        for probe in self.probes:
            t0 = time.perf_counter()
            out[probe] = run_probe_3d(probe, train, test, self.cfg, seed)
            out[probe].protocol["layers"] = self.layers
            self.seconds[probe] += time.perf_counter() - t0
        return out

    def info(self) -> dict[str, Any]:
        splits = {s: {"identity": ds.identity, "scenes": len(ds.scene_names), "views": len(ds),
                      "skipped": list(getattr(ds, "skipped", []))} for s, ds in self.splits.items()}  # fmt: skip
        return {"kind": self.kind, "probes": self.probes, "splits": splits, "config": to_dict(self.cfg),
                "image_size": self.size, "seconds": dict(self.seconds)}  # fmt: skip

    def close(self) -> None:
        pass


class RobotBenchAdapter:
    """``eval.robot.RobotBench`` behind the bench interface (imported only when a robot task runs)."""

    kind = "robot"

    def __init__(self, cfg, image_size: int, cache_dir: str | Path, layers: str = "last") -> None:
        self.probes = ["robot", *(f"robot/{t}" for t in cfg.tasks)]
        self.bench = RobotBench(cfg, image_size, cache_dir, layers)
        self.blind: dict[int, dict[str, ProbeResult]] = {}

    def run(self, encoder: VisionEncoder, seed: int, identity: dict | None = None) -> dict[str, ProbeResult]:
        if self.bench.cfg.blind and seed not in self.blind:
            self.blind[seed] = self.bench.run(None, seed)
        weights = (identity or {}).get("weights_sha256")
        return self.bench.run(encoder, seed, weights)

    def info(self) -> dict[str, Any]:
        info = {"kind": self.kind, "probes": self.probes, **self.bench.info()}
        info["blind"] = {s: {p: r.metrics for p, r in res.items()} for s, res in sorted(self.blind.items())}
        return info

    def close(self) -> None:
        self.bench.close()


def build_benches(tasks: list[str], spec: str, probes3d: Probe3DConfig, robot, image_size: int,
                  cache_dir: str | Path, layers: str = "last") -> list:  # fmt: skip
    """One bench per kind for the bench tasks among ``tasks`` (2D task names are ignored)."""
    probes: dict[str, list[str]] = {}
    for name in tasks:
        if is_bench_task(name):
            task = TASKS.get(name)
            probes.setdefault(task.bench, [])
            probes[task.bench] += [p for p in task.probes if p not in probes[task.bench]]
    benches: list = []
    if "3d" in probes:
        benches.append(Bench3D(spec, probes3d, probes["3d"], image_size, cache_dir, layers))
    if "robot" in probes:
        benches.append(RobotBenchAdapter(robot, image_size, cache_dir, layers))
    return benches

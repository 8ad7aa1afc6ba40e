"""The benches a probe job runs its tasks on: the 2D probes (``eval.bench2d``), the 3D probes and the robot probe.

``TASKS`` (``eval.specs``, derived from the probe specs) maps a task name (``depth``, ``seg``, ``cls``, ``all``,
``corr``, ``register``, ``sem3d``, ``all3d``, ``robot``) to the bench that runs it and the probes it reports.
``build_benches`` builds one bench per kind (data, caches), in report order (2D, 3D, robot); every bench follows
``Bench``. ``spatialboost probe`` (``eval.job.run_job``) and the replicate study (a list of task names in its
config) both use ``build_benches``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

from spatialboost.config import to_dict
from spatialboost.eval.bench2d import Bench2D
from spatialboost.eval.datasets.multiview import build_multiview
from spatialboost.eval.features import FeatureSet, encoder_identity, extract_features
from spatialboost.eval.probes import ProbeResult
from spatialboost.eval.probes3d import Probe3DConfig, SceneFeatures, run_probe_3d
from spatialboost.eval.robot import RobotBench
from spatialboost.eval.specs import TASKS, Task
from spatialboost.models.encoder_base import VisionEncoder

log = logging.getLogger(__name__)

__all__ = ["TASKS", "Bench", "Bench2D", "Bench3D", "RobotBenchAdapter", "Task", "build_benches"]


class Bench(Protocol):
    """What a job needs of a bench; it is built once per job and run per encoder and seed."""

    kind: str  # "2d" | "3d" | "robot": a ``ProbeSpec.bench``
    probes: list[str]  # what ``run`` reports, in report order
    n_test: int | None  # the test images its accuracies are over (their sampling s.e.), or None

    def run(
        self, encoder: VisionEncoder, seed: int, identity: dict | None = None
    ) -> dict[str, ProbeResult]: ...

    def task(self, probe: str) -> str:
        """The task a run of ``probe`` records."""
        ...

    def fields(self) -> dict[str, Any]:
        """The job summary's entries it owns (``dataset``: the first bench's is the job's)."""
        ...

    def info(self) -> dict[str, Any] | None:
        """Its entry under the summary's ``benches`` (data, thresholds, timings), or None."""
        ...

    def previews(self, probed: VisionEncoder) -> dict[str, Any]:
        """Arrays for the report's plots (``probed``: the job's probed encoder)."""
        ...

    def close(self) -> None: ...


class Bench3D:
    """Multi-view splits (test always; train for sem3d) and their features per encoder."""

    kind = "3d"

    def __init__(self, spec: str, cfg: Probe3DConfig, probes: list[str], image_size: int, cache_dir: str | Path,
                 layers: str = "last", batch_size: int = 32, dtype: str = "float32") -> None:  # fmt: skip
        cfg.validate()
        self.spec, self.cfg, self.probes, self.size = spec, cfg, probes, image_size
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

    n_test = None  # no accuracy over images

    def task(self, probe: str) -> str:
        return self.kind

    def fields(self) -> dict[str, Any]:
        splits = self.info()["splits"]
        return {"dataset": {"spec": self.spec, "train": splits.get("train", {}).get("identity", ""),
                            "test": splits["test"]["identity"], "n_train": splits.get("train", {}).get("scenes", 0),
                            "n_test": splits["test"]["scenes"]}}  # fmt: skip

    def previews(self, probed: VisionEncoder) -> dict[str, Any]:
        return {}

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

    n_test = None  # success is over rollouts, not images

    def task(self, probe: str) -> str:
        return self.kind

    def fields(self) -> dict[str, Any]:
        """Train = expert episodes, test = rollouts per evaluation."""
        info = self.bench.info()
        tasks = info["tasks"]
        return {"dataset": {"spec": "meta-world:" + ",".join(tasks), "train": "expert demos", "test": "rollouts",
                            "n_train": sum(t["episodes"] for t in tasks.values()),
                            "n_test": info["config"]["rollouts"]}}  # fmt: skip

    def previews(self, probed: VisionEncoder) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.bench.close()


def build_benches(
    tasks: list[str], cfg, image_size: int, cache_dir: str | Path, scene_fn=None
) -> list[Bench]:
    """One bench per kind for ``tasks`` (names of ``TASKS``), 2D first, then 3D, then robot. ``cfg`` is a
    ``runner.ProbeConfig``: its ``data``, ``features``, ``probes``, ``probes3d`` and ``robot`` sections."""
    by_bench: dict[str, list[str]] = {}
    for name in tasks:
        by_bench.setdefault(TASKS.get(name).bench, []).append(name)
    probes = {bench: list(dict.fromkeys(p for n in names for p in TASKS.get(n).probes))
              for bench, names in by_bench.items()}  # fmt: skip
    f = cfg.features
    benches: list[Bench] = []
    if "2d" in by_bench:  # its task names: ``all`` depends on the dataset's targets
        benches.append(Bench2D(by_bench["2d"], cfg.data, cfg.probes, image_size, cache_dir, f.layers, f.batch_size,
                               f.dtype, scene_fn))  # fmt: skip
    if "3d" in probes:
        benches.append(Bench3D(cfg.data.spec, cfg.probes3d, probes["3d"], image_size, cache_dir, f.layers,
                               f.batch_size, f.dtype))  # fmt: skip
    if "robot" in probes:
        benches.append(RobotBenchAdapter(cfg.robot, image_size, cache_dir, f.layers))
    return benches

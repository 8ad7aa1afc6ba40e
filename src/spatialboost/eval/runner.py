"""Run a grid of probes for several frozen encoders on one dataset, over n seeds.

``run_probes`` extracts (or reads cached) features once per encoder and split, trains every requested
probe for every seed and aggregates mean +- std (sample std, ddof=1; 0 for one seed). Every number is
stored with its protocol (layers, resolution, head, epochs, lr, seed, ...). Every encoder of a job runs
with the same seeds on the same samples; a boosted encoder's base is always part of the job: pass it as
a baseline, or give the saved boosted directory and its base is rebuilt from it (``config.json`` of
``models.export`` names the base; its weights are the boosted encoder's frozen ``Attn`` channel).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spatialboost.config import ConfigError, to_dict
from spatialboost.errors import UserError
from spatialboost.eval.benches import TASKS as BENCH_TASKS
from spatialboost.eval.datasets import ProbeDataset, build_dataset, parse_data_spec
from spatialboost.eval.depth_protocol import DESCRIPTIONS, SlidingCrops, eigen_depth_probe, resolve_protocol
from spatialboost.eval.features import FeatureSet, encoder_identity, extract_features, resize_sample
from spatialboost.eval.probes import PROBES, ProbeConfigs, run_probe
from spatialboost.eval.probes3d import Probe3DConfig
from spatialboost.eval.report import claim_report_dir, markdown_table, write_report
from spatialboost.eval.robot import RobotConfig
from spatialboost.eval.specs import SPECS, TASK_PROBES, metric_lower_is_better
from spatialboost.image_transform import ImageTransform
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.encoders import create_encoder
from spatialboost.models.export import load_saved_base
from spatialboost.models.preprocess import transform_for
from spatialboost.noise import binomial_se
from spatialboost.registry import UnknownNameError

log = logging.getLogger(__name__)

PROBE_TASK = {name: spec.task for name, spec in SPECS.items() if spec.bench == "2d"}


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


@dataclass
class FeatureConfig:
    layers: Literal["last", "last4"] = "last"
    image_size: int = 0  # pixels; 0 = the probed (boosted) encoder's size; rounded to each patch size
    batch_size: int = 32
    cache_dir: str = ""  # "" = OUT/feature-cache
    dtype: Literal["float32", "float16"] = "float32"


@dataclass
class ProbeConfig:
    encoder: str = ""
    baseline: str = ""
    tasks: list[str] = field(default_factory=lambda: ["all"])  # depth | seg | cls | all | benches.TASKS
    seeds: int = 3
    encoder_seed: int = 0  # initialises every encoder the job builds with random weights (tiny-*), alike
    out: str = "probe-results"
    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    probes: ProbeConfigs = field(default_factory=ProbeConfigs)
    probes3d: Probe3DConfig = field(default_factory=Probe3DConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)

    def validate(self) -> None:
        if self.seeds <= 0:
            raise ConfigError(f"seeds must be > 0, got {self.seeds}")
        bad = [t for t in self.tasks if t not in (*TASK_PROBES, "all", *BENCH_TASKS)]
        if bad:
            raise ConfigError(
                f"unknown task(s) {bad}; known: depth, seg, cls, all, {', '.join(BENCH_TASKS.names())}"
            )


@dataclass
class ProbeResults:
    """``summary`` is JSON-ready (results.json); ``previews`` holds arrays for the depth grid plot."""

    summary: dict[str, Any]
    previews: dict[str, Any] = field(default_factory=dict)


# --- encoders ---------------------------------------------------------------------------------------------


def resolve_encoder(x: VisionEncoder | str | Path, seed: int = 0) -> VisionEncoder:
    """A frozen encoder in eval mode from an instance, a registered name, or a (saved) directory.

    Random initialisations (tiny test encoders, missing weights) draw from ``seed``, not the global RNG,
    so the same name gives the same network in every run and in both arms of a comparison.
    """
    if not isinstance(x, VisionEncoder):
        try:
            x = create_encoder(str(x), seed=seed)
        except UnknownNameError as e:
            raise UserError(str(e)) from None
    x.eval()
    x.requires_grad_(False)
    return x


def saved_base(path: str | Path) -> VisionEncoder | None:
    """The frozen base of a saved boosted encoder directory (``export.load_saved_base``); None when ``path``
    is not a boosted save."""
    base = load_saved_base(path)
    return None if base is None else resolve_encoder(base)


def pair_encoders(
    encoder: VisionEncoder | str | Path, baseline: VisionEncoder | str | Path | None, seed: int = 0
) -> tuple[dict[str, VisionEncoder], dict[str, str]]:
    """The encoders of a probe job, labelled by the flag that named them and their name, and the pair to compare.

    ``--encoder E --baseline B`` -> ``({"baseline (B)": ..., "encoder (E)": ...}, {"encoder (E)": "baseline (B)"})``
    (whether E was ever boosted or not); a saved boosted encoder without ``--baseline`` brings its base along as
    ``"baseline (base of E)"``; ``--encoder E`` alone -> ``{"encoder (E)": ...}`` and no pair."""
    enc_label = f"encoder ({encoder_label(encoder)})"
    if baseline is None or baseline == "":
        base = saved_base(encoder) if isinstance(encoder, str | Path) else None
        if base is None:
            return {enc_label: resolve_encoder(encoder, seed)}, {}
        log.info("%s is a boosted encoder: its base is re-run in the same job", encoder)
        base_label = f"baseline (base of {encoder_label(encoder)})"
        return {base_label: base, enc_label: resolve_encoder(encoder, seed)}, {enc_label: base_label}
    base_label = f"baseline ({encoder_label(baseline)})"
    encs = {base_label: resolve_encoder(baseline, seed), enc_label: resolve_encoder(encoder, seed)}
    return encs, {enc_label: base_label}


def encoder_label(x: VisionEncoder | str | Path) -> str:
    """How a report names an encoder: a registered name or hub id as given, a folder by its name."""
    if isinstance(x, VisionEncoder):
        return x.spec.name
    path = Path(x).expanduser()
    return path.resolve().name if path.is_dir() else str(x)


# --- datasets ---------------------------------------------------------------------------------------------


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
    wanted = list(dataset.tasks) if "all" in tasks else tasks
    missing = [t for t in wanted if t not in dataset.tasks]
    if missing:
        raise UserError(f"dataset {dataset.name} has no {missing} targets (it has {list(dataset.tasks)})")
    return [p for t in wanted for p in TASK_PROBES[t]]


# --- the job ----------------------------------------------------------------------------------------------


def probed_encoder(encs: dict[str, VisionEncoder], pairs: dict[str, str]) -> VisionEncoder:
    """The encoder whose input size a job uses (``features.image_size`` 0): the first boosted one, not its
    baseline; the first encoder when nothing is paired."""
    return encs[next(iter(pairs))] if pairs else next(iter(encs.values()))


def feature_cache_dir(cfg: ProbeConfig) -> Path:
    """``features.cache_dir``, or ``OUT/feature-cache``."""
    return Path(cfg.features.cache_dir or Path(cfg.out) / "feature-cache")


def run_probes(
    encoders: dict[str, VisionEncoder | str | Path],
    cfg: ProbeConfig,
    pairs: dict[str, str] | None = None,
    scene_fn=None,
) -> ProbeResults:
    """Every probe of ``cfg.tasks`` for every encoder, ``cfg.seeds`` seeds each; ``pairs``: boosted -> base."""
    encs = {name: resolve_encoder(e, cfg.encoder_seed) for name, e in encoders.items()}
    pairs = dict(pairs or {})
    for boosted, base in pairs.items():
        if boosted not in encs or base not in encs:
            raise ValueError(f"pair {boosted} -> {base}: both must be among the encoders {list(encs)}")
    probed = probed_encoder(encs, pairs)
    size = cfg.features.image_size or probed.spec.image_size
    train_ds, test_ds = build_splits(cfg.data, size, scene_fn)
    probe_names = probes_for(cfg.tasks, train_ds)
    scoring = resolve_protocol(cfg.probes.depth.protocol, cfg.data.spec) if "depth" in probe_names else None
    crops: SlidingCrops | None = None
    cache_dir = feature_cache_dir(cfg)
    seeds = list(range(cfg.seeds))
    runs: list[dict[str, Any]] = []
    previews: dict[str, Any] = {}
    identities = {}
    for name, enc in encs.items():
        side = size - size % enc.spec.patch_size
        identities[name] = encoder_identity(enc)
        feats = {
            split: extract_features(
                enc,
                ds,
                cache_dir,
                cfg.features.layers,
                side,
                cfg.features.batch_size,
                cfg.features.dtype,
                identities[name],
            )  # fmt: skip
            for split, ds in (("train", train_ds), ("test", test_ds))
        }
        if scoring == "nyu-eigen":  # the whole test images, by sliding crops (eval.depth_protocol)
            crops = SlidingCrops(test_ds, transform_for(enc.spec, side))
            feats["test-eigen"] = extract_features(enc, crops, cache_dir, cfg.features.layers, side,
                                                   cfg.features.batch_size, cfg.features.dtype, identities[name])  # fmt: skip
        for probe in probe_names:
            for seed in seeds:
                runs.append(_one_run(name, probe, feats, cfg, seed, previews, crops))
    previews["test"] = (
        _preview_targets(crops or test_ds, transform_for(probed.spec, size), cfg.probes.depth.preview)
        if "depth" in probe_names
        else None
    )
    summary = {
        "dataset": {
            "spec": cfg.data.spec,
            "train": train_ds.identity,
            "test": test_ds.identity,
            "n_train": len(train_ds),
            "n_test": len(test_ds),
            "skipped": {"train": list(train_ds.skipped), "test": list(test_ds.skipped)},
        },  # fmt: skip
        "encoders": {n: {"spec": _spec_dict(e), "identity": identities[n]} for n, e in encs.items()},
        "pairs": pairs,
        "seeds": seeds,
        "depth_protocol": None if scoring is None else DESCRIPTIONS[scoring],
        "config": to_dict(cfg),
        "runs": runs,
        "rows": aggregate(runs, n_test=len(test_ds)),
    }
    return ProbeResults(summary=summary, previews=previews)


def _one_run(
    name: str, probe: str, feats: dict[str, FeatureSet], cfg: ProbeConfig, seed: int, previews, crops=None
) -> dict:
    log.info("probe %s on %s (seed %d)", probe, name, seed)
    if probe == "depth" and "test-eigen" in feats:
        res = eigen_depth_probe(feats["train"], feats["test-eigen"], crops, cfg.probes.depth, seed)
    else:
        res = run_probe(probe, feats["train"], feats["test"], cfg.probes, seed)
    protocol = {"layers": cfg.features.layers, **res.protocol}
    if res.preview is not None and seed == 0:
        previews[name] = res.preview
    return {"encoder": name, "probe": probe, "task": PROBE_TASK[probe], "seed": seed, "metrics": res.metrics,
            "protocol": protocol}  # fmt: skip


def _spec_dict(enc: VisionEncoder) -> dict[str, Any]:
    s = enc.spec
    return {"name": s.name, "family": s.family, "embed_dim": s.embed_dim, "patch_size": s.patch_size,
            "image_size": s.image_size, "num_layers": s.num_layers}  # fmt: skip


def _preview_targets(test_ds: ProbeDataset, transform: ImageTransform, k: int) -> dict[str, np.ndarray]:
    """The first ``k`` test images (uint8) and depth maps as the encoder sees them."""
    samples = [resize_sample(test_ds[i], transform) for i in range(min(k, len(test_ds)))]
    image = np.stack([np.round(s.image * 255.0).astype(np.uint8) for s in samples])
    return {"image": image, "depth": np.stack([s.depth for s in samples])}


PROPORTIONS = {"top1"}  # metrics that are a fraction of the n_test images: they carry a sampling s.e.


def aggregate(runs: list[dict[str, Any]], n_test: int | None = None) -> list[dict[str, Any]]:
    """One row per (encoder, probe, metric): mean, std (ddof=1) and the per-seed values; for a proportion
    over ``n_test`` images also ``sampling_se`` = sqrt(p (1 - p) / n_test), the test set's own noise (a
    deterministic head has no seed spread, yet one image of 32 moves top-1 by 3 points)."""
    groups: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    protocols: dict[tuple[str, str], dict] = {}
    for r in runs:
        protocols.setdefault((r["encoder"], r["probe"]), {k: v for k, v in r["protocol"].items()
                                                          if k not in ("seed", "final_train_loss")})  # fmt: skip
        for metric, value in r["metrics"].items():
            groups.setdefault((r["encoder"], r["probe"], metric), []).append((r["seed"], value))
    rows = []
    for (enc, probe, metric), vals in groups.items():
        values = np.array([v for _, v in vals], dtype=np.float64)
        rows.append({
            "encoder": enc, "probe": probe, "metric": metric,
            "mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values), "seeds": [s for s, _ in vals], "values": values.tolist(),
            "lower_is_better": metric_lower_is_better(probe, metric), "protocol": protocols[(enc, probe)],
        })  # fmt: skip
        if n_test and metric in PROPORTIONS:
            rows[-1]["sampling_se"] = binomial_se(rows[-1]["mean"], n_test)
    return rows


def known_probes() -> list[str]:
    return PROBES.names()


def probe_before_after(
    base: VisionEncoder | str | Path,
    boosted: VisionEncoder | str | Path,
    cfg: ProbeConfig | None = None,
    out: str | Path | None = None,
    scene_fn=None,
    plots: bool = True,
) -> tuple[ProbeResults, str]:
    """Probe ``base`` and ``boosted`` with the same seeds; log and return a compact before/after table.

    ``cfg`` defaults to ``ProbeConfig()`` (synthetic benchmark, all tasks, 3 seeds). With ``out`` the full
    report (results.json, results.md, plots) is written there too.
    """
    cfg = cfg or ProbeConfig()
    report = None
    if out is not None:
        cfg.out = str(out)
        report = claim_report_dir(out)  # before any work: never into someone's folder
        if not cfg.features.cache_dir:
            report.subdir("feature-cache")
    results = run_probes(
        {"base": base, "boosted": boosted}, cfg, pairs={"boosted": "base"}, scene_fn=scene_fn
    )
    table = markdown_table(results.summary, headline_only=True)
    log.debug("frozen-feature probes, before vs after:\n%s", table)  # the caller prints it once
    if report is not None:
        write_report(results, report, plots=plots)
        report.finish()
    return results, table

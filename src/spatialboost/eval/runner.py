"""The rules of a probe job (``eval.job.run_job``), kept once for every bench (2D, 3D, robot).

``ProbeConfig`` is a job's config. Encoders: every encoder of a job runs with the same seeds on the same samples;
one built with random weights draws from ``encoder_seed``; a boosted encoder's base is always part of the job:
pass it as a baseline, or give the saved boosted directory and its base is rebuilt from it (``config.json`` of
``models.export`` names the base; its weights are the boosted encoder's frozen ``Attn`` channel). The image
size is the probed (boosted) encoder's unless set. ``aggregate`` turns the runs into rows: mean +- std over the
seeds (sample std, ddof=1; 0 for one seed), an accuracy's sampling s.e. over its test images, and each metric's
direction from ``eval.specs``. Every number is stored with its protocol (layers, resolution, head, epochs, lr,
seed, ...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spatialboost.config import ConfigError
from spatialboost.errors import UserError
from spatialboost.eval.bench2d import ProbeDataConfig
from spatialboost.eval.probes import PROBES, ProbeConfigs
from spatialboost.eval.probes3d import Probe3DConfig
from spatialboost.eval.robot import RobotConfig
from spatialboost.eval.specs import TASKS, metric_lower_is_better
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.encoders import create_encoder
from spatialboost.models.export import load_saved_base
from spatialboost.noise import binomial_se
from spatialboost.registry import UnknownNameError

log = logging.getLogger(__name__)

__all__ = ["FeatureConfig", "ProbeConfig", "ProbeDataConfig", "ProbeResults", "aggregate",
           "check_pairs", "feature_cache_dir", "known_probes", "pair_encoders", "probed_encoder", "resolve_encoder",
           "saved_base", "spec_dict"]  # fmt: skip


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
    tasks: list[str] = field(default_factory=lambda: ["all"])  # names of specs.TASKS (all: the 2D probes)
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
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"unknown task(s) {bad}; known: {', '.join(TASKS.names())}")


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


def probed_encoder(encs: dict[str, VisionEncoder], pairs: dict[str, str]) -> VisionEncoder:
    """The encoder whose input size a job uses (``features.image_size`` 0): the first boosted one, not its
    baseline; the first encoder when nothing is paired."""
    return encs[next(iter(pairs))] if pairs else next(iter(encs.values()))


def check_pairs(encs: dict[str, VisionEncoder], pairs: dict[str, str] | None) -> dict[str, str]:
    """``pairs`` (boosted -> base), both of each among the job's encoders."""
    pairs = dict(pairs or {})
    for boosted, base in pairs.items():
        if boosted not in encs or base not in encs:
            raise ValueError(f"pair {boosted} -> {base}: both must be among the encoders {list(encs)}")
    return pairs


def feature_cache_dir(cfg: ProbeConfig) -> Path:
    """``features.cache_dir``, or ``OUT/feature-cache``."""
    return Path(cfg.features.cache_dir or Path(cfg.out) / "feature-cache")


def spec_dict(enc: VisionEncoder) -> dict[str, Any]:
    s = enc.spec
    return {"name": s.name, "family": s.family, "embed_dim": s.embed_dim, "patch_size": s.patch_size,
            "image_size": s.image_size, "num_layers": s.num_layers}  # fmt: skip


PROPORTIONS = {"top1"}  # metrics that are a fraction of the n_test images: they carry a sampling s.e.


def aggregate(runs: list[dict[str, Any]], n_test: int | dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One row per (encoder, probe, metric): mean, std (ddof=1) and the per-seed values; for a proportion
    over ``n_test`` images (one count, or one per probe) also ``sampling_se`` = sqrt(p (1 - p) / n_test), the
    test set's own noise (a deterministic head has no seed spread, yet one image of 32 moves top-1 by 3
    points); for a per-image mean whose runs kept their ``per_image`` values (depth) also ``per_item``, one
    list per seed, from which ``noise`` takes the paired test-image term."""
    groups: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    items: dict[tuple[str, str, str], list[list[float] | None]] = {}
    protocols: dict[tuple[str, str], dict] = {}
    for r in runs:
        protocols.setdefault((r["encoder"], r["probe"]), {k: v for k, v in r["protocol"].items()
                                                          if k not in ("seed", "final_train_loss")})  # fmt: skip
        for metric, value in r["metrics"].items():
            groups.setdefault((r["encoder"], r["probe"], metric), []).append((r["seed"], value))
            items.setdefault((r["encoder"], r["probe"], metric), []).append(
                r.get("per_image", {}).get(metric)
            )
    rows = []
    for key, vals in groups.items():
        enc, probe, metric = key
        values = np.array([v for _, v in vals], dtype=np.float64)
        rows.append({
            "encoder": enc, "probe": probe, "metric": metric,
            "mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values), "seeds": [s for s, _ in vals], "values": values.tolist(),
            "lower_is_better": metric_lower_is_better(probe, metric), "protocol": protocols[(enc, probe)],
        })  # fmt: skip
        n = n_test.get(probe) if isinstance(n_test, dict) else n_test
        if n and metric in PROPORTIONS:
            rows[-1]["sampling_se"] = binomial_se(rows[-1]["mean"], n)
        if all(items[key]):  # every seed's per-image values (a depth probe): the test images' own noise
            rows[-1]["per_item"] = items[key]
    return rows


def known_probes() -> list[str]:
    return PROBES.names()

"""Perception backends (depth, open-vocabulary detection, box-prompted segmentation) behind one interface.

``base`` holds the dataclasses and registries; each model file registers its backend on import. Model
backends are real transformers models loaded with ``from_pretrained`` (hub name or local path); the oracle
backends read ground truth. ``build_backend`` is the one way to make any of them.
"""

from __future__ import annotations

from typing import Any

from spatialboost.datagen.real.perception import depth_pro, oracle, owlv2, sam2  # noqa: F401  (registration)
from spatialboost.datagen.real.perception.base import (
    DEFAULT_VOCABULARY,
    DEPTH_BACKENDS,
    DETECTORS,
    SEGMENTERS,
    BackendConfig,
    DepthResult,
    Detection,
    load_vocabulary,
)
from spatialboost.datagen.real.perception.colors import dominant_color
from spatialboost.datagen.real.perception.oracle import GroundTruth, TruthLookup

_KINDS = {"depth": DEPTH_BACKENDS, "detector": DETECTORS, "segmenter": SEGMENTERS}


def build_backend(
    kind: str, name: str, cfg: BackendConfig | None = None, truth: TruthLookup | None = None
) -> Any:
    """A depth backend / detector / segmenter by registered name; ``truth`` feeds the oracle backends."""
    factory = _KINDS[kind].get(name)
    cfg = cfg or BackendConfig()
    return factory(cfg, truth) if name == "oracle" else factory(cfg)


__all__ = [
    "DEFAULT_VOCABULARY",
    "DEPTH_BACKENDS",
    "DETECTORS",
    "SEGMENTERS",
    "BackendConfig",
    "DepthResult",
    "Detection",
    "GroundTruth",
    "TruthLookup",
    "build_backend",
    "dominant_color",
    "load_vocabulary",
]

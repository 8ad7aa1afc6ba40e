"""SpatialBoost: make pre-trained vision encoders 3D-aware by teaching them through language.

Public API (imported lazily so that ``import spatialboost`` stays light):

- ``create_encoder(x)``: a registered name, a hub name or local path, or a built transformers vision model.
- ``boost_encoder(encoder, BoostConfig(...))`` (or ``**options``): the boosted encoder (paper Eq. 1;
  LoRA and full fine-tuning are its other two modes).
- ``save_encoder(encoder, dir)`` / ``load_encoder(dir)``.
- ``save_hf_encoder(encoder, dir)``: a folder ``transformers.AutoModel.from_pretrained(dir, trust_remote_code=True)``
  loads without spatialboost (``load_encoder`` reads it too).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_encoder": "spatialboost.models.encoders",
    "list_encoders": "spatialboost.models.encoders",
    "boost_encoder": "spatialboost.models.dual_channel",
    "add_dual_channel": "spatialboost.models.dual_channel",  # the former name of boost_encoder
    "save_encoder": "spatialboost.models.export",
    "load_encoder": "spatialboost.models.export",
    "save_hf_encoder": "spatialboost.models.hf_export",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spatialboost' has no attribute {name!r}")

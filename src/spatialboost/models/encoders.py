"""The encoder registry and ``create_encoder`` (timm's ``create_model`` idea).

``create_encoder(x)`` accepts:

- a registered name (``list_encoders()``): tiny random test configs of every family (``tiny-vit``,
  ``tiny-dinov2``, ``tiny-dinov2-reg``, ``tiny-dinov3``, ``tiny-siglip2``, ``tiny-clip``), random-weight
  shape presets for benchmarks (``vit-s14``, ``vit-b16``) and hub checkpoints by short name
  (``dinov2-large`` -> ``facebook/dinov2-large``, loaded with ``from_pretrained``);
- a local directory: a saved SpatialBoost encoder (``models.export.save_encoder``) or a transformers
  checkpoint (``save_pretrained``), dispatched on its config's ``model_type``;
- a hub id (``org/name``), loaded with ``from_pretrained`` (the only path that may download);
- a built transformers vision model instance, wrapped as is (weights shared, not copied).

Every result is a ``VisionEncoder`` in eval mode whose ``spec.extra["source"]`` says how to rebuild its
base (used by ``save_encoder``). Registered random models take ``seed`` for reproducible weights and
config-field overrides as keyword arguments (``create_encoder("tiny-vit", num_hidden_layers=6)``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spatialboost.errors import UserError
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.hf_encoders import FAMILIES, HFEncoder, family_for_model, family_for_model_type
from spatialboost.registry import Registry, UnknownNameError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderEntry:
    """A registered name: a family plus either config fields (random weights) or a hub id."""

    family: str
    config: dict[str, Any] = field(default_factory=dict)
    hub_id: str | None = None
    image_size: int | None = None  # overrides the family's default input side


ENCODERS: Registry[EncoderEntry] = Registry("encoder")

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4)
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
ENCODERS.add("tiny-dinov2", EncoderEntry("dinov2", dict(_TINY, image_size=32, mlp_ratio=2)))
ENCODERS.add(
    "tiny-dinov2-reg",
    EncoderEntry("dinov2-registers", dict(_TINY, image_size=32, mlp_ratio=2, num_register_tokens=2)),
)
ENCODERS.add("tiny-dinov3", EncoderEntry("dinov3", dict(_TINY, image_size=32, num_register_tokens=2)))
ENCODERS.add("tiny-siglip2", EncoderEntry("siglip2", dict(_TINY, num_patches=64)))
ENCODERS.add("tiny-clip", EncoderEntry("clip", dict(_TINY, image_size=32)))
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
for _size in ("small", "base", "large", "giant"):
    ENCODERS.add(f"dinov2-{_size}", EncoderEntry("dinov2", hub_id=f"facebook/dinov2-{_size}"))
    ENCODERS.add(
        f"dinov2-reg-{_size}",
        EncoderEntry("dinov2-registers", hub_id=f"facebook/dinov2-with-registers-{_size}"),
    )
_HUB_IDS = {  # family -> short name -> hub id
    "dinov3": {
        "dinov3-vits16": "facebook/dinov3-vits16-pretrain-lvd1689m",
        "dinov3-vitb16": "facebook/dinov3-vitb16-pretrain-lvd1689m",
        "dinov3-vitl16": "facebook/dinov3-vitl16-pretrain-lvd1689m",
        "dinov3-vit7b16": "facebook/dinov3-vit7b16-pretrain-lvd1689m",
    },
    "siglip2": {
        "siglip2-base": "google/siglip2-base-patch16-naflex",
        "siglip2-so400m": "google/siglip2-so400m-patch16-naflex",
        "siglip2-giant": "google/siglip2-giant-opt-patch16-256",
    },
    "clip": {
        "clip-vit-l14": "openai/clip-vit-large-patch14",
        "openclip-vit-h14": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        "openclip-vit-bigg14": "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
    },
}
for _family, _ids in _HUB_IDS.items():
    for _short, _hub in _ids.items():
        ENCODERS.add(_short, EncoderEntry(_family, hub_id=_hub))


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
    with _seeded(seed):
        if name in ENCODERS:
            return _from_entry(name, ENCODERS.get(name), pretrained, kwargs)
        if Path(name).is_dir():
            return _from_dir(Path(name), pretrained, kwargs)
        if name.count("/") == 1 and not name.startswith((".", "/")):
            return _from_hub(name, pretrained, kwargs)
    known = ", ".join(ENCODERS.names())
    raise UnknownNameError(
        f"unknown encoder {name!r}: not a registered name, an existing directory or a hub id (org/name); known: {known}"
    )


def wrap_model(model: nn.Module, name: str, source: dict[str, Any], **spec_kwargs: Any) -> HFEncoder:
    """Put a built transformers vision model behind the contract (shares its weights)."""
    family = family_for_model(model)
    if family is None:
        known = ", ".join(f.model_class.__name__ for f in FAMILIES.values())
        raise TypeError(f"cannot wrap {type(model).__name__}; supported model classes: {known}")
    model.config._attn_implementation = "sdpa"
    encoder = family(model.eval(), name=name, **spec_kwargs)
    encoder.spec.extra["source"] = source
    return encoder.eval()


def build_from_config(family: str, config: dict[str, Any]) -> nn.Module:
    """A random-weight HF model of ``family`` from plain config fields (no download)."""
    fam = FAMILIES[family]
    cfg = fam.config_class(**config)
    cfg._attn_implementation = "sdpa"
    return fam.model_class(cfg)


def _from_entry(name: str, entry: EncoderEntry, pretrained: bool, overrides: dict[str, Any]) -> HFEncoder:
    if entry.hub_id is not None:
        enc = _from_hub(entry.hub_id, pretrained, overrides)
        enc.spec.name = name
        return enc
    config = {**entry.config, **overrides}
    model = build_from_config(entry.family, config)
    source = {"kind": "config", "family": entry.family, "registered": name}  # weights are random
    return wrap_model(model, name=name, source=source, image_size=entry.image_size)


def _from_dir(path: Path, pretrained: bool, overrides: dict[str, Any]) -> VisionEncoder:
    from spatialboost.models.export import is_saved_encoder, load_encoder

    if is_saved_encoder(path):
        return load_encoder(path)
    if not (path / "config.json").is_file():
        raise UserError(
            f"{path}: not an encoder folder (no config.json); give a registered name, a folder written by "
            "`spatialboost export` / save_pretrained, or a hub id (org/name)"
        )
    return _from_hub(str(path), pretrained, overrides, local=True)


def _from_hub(
    name_or_path: str, pretrained: bool, overrides: dict[str, Any], local: bool = False
) -> HFEncoder:
    """Dispatch on the checkpoint's ``model_type``; ``from_pretrained`` when ``pretrained``."""
    from transformers import AutoConfig

    try:
        auto_cfg = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:  # not cached offline, no such repo, or a config without model_type
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{name_or_path}: cannot read a transformers config ({reason})") from None
    family = family_for_model_type(auto_cfg.model_type)
    if family is None:
        known = sorted(t for f in FAMILIES.values() for t in f.model_types)
        raise UnknownNameError(
            f"{name_or_path}: model_type {auto_cfg.model_type!r} is not a supported vision encoder; known: {known}"
        )
    if pretrained:
        model = family.model_class.from_pretrained(name_or_path, attn_implementation="sdpa", **overrides)
    else:
        cfg = family.config_class.from_pretrained(name_or_path, **overrides)
        model = family.model_class(cfg)
    kind = "path" if local else "hub"
    ref = str(Path(name_or_path).resolve()) if local else name_or_path
    source = {"kind": kind, "ref": ref, "family": family.family, "pretrained": pretrained}
    mean, std, size = _processor_conventions(name_or_path, local)
    return wrap_model(model, name=name_or_path, source=source, mean=mean, std=std, image_size=size)


def _processor_conventions(name_or_path: str, local: bool) -> tuple[Any, Any, int | None]:
    """mean/std/crop size from a checkpoint's ``preprocessor_config.json``; the family's defaults only when the
    checkpoint has none (said in the log). A file that exists but cannot be read is a UserError."""
    file = _preprocessor_file(name_or_path, local)
    if file is None:
        log.info("%s has no preprocessor_config.json: the family's mean/std/size apply", name_or_path)
        return None, None, None
    try:
        pre = json.loads(file.read_text(encoding="utf-8"))
        size = pre.get("crop_size") or pre.get("size") or {}
        side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
        return pre.get("image_mean"), pre.get("image_std"), int(side) if side else None
    except (ValueError, AttributeError, TypeError) as e:
        raise UserError(f"{file}: unreadable preprocessor config ({e}); fix or remove the file") from None


def _preprocessor_file(name_or_path: str, local: bool) -> Path | None:
    if local:
        file = Path(name_or_path) / "preprocessor_config.json"
        return file if file.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(name_or_path, "preprocessor_config.json"))
    except EntryNotFoundError:  # the repo has no such file (or, offline, it was never cached)
        return None


class _seeded:
    """Fork the global torch RNG and seed it when ``seed`` is given (so callers' RNG is untouched)."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._fork: Any = None

    def __enter__(self) -> None:
        if self.seed is not None:
            self._fork = torch.random.fork_rng(devices=[])
            self._fork.__enter__()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)


def timm_encoder(name: str) -> VisionEncoder:
    """timm models are an optional extra (they need a torchvision that matches torch)."""
    try:
        import timm  # noqa: F401
    except Exception as e:
        raise ImportError(
            f"timm encoders need the optional extra: pip install spatialboost[timm] ({e})"
        ) from None
    raise NotImplementedError("timm encoders are not wrapped yet; use the HF transformers checkpoints")


def open_clip_encoder(name: str) -> VisionEncoder:
    """open_clip models are an optional extra; OpenCLIP checkpoints in HF format work via ``create_encoder``."""
    try:
        import open_clip  # noqa: F401
    except Exception as e:
        raise ImportError(
            f"open_clip encoders need the optional extra: pip install spatialboost[open_clip] ({e})"
        ) from None
    raise NotImplementedError(
        "open_clip models are not wrapped yet; use their HF-format checkpoints (laion/...)"
    )

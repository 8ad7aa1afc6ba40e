"""A (boosted) encoder as a transformers-native folder: ``AutoModel.from_pretrained(DIR, trust_remote_code=True)``.

Layout of ``save_hf_encoder(encoder, DIR)`` (``spatialboost export RUN --out DIR``, the default format)::

    DIR/config.json                  the base family's config; for a dual-channel encoder model_type
                                     "spatialboost_<family type>" and an ``auto_map`` naming the file below,
                                     plus "spatialboost": what was boosted (gate, layers) and how to rebuild it
    DIR/modeling_spatialboost.py     (dual mode) the self-contained model classes: torch + transformers only
    DIR/model.safetensors            every weight, under the remote model's own names
      or DIR/spatialboost_adapter.safetensors   (``adapter_only``) Attn+ and gates, the base named by
                                     config.spatialboost.base_model (a hub id or a transformers checkpoint)
    DIR/preprocessor_config.json     a ``CLIPImageProcessor``: short side to the input size (bicubic), centre
                                     crop, rescale, the encoder's mean/std (``models.preprocess``'s steps)
    DIR/README.md                    the model card (``models.card``)

Dual-channel weights are stored as they live in the boosted HF model (``encoder.model.state_dict()``:
``...attention.base.*``, ``...attention.plus.*``, ``...attention.gate``), so the remote classes and
``load_encoder`` read the same file. The two channels cannot be merged into one attention (each has its
own softmax); a model_type of its own makes plain ``AutoModel`` refuse the folder without
``trust_remote_code`` rather than load a DINOv2 with random attention weights. LoRA is merged into the
family's own projections (W + scale * B A) and a full fine-tune is written as is: both are plain
family checkpoints that load without remote code.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from spatialboost.errors import UserError
from spatialboost.io import OutputDir
from spatialboost.models.card import model_card
from spatialboost.models.dual_channel import (
    DualChannelAttention,
    adapter_state_dict,
    base_state_dict,
    boost_encoder,
    boost_options,
    load_adapter_state_dict,
)
from spatialboost.models.encoder_base import EncoderSpec, VisionEncoder
from spatialboost.models.encoder_files import (
    KIND,
    EncoderFormatError,
    legacy_encoder_files,
    load_tensors,
    save_tensors,
)
from spatialboost.models.hf_encoders import FAMILIES, load_pretrained, model_from_saved_config, wrap_model
from spatialboost.models.preprocess import patch_multiple

HF_FORMAT = "spatialboost-hf"
HF_VERSION = 1
CONFIG = "config.json"
MODELING = "modeling_spatialboost.py"
WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "spatialboost_adapter.safetensors"
PROCESSOR = "preprocessor_config.json"
CARD = "README.md"

# family -> (config class, model class) in modeling_spatialboost.py
REMOTE_CLASSES = {name: f.remote_classes() for name, f in FAMILIES.items()}
_NOT_HF_KEYS = (
    "model_type",
    "transformers_version",
    "auto_map",
    "architectures",
    "spatialboost",
    "_name_or_path",
)


def save_hf_encoder(
    encoder: VisionEncoder,
    path: str | Path,
    adapter_only: bool = False,
    overwrite: bool = False,
    card: str | None = None,
) -> Path:
    """Write ``encoder`` as a transformers-native folder (layout above); returns ``path``.

    ``card``: the README.md text (``models.card.model_card``); a minimal card when None. ``path`` may be
    new, empty or an earlier output of ours; anything else is refused unless ``overwrite`` (and then only
    the files above are written)."""
    boost = boost_options(encoder)
    mode = boost["mode"] if boost else None
    if adapter_only and mode != "dual":
        raise UserError(
            f"--adapter-only needs a dual-channel boosted encoder; this one is {mode or 'not boosted'}"
        )
    base_ref = hf_base_reference(encoder) if adapter_only else None
    config = hf_config(encoder, base_ref)
    out = OutputDir.claim(path, KIND, overwrite=overwrite, legacy=legacy_encoder_files)
    if adapter_only:
        save_tensors(
            {k.removeprefix("model."): v for k, v in adapter_state_dict(encoder).items()},
            out,
            ADAPTER_WEIGHTS,
        )
    else:
        save_tensors(hf_state_dict(encoder), out, WEIGHTS)
    if mode == "dual":
        out.write_bytes(MODELING, (Path(__file__).parent / MODELING).read_bytes())
    out.write_json(PROCESSOR, processor_config(encoder.spec))
    if card is None:
        card = model_card(config, out_dir=Path(path))
    out.write_text(CARD, card)
    out.write_json(CONFIG, config)
    out.finish()
    return Path(path)


def hf_config(encoder: VisionEncoder, base_ref: str | None = None) -> dict[str, Any]:
    """config.json: the family's config (remote-code model_type and auto_map in dual mode) + "spatialboost"."""
    boost = boost_options(encoder)
    mode = boost["mode"] if boost else None
    cfg = json.loads(encoder.model.config.to_json_string(use_diff=False))
    cfg.pop("_name_or_path", None)
    family = encoder.spec.family
    spec = dataclasses.asdict(encoder.spec)
    meta = {
        "format": HF_FORMAT,
        "version": HF_VERSION,
        "mode": mode,  # None (plain), "dual" (remote code), "lora" (merged), "full"
        "gate": boost["gate"] if mode == "dual" else None,
        "layers": boosted_layers(encoder),
        "base_model": base_ref,  # set only for an adapter-only folder
        "spec": spec,
        "source": dict(spec["extra"].get("source", {"kind": "instance"})),
        "boost": boost,
    }
    if mode == "dual":
        config_cls, model_cls = REMOTE_CLASSES[family]
        cfg["model_type"] = f"spatialboost_{cfg['model_type']}"
        cfg["architectures"] = [model_cls]
        cfg["auto_map"] = {
            "AutoConfig": f"{MODELING[:-3]}.{config_cls}",
            "AutoModel": f"{MODELING[:-3]}.{model_cls}",
        }
    else:
        cfg["architectures"] = [type(encoder.model).__name__]
    cfg["spatialboost"] = meta
    return cfg


def boosted_layers(encoder: VisionEncoder) -> list[int]:
    """Block indices whose attention is a ``DualChannelAttention``."""
    slots = encoder.attention_slots()
    return [
        i for i, (block, attr) in enumerate(slots) if isinstance(getattr(block, attr), DualChannelAttention)
    ]


def hf_state_dict(encoder: VisionEncoder) -> dict[str, torch.Tensor]:
    """Every weight under the HF model's names: dual as is, LoRA merged into its projections, else plain."""
    boost = boost_options(encoder)
    if boost is None or boost["mode"] == "full":
        return {k: v.detach() for k, v in encoder.model.state_dict().items()}
    if boost["mode"] == "dual":
        return {k: v.detach() for k, v in encoder.model.state_dict().items()}
    merged = copy.deepcopy(encoder)
    with torch.no_grad():
        for module in merged.modules():
            if hasattr(module, "lora_A") and hasattr(module, "merge"):
                module.merge()  # peft: W += scale * B @ A
    return base_state_dict(merged)


def hf_base_reference(encoder: VisionEncoder) -> str:
    """What ``from_pretrained`` can load the base from (hub id or local transformers checkpoint), or refuse."""
    source = encoder.spec.extra.get("source", {})
    ref = source.get("ref")
    if source.get("kind") == "hub" and source.get("pretrained"):
        return ref
    if source.get("kind") == "path" and source.get("pretrained") and _transformers_checkpoint(Path(ref)):
        return str(Path(ref).resolve())
    raise UserError(
        f"--adapter-only needs a base that transformers can load by name (a hub id or a save_pretrained folder); "
        f"this encoder's base is {source or 'unknown'}: export the full model instead (drop --adapter-only)"
    )


def _transformers_checkpoint(path: Path) -> bool:
    try:
        cfg = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "model_type" in cfg and "spatialboost" not in cfg and "format" not in cfg


PIL_RESAMPLE = {"bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values, as HF image processors store them


def processor_config(spec: EncoderSpec) -> dict[str, Any]:
    """A ``CLIPImageProcessor`` doing ``models.preprocess``'s steps (it has a PIL version: no torchvision needed)."""
    side = patch_multiple(spec.image_size, spec.patch_size)
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": side},
        "resample": PIL_RESAMPLE[spec.interpolation],
        "do_center_crop": True,
        "crop_size": {"height": side, "width": side},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(spec.mean),
        "image_std": list(spec.std),
    }


# ----------------------------------------------------------------------------------------------- reading back


def is_hf_config(config: Any) -> bool:
    return (
        isinstance(config, dict)
        and isinstance(config.get("spatialboost"), dict)
        and (config["spatialboost"].get("format") == HF_FORMAT)
    )


def hf_read_config(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The same dict ``export.read_config`` gives for the native format (spec, source, hf_config, boost, files)."""
    meta = config["spatialboost"]
    if meta.get("version") != HF_VERSION:
        raise EncoderFormatError(
            f"{path / CONFIG}: unsupported version {meta.get('version')!r} (this code reads {HF_VERSION})"
        )
    adapter_only = meta.get("base_model") is not None
    return {
        "format": HF_FORMAT,
        "spec": meta["spec"],
        "source": meta["source"],
        "hf_config": {k: v for k, v in config.items() if k not in _NOT_HF_KEYS},
        "boost": meta["boost"] if meta.get("mode") == "dual" else None,  # LoRA/full are merged: plain weights
        "files": {"base": not adapter_only, "adapter": meta.get("mode") == "dual"},
        "hf": meta,
    }


def load_hf_encoder(path: Path, config: dict[str, Any]) -> VisionEncoder:
    """``load_encoder`` for a folder ``save_hf_encoder`` wrote (``config`` from ``hf_read_config``)."""
    spec, source, boost = config["spec"], config["source"], config["boost"]
    spec_kwargs = dict(image_size=spec["image_size"], mean=spec["mean"], std=spec["std"],
                       interpolation=spec.get("interpolation"))  # fmt: skip
    if config["hf"].get("base_model") is None:
        encoder = wrap_model(
            model_from_saved_config(path, config), name=spec["name"], source=source, **spec_kwargs
        )
        if boost is not None:
            boost_encoder(encoder, **boost)
        try:
            encoder.model.load_state_dict(load_tensors(path / WEIGHTS), strict=True)
        except RuntimeError as e:
            raise EncoderFormatError(f"{path / WEIGHTS}: weights do not match the config ({e})") from None
        if boost is None:  # a plain folder is itself a base others can reference
            encoder.spec.extra["source"] = {"kind": "path", "ref": str(path.resolve()), "family": spec["family"],
                                            "pretrained": True}  # fmt: skip
    else:
        base = config["hf"]["base_model"]  # a hub id or a transformers checkpoint (``hf_base_reference``)
        encoder = load_pretrained(base, pretrained=True, overrides={}, local=Path(base).is_dir())
        encoder.spec = EncoderSpec(**{**spec, "mean": tuple(spec["mean"]), "std": tuple(spec["std"]),
                                      "extra": {**spec.get("extra", {}), "source": source}})  # fmt: skip
        boost_encoder(encoder, **boost)
        state = {f"model.{k}": v for k, v in load_file(str(path / ADAPTER_WEIGHTS)).items()}
        try:
            load_adapter_state_dict(encoder, state)
        except ValueError as e:
            raise EncoderFormatError(f"{path / ADAPTER_WEIGHTS}: {e}") from None
    return encoder.eval()

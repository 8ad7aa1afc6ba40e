"""Save and load a (boosted) vision encoder on its own, without any LLM; export a training run's encoder.

A saved encoder directory (``save_encoder``; safetensors only, never pickle)::

    DIR/config.json           {"format": "spatialboost-encoder", "version": 1,
                               "spec": EncoderSpec fields, "source": how to re-obtain the base
                               (registered config / hub id / local path / instance),
                               "hf_config": the HF config of the base, "boost": BoostConfig fields or null,
                               "files": {"base": bool, "adapter": bool}}
    DIR/base.safetensors      the base HF model's weights under its own names; written when
                              include_base=True or when the base cannot be re-obtained (random weights)
    DIR/adapter.safetensors   ``dual_channel.adapter_state_dict``: Attn+ and gates / LoRA / all weights

Directories are written atomically: into a temporary sibling, then renamed into place.

Training-run layout (what ``export_run`` and ``spatialboost export RUN_DIR`` read)::

    RUN_DIR/encoder/                          the final boosted encoder, save_encoder(enc, ..., include_base=False)
    RUN_DIR/checkpoints/step-<N>/encoder/     the same for each checkpoint (N an integer step)

``export_run`` takes ``RUN_DIR/encoder`` when it exists, else the checkpoint with the largest N, and
writes a standalone directory with the base weights copied in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spatialboost.errors import UserError
from spatialboost.io import atomic_write_json
from spatialboost.models.dual_channel import (
    adapter_state_dict,
    add_dual_channel,
    base_state_dict,
    boost_options,
    load_adapter_state_dict,
)
from spatialboost.models.encoder_base import EncoderSpec, VisionEncoder

log = logging.getLogger(__name__)

FORMAT = "spatialboost-encoder"
VERSION = 1
CONFIG, BASE, ADAPTER = "config.json", "base.safetensors", "adapter.safetensors"


class EncoderFormatError(UserError):
    """A directory that is not a readable saved encoder; the message names the file and the reason."""


def save_encoder(encoder: VisionEncoder, path: str | Path, include_base: bool = True) -> Path:
    """Write ``encoder`` (boosted or not) to directory ``path``, replacing it atomically."""
    path = Path(path)
    source = dict(encoder.spec.extra.get("source", {"kind": "instance"}))
    write_base = include_base or not _reobtainable(source)
    boost = boost_options(encoder)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "spec": dataclasses.asdict(encoder.spec),
        "source": source,
        "hf_config": json.loads(encoder.model.config.to_json_string(use_diff=False)),
        "boost": boost,
        "files": {"base": write_base, "adapter": boost is not None},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        if write_base:
            _save_tensors(base_state_dict(encoder), tmp / BASE)
        if boost is not None:
            _save_tensors(adapter_state_dict(encoder), tmp / ADAPTER)
        atomic_write_json(tmp / CONFIG, config)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_encoder(path: str | Path) -> VisionEncoder:
    """Rebuild the encoder saved by ``save_encoder`` (base, boost and adapter), in eval mode."""
    from spatialboost.models.encoders import create_encoder, wrap_model

    path = Path(path)
    config = read_config(path)
    spec = config["spec"]
    source = config["source"]
    spec_kwargs = dict(image_size=spec["image_size"], mean=spec["mean"], std=spec["std"])
    if config["files"].get("base"):
        model = _model_from_hf_config(path, config)
        model.load_state_dict(_load_tensors(path / BASE), strict=True)
        if config["boost"] is None:  # a plain saved encoder is itself a base others can reference
            source = {
                "kind": "path",
                "ref": str(path.resolve()),
                "family": spec["family"],
                "pretrained": True,
            }
        encoder = wrap_model(model, name=spec["name"], source=source, **spec_kwargs)
    elif _reobtainable(source):
        encoder = create_encoder(source["ref"], pretrained=True)
        extra = {**spec.get("extra", {}), "source": source}
        encoder.spec = EncoderSpec(
            **{**spec, "mean": tuple(spec["mean"]), "std": tuple(spec["std"]), "extra": extra}
        )
    else:
        raise EncoderFormatError(f"{path / BASE}: missing, and the base ({source}) cannot be re-obtained")
    if config["boost"] is not None:
        add_dual_channel(encoder, **config["boost"])
        try:
            load_adapter_state_dict(encoder, _load_tensors(path / ADAPTER))
        except ValueError as e:
            raise EncoderFormatError(f"{path / ADAPTER}: {e}") from None
    return encoder.eval()


def is_saved_encoder(path: str | Path) -> bool:
    try:
        read_config(Path(path))
    except EncoderFormatError:
        return False
    return True


def read_config(path: Path) -> dict[str, Any]:
    """The parsed config.json of a saved encoder, or an ``EncoderFormatError`` that says what is wrong."""
    file = path / CONFIG
    if not path.is_dir():
        raise EncoderFormatError(f"{path}: not a directory (expected a saved encoder directory)")
    if not file.is_file():
        raise EncoderFormatError(f"{file}: missing; {path} is not a saved encoder (see save_encoder)")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EncoderFormatError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise EncoderFormatError(f'{file}: not a SpatialBoost encoder config (no "format": "{FORMAT}")')
    if config.get("version") != VERSION:
        raise EncoderFormatError(
            f"{file}: unsupported version {config.get('version')!r} (this code reads {VERSION})"
        )
    missing = [k for k in ("spec", "source", "hf_config", "boost", "files") if k not in config]
    if missing:
        raise EncoderFormatError(f"{file}: missing keys {missing}")
    return config


def find_run_encoder(run_dir: str | Path) -> Path:
    """``RUN_DIR/encoder`` if saved, else the newest ``RUN_DIR/checkpoints/step-<N>/encoder``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found")
    if (run_dir / "encoder" / CONFIG).is_file():
        return run_dir / "encoder"
    steps = []
    for d in (run_dir / "checkpoints").glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", d.name)
        if m and (d / "encoder" / CONFIG).is_file():
            steps.append((int(m.group(1)), d / "encoder"))
    if not steps:
        raise UserError(f"{run_dir}: no encoder/ and no checkpoints/step-<N>/encoder/ with a {CONFIG}")
    return max(steps)[1]


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the run's boosted encoder as a standalone directory (base weights copied in)."""
    src = find_run_encoder(run_dir)
    log.info("exporting %s -> %s", src, out_dir)
    return save_encoder(load_encoder(src), out_dir, include_base=True)


def _reobtainable(source: dict[str, Any]) -> bool:
    return source.get("kind") in ("hub", "path") and bool(source.get("pretrained"))


def _model_from_hf_config(path: Path, config: dict[str, Any]) -> torch.nn.Module:
    from spatialboost.models.encoders import build_from_config
    from spatialboost.models.hf_encoders import FAMILIES

    family = config["spec"].get("family")
    if family not in FAMILIES:
        raise EncoderFormatError(f"{path / CONFIG}: unknown family {family!r}; known: {sorted(FAMILIES)}")
    hf_config = {
        k: v for k, v in config["hf_config"].items() if k not in ("model_type", "transformers_version")
    }
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG as it was
        return build_from_config(family, hf_config)


def _save_tensors(state: dict[str, torch.Tensor], file: Path) -> None:
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(file), metadata={"format": "pt"})


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise EncoderFormatError(f"{file}: missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise EncoderFormatError(f"{file}: not a readable safetensors file ({e})") from None


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is moved aside first and removed after."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old / path.name)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)

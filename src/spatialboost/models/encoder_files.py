"""What both on-disk encoder formats share (``export``'s own layout and ``hf_export``'s transformers folder).

The ``OutputDir`` kind they are written under, the error for an unreadable one, safetensors written
atomically and read back with a clear error, the export formats, and how to recognise a directory an earlier, marker-less version of ``save_encoder`` wrote (its file names are the
native layout's, listed in ``export``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spatialboost.errors import UserError
from spatialboost.io import OutputDir

KIND = "encoder"  # the OutputDir kind of every saved or exported encoder directory
FORMAT = "spatialboost-encoder"  # the native layout (``export``)
CONFIG, BASE, ADAPTER = "config.json", "base.safetensors", "adapter.safetensors"
FORMATS = ("hf", "spatialboost")  # ``export_run``'s choices: ``hf_export``'s folder or the native layout


class EncoderFormatError(UserError):
    """A directory that is not a readable saved encoder; the message names the file and the reason."""


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


def load_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise EncoderFormatError(f"{file}: missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise EncoderFormatError(f"{file}: not a readable safetensors file ({e})") from None

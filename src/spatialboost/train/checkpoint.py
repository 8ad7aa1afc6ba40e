"""Checkpoints that survive ``kill -9``: written to a temp dir, then renamed into place.

Layout of one stage's checkpoints (``<stage_dir>/checkpoints/``)::

    step-00000050/
        trainable.safetensors   only the parameters this stage trains (never frozen LLM/encoder weights)
        optim.pt                optimiser + scheduler state and RNG states (torch.save; loaded weights_only)
        state.json              step, data position, totals, done flag, last loss
        encoder/                (stage ``encoder`` only) the boosted encoder, save_encoder(include_base=False)

A directory named ``step-*`` exists only once complete (``os.replace`` of the temp dir is atomic), so the
newest one is always loadable. Old ones are renamed to ``.trash-*`` before deletion (keep-last-k), and
leftover ``.tmp-*``/``.trash-*`` dirs from a killed run are cleared on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from spatialboost.io import atomic_dir, file_mode

log = logging.getLogger(__name__)

WEIGHTS = "trainable.safetensors"
OPTIM = "optim.pt"
STATE = "state.json"
PREFIX = "step-"


def step_dir_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def clear_leftovers(root: str | Path) -> None:
    """Remove temp/trash dirs a killed run may have left (never a complete ``step-*``)."""
    root = Path(root)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    root: str | Path,
    step: int,
    weights: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    state: dict[str, Any],
    keep_last: int = 2,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``step-<step>`` atomically and prune to the newest ``keep_last``; returns its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    if final.exists():  # a resumed deterministic run reached the same step: identical content
        return final
    with atomic_dir(final, tmp=root / f".tmp-{final.name}-{os.getpid()}", durable=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS))
        os.chmod(tmp / WEIGHTS, file_mode())  # safetensors writes 0600 whatever the umask
        torch.save(optim_state, tmp / OPTIM)
        (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")
        if write_extra is not None:
            write_extra(tmp)
    prune(root, keep_last)
    return final


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(weights, optim_state, state) of a checkpoint dir; no pickle is executed (weights_only)."""
    path = Path(path)
    weights = load_file(str(path / WEIGHTS))
    optim_state = torch.load(path / OPTIM, map_location="cpu", weights_only=True)
    state = json.loads((path / STATE).read_text())
    return weights, optim_state, state


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / WEIGHTS))


def read_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE).read_text())


def prune(root: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` checkpoints; older ones are renamed away, then deleted."""
    for old in list_checkpoints(root)[:-keep_last]:
        trash = root / f".trash-{old.name}"
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

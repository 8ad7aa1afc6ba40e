"""The probe-dataset interface and the helpers every reader shares.

A probe dataset is a sized, indexable collection for one split. ``dataset[i]`` is a ``ProbeSample``: an
RGB image (H, W, 3) uint8 and the targets the source has -- ``depth`` (H, W) float32 metres (0 = invalid),
``seg`` (H, W) uint8/int class ids (``SEG_IGNORE_INDEX`` = not scored) and ``label`` (int class id).
``dataset.item(i, task)`` gives the ``(image, target)`` pair of one task. ``identity`` is a string that
changes whenever the samples would (it keys the feature cache).

Readers list their files with ``io.walk_tree`` and resolve the paths a list file names with ``io.confined``:
nothing outside the root the user gave is read. A refused item is skipped and listed in ``skipped``
(``"path: reason"``), which the probe report records; a folder the layout needs that leads outside the root
is a ``UserError`` (``io.UnsafePathError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.errors import UserError
from spatialboost.io import Refusal

SPLITS = ("train", "val", "test")


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` -> (NAME, None); ``NAME:PATH`` -> (NAME, PATH): the one reading of a ``--data`` spec."""
    name, sep, path = spec.partition(":")
    return name.strip(), (path if sep else None)


@dataclass
class ProbeSample:
    image: np.ndarray  # (H, W, 3) uint8, or float32 in [0, 1] (already resized: ``eval.depth_protocol``)
    depth: np.ndarray | None = None  # (H, W) float32, metres, 0 = invalid
    seg: np.ndarray | None = None  # (H, W) class ids, SEG_IGNORE_INDEX = not scored
    label: int | None = None  # image-level class id


class ProbeDataset:
    """Base class: subclasses fill ``name``, ``split``, ``tasks``, class lists and ``_load``."""

    name: str = "?"
    split: str = "train"
    tasks: tuple[str, ...] = ()  # subset of ("depth", "seg", "cls")
    seg_classes: list[str] = []
    cls_classes: list[str] = []
    ignore_index: int = SEG_IGNORE_INDEX
    skipped: list[str] | tuple[str, ...] = ()  # "path: reason" of each item refused while listing the split

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> ProbeSample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> ProbeSample:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}/{self.split}: index {index} out of range ({len(self)} samples)")
        return self._load(index)

    def item(self, index: int, task: str) -> tuple[np.ndarray, np.ndarray | int]:
        """The ``(image, target)`` pair of one task."""
        if task not in self.tasks:
            raise UserError(f"dataset {self.name} has no {task!r} targets (it has {list(self.tasks)})")
        s = self[index]
        target = {"depth": s.depth, "seg": s.seg, "cls": s.label}[task]
        return s.image, target

    @property
    def identity(self) -> str:
        return f"{self.name}/{self.split}/{len(self)}"


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    if split not in allowed:
        raise UserError(f"unknown split {split!r}; known: {', '.join(allowed)}")
    return split


def refusal_texts(refused: list[Refusal]) -> list[str]:
    """``"path: reason"`` of each refused item (what ``ProbeDataset.skipped`` lists)."""
    return [f"{r.rel}: {r.reason}" for r in refused]


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 from any image file PIL reads; a bad file raises a UserError naming it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: cannot read image ({e})") from None


def read_label_png(path: Path) -> np.ndarray:
    """(H, W) raw indices of a label PNG (palette 'P' or greyscale 'L'/'I'), no colour conversion."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"label PNG must be palette or greyscale, got mode {im.mode}")
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: cannot read label map ({e})") from None


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path}: {what} not found")
    return path

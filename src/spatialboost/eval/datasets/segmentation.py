"""Semantic-segmentation readers: ADE20K (SceneParsing ``ADEChallengeData2016``) and Pascal VOC 2012.

ADE20K: ``ROOT/images/{training,validation}/*.jpg`` and ``ROOT/annotations/{training,validation}/*.png``
(greyscale, 0 = "other", 1..150 = classes). Labels are shifted down by one ("reduce zero label"): 0 becomes
``SEG_IGNORE_INDEX`` and class k becomes k - 1 (150 classes). ``train`` = training; ``val``/``test`` = validation.

VOC 2012: ``ROOT`` is ``VOC2012/`` (or a folder holding ``VOCdevkit/VOC2012`` or ``VOC2012``):
``ImageSets/Segmentation/{train,val}.txt``, ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``
(palette PNG whose indices are the 21 class ids; 255 = boundary, ignored). ``val``/``test`` = val.txt.

Paths stay inside ``ROOT`` (``io.walk_tree`` / ``io.confined``): an image, annotation or listed id that leads
outside it is never read; it is skipped and listed in ``skipped``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.errors import UserError
from spatialboost.eval.datasets.base import (
    ProbeDataset,
    ProbeSample,
    check_split,
    read_label_png,
    read_rgb,
    refusal_texts,
    require_dir,
)
from spatialboost.io import UnsafePathError, confined, walk_tree

ADE_NUM_CLASSES = 150
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


class _PairedSegDataset(ProbeDataset):
    tasks = ("seg",)

    def __init__(self, root: Path, split: str, pairs: list[tuple[Path, Path]], skipped: list[str]) -> None:
        self.root = root
        self.split = split
        self.pairs = pairs
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> ProbeSample:
        img_path, ann_path = self.pairs[index]
        image = read_rgb(img_path)
        seg = self._convert(read_label_png(ann_path))
        if seg.shape != image.shape[:2]:
            raise UserError(f"{ann_path}: label map {seg.shape} does not match image {image.shape[:2]}")
        return ProbeSample(image=image, seg=seg)

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        return raw.astype(np.uint8)

    @property
    def identity(self) -> str:
        return f"{self.name}/{self.root.resolve()}/{self.split}/{len(self)}"


class ADE20KDataset(_PairedSegDataset):
    name = "ade20k"
    seg_classes = [f"ade_{i}" for i in range(1, ADE_NUM_CLASSES + 1)]

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        sub = "training" if check_split(split) == "train" else "validation"
        img_dir = require_dir(confined(root, f"images/{sub}"), "ADE20K images folder")
        tree = walk_tree(root, f"images/{sub}", recursive=False)
        pairs, skipped = [], refusal_texts(tree.refused)
        for img in (e for e in tree.files if e.rel.endswith(".jpg")):
            rel = f"annotations/{sub}/{Path(img.rel).stem}.png"
            try:
                ann = confined(root, rel)
            except UnsafePathError as e:
                skipped.append(f"{rel}: {e.reason}")
                continue
            if not ann.is_file():
                raise UserError(f"{img.path}: no annotation {ann}")
            pairs.append((img.path, ann))
        if not pairs:
            raise UserError(f"{img_dir}: no usable .jpg images" + _first(skipped))
        super().__init__(root, split, pairs, skipped)

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        seg = raw.astype(np.int64) - 1  # reduce zero label
        seg[(seg < 0) | (seg >= ADE_NUM_CLASSES)] = SEG_IGNORE_INDEX
        return seg.astype(np.uint8)


class VOCSegDataset(_PairedSegDataset):
    name = "voc"
    seg_classes = VOC_CLASSES

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = _voc_root(Path(root))
        listing = "train" if check_split(split) == "train" else "val"
        list_path = confined(root, f"ImageSets/Segmentation/{listing}.txt")
        if not list_path.is_file():
            raise UserError(f"{list_path}: VOC split list not found")
        ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        pairs, skipped = [], []
        for i in ids:
            try:
                img, ann = confined(root, f"JPEGImages/{i}.jpg"), confined(root, f"SegmentationClass/{i}.png")
            except UnsafePathError as e:  # an id like ../../x, or a linked file leading outside ROOT
                skipped.append(f"{list_path.name}: id {i!r}: {e.reason}")
                continue
            if not img.is_file() or not ann.is_file():
                raise UserError(f"{list_path}: listed id {i!r} lacks {img if not img.is_file() else ann}")
            pairs.append((img, ann))
        if not pairs:
            raise UserError(f"{list_path}: no usable id" + _first(skipped))
        super().__init__(root, split, pairs, skipped)

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        seg = raw.astype(np.int64)
        seg[(seg >= len(VOC_CLASSES)) & (seg != SEG_IGNORE_INDEX)] = SEG_IGNORE_INDEX
        return seg.astype(np.uint8)


def _first(skipped: list[str]) -> str:
    return f" ({len(skipped)} skipped, first: {skipped[0]})" if skipped else ""


def _voc_root(root: Path) -> Path:
    for sub in (".", "VOC2012", "VOCdevkit/VOC2012"):
        try:
            cand = confined(root, sub)
        except UnsafePathError:
            continue  # a linked VOC2012/ leading outside root is not read
        if (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise UserError(f"{root}: not a VOC 2012 folder (no ImageSets/Segmentation under it)")

"""Semantic-segmentation readers: ADE20K (SceneParsing ``ADEChallengeData2016``) and Pascal VOC 2012.

ADE20K: ``ROOT/images/{training,validation}/*.jpg`` and ``ROOT/annotations/{training,validation}/*.png``
(greyscale, 0 = "other", 1..150 = classes). Labels are shifted down by one ("reduce zero label"): 0 becomes
``SEG_IGNORE_INDEX`` and class k becomes k - 1 (150 classes). ``train`` = training; ``val``/``test`` = validation.

VOC 2012: ``ROOT`` is ``VOC2012/`` (or a folder holding ``VOCdevkit/VOC2012`` or ``VOC2012``):
``ImageSets/Segmentation/{train,val}.txt``, ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``
(palette PNG whose indices are the 21 class ids; 255 = boundary, ignored). ``val``/``test`` = val.txt.
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
    inside,
    read_label_png,
    read_rgb,
    require_dir,
)

ADE_NUM_CLASSES = 150
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


class _PairedSegDataset(ProbeDataset):
    tasks = ("seg",)

    def __init__(self, root: Path, split: str, pairs: list[tuple[Path, Path]]) -> None:
        self.root = root
        self.split = split
        self.pairs = pairs

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
        img_dir = require_dir(inside(root, Path("images") / sub), "ADE20K images folder")
        pairs = []
        for img in sorted(img_dir.glob("*.jpg")):
            ann = inside(root, Path("annotations") / sub / f"{img.stem}.png")
            if not ann.is_file():
                raise UserError(f"{img}: no annotation {ann}")
            pairs.append((img, ann))
        if not pairs:
            raise UserError(f"{img_dir}: no .jpg images")
        super().__init__(root, split, pairs)

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
        list_path = inside(root, Path("ImageSets/Segmentation") / f"{listing}.txt")
        if not list_path.is_file():
            raise UserError(f"{list_path}: VOC split list not found")
        ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        pairs = [
            (
                inside(root, Path("JPEGImages") / f"{i}.jpg"),
                inside(root, Path("SegmentationClass") / f"{i}.png"),
            )
            for i in ids
        ]
        for img, ann in pairs:
            if not img.is_file() or not ann.is_file():
                raise UserError(
                    f"{list_path}: listed id {img.stem!r} lacks {img if not img.is_file() else ann}"
                )
        super().__init__(root, split, pairs)

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        seg = raw.astype(np.int64)
        seg[(seg >= len(VOC_CLASSES)) & (seg != SEG_IGNORE_INDEX)] = SEG_IGNORE_INDEX
        return seg.astype(np.uint8)


def _voc_root(root: Path) -> Path:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise UserError(f"{root}: not a VOC 2012 folder (no ImageSets/Segmentation under it)")

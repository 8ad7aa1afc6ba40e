"""ImageFolder classification: ``ROOT/<split>/<class name>/<image>``; classes are the sorted train folders.

``train`` reads ``ROOT/train``; ``val`` and ``test`` read ``ROOT/val`` (or ``ROOT/test`` when there is no val).
"""

from __future__ import annotations

from pathlib import Path

from spatialboost.errors import UserError
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample, check_split, inside, read_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


class ImageFolderDataset(ProbeDataset):
    name = "imagefolder"
    tasks = ("cls",)

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        self.split = check_split(split)
        train_dir = inside(self.root, "train")
        if not train_dir.is_dir():
            raise UserError(
                f"{self.root}: ImageFolder layout needs train/<class>/<image> (and val/ or test/)"
            )
        self.cls_classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
        folder = train_dir if split == "train" else _eval_dir(self.root)
        self.items = []
        for k, name in enumerate(self.cls_classes):
            cdir = inside(self.root, folder.relative_to(self.root.resolve()) / name)
            if not cdir.is_dir():
                continue
            files = sorted(p for p in cdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self.items += [(inside(self.root, p.relative_to(self.root.resolve())), k) for p in files]
        if not self.items:
            raise UserError(f"{folder}: no images found in class folders")

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int) -> ProbeSample:
        path, label = self.items[index]
        return ProbeSample(image=read_rgb(path), label=label)

    @property
    def identity(self) -> str:
        return f"imagefolder/{self.root.resolve()}/{self.split}/{len(self)}"


def _eval_dir(root: Path) -> Path:
    for name in ("val", "test"):
        d = inside(root, name)
        if d.is_dir():
            return d
    raise UserError(f"{root}: ImageFolder layout needs val/ or test/ beside train/")

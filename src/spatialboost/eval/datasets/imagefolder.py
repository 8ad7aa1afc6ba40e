"""ImageFolder classification: ``ROOT/<split>/<class name>/<image>``; classes are the sorted train folders.

``train`` reads ``ROOT/train``; ``val`` and ``test`` read ``ROOT/val`` (or ``ROOT/test`` when there is no val).
Hidden names are ignored; symlinked class folders are not followed and a file symlink leading outside ``ROOT``
is not read: both are listed in ``skipped``.
"""

from __future__ import annotations

from pathlib import Path

from spatialboost.errors import UserError
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample, check_split, read_rgb, refusal_texts
from spatialboost.io import confined, walk_tree

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


class ImageFolderDataset(ProbeDataset):
    name = "imagefolder"
    tasks = ("cls",)

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root)
        self.split = check_split(split)
        if not confined(self.root, "train").is_dir():
            raise UserError(
                f"{self.root}: ImageFolder layout needs train/<class>/<image> (and val/ or test/)"
            )
        train = walk_tree(self.root, "train", recursive=False)
        self.cls_classes = [Path(d.rel).name for d in train.dirs]
        folder = "train" if split == "train" else _eval_dir(self.root)
        listing = train if folder == "train" else walk_tree(self.root, folder, recursive=False)
        self.skipped = refusal_texts([r for r in listing.refused if r.rel.endswith("/")])
        present = {Path(d.rel).name for d in listing.dirs}
        self.items = []
        for k, name in enumerate(self.cls_classes):
            if name not in present:
                continue
            tree = walk_tree(self.root, f"{folder}/{name}", recursive=False)
            self.skipped += refusal_texts(tree.refused)
            self.items += [(e.path, k) for e in tree.files if Path(e.rel).suffix.lower() in IMAGE_SUFFIXES]
        if not self.items:
            raise UserError(f"{self.root / folder}: no images found in class folders")

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int) -> ProbeSample:
        path, label = self.items[index]
        return ProbeSample(image=read_rgb(path), label=label)

    @property
    def identity(self) -> str:
        return f"imagefolder/{self.root.resolve()}/{self.split}/{len(self)}"


def _eval_dir(root: Path) -> str:
    for name in ("val", "test"):
        if confined(root, name).is_dir():
            return name
    raise UserError(f"{root}: ImageFolder layout needs val/ or test/ beside train/")

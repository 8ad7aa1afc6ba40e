"""NYU Depth v2 readers: the labelled ``.mat`` and the common RGB + depth-PNG folder layout.

``nyu_depth_v2_labeled.mat`` holds ``images``, ``depths`` (metres) and ``labels`` (894 raw classes, 0 =
unlabelled). MATLAB v5 files are read with ``scipy.io.loadmat`` (arrays (H, W, 3, N) / (H, W, N)); the
official file is v7.3 (HDF5) and needs ``pip install h5py`` (arrays transposed: (N, 3, W, H) / (N, W, H)).
The standard 795/654 split comes from ``splits.mat`` (``trainNdxs``/``testNdxs``, 1-based) next to the
``.mat`` when present; otherwise the first 795 images are train and the rest test. ``val`` = ``test``.
Segmentation uses the raw labels as they are (0 -> ignore); the 40-class mapping is not applied.

Folder layout (BTS / "sync" style): ``ROOT/{train,test}/**/rgb_XXXX.{jpg,png}`` beside
``depth_XXXX.png`` or ``sync_depth_XXXX.png``: uint16 depth in millimetres (``depth_scale`` = 1000), 0 = invalid.
Files are listed with ``io.walk_tree`` (directory symlinks not followed) and paired with ``io.confined``: a
file or link leading outside ``ROOT`` is never read and is listed in ``skipped``.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.errors import UserError
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample, check_split, read_rgb, refusal_texts
from spatialboost.io import UnsafePathError, confined, walk_tree

NUM_TRAIN_DEFAULT = 795


class NYUMatDataset(ProbeDataset):
    name = "nyu"
    tasks = ("depth", "seg")

    def __init__(self, path: str | Path, split: str = "train") -> None:
        self.path = Path(path)
        self.split = check_split(split)
        self.images, self.depths, self.labels = _load_mat(self.path)  # (N,H,W,3), (N,H,W), (N,H,W)|None
        if self.labels is None:
            self.tasks = ("depth",)
        n = len(self.images)
        self.skipped = []
        try:
            splits_path = confined(self.path.parent, "splits.mat")
        except UnsafePathError as e:  # the default split is used; the report lists why
            self.skipped.append(f"splits.mat: {e.reason}")
            splits_path = None
        self.indices = _split_indices(splits_path, n, "train" if split == "train" else "test")
        top = int(self.labels.max()) if self.labels is not None else 0
        self.seg_classes = [f"nyu_{i}" for i in range(min(top + 1, SEG_IGNORE_INDEX))]

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, index: int) -> ProbeSample:
        i = self.indices[index]
        seg = None
        if self.labels is not None:
            seg = self.labels[i].astype(np.int64)
            seg[(seg == 0) | (seg >= SEG_IGNORE_INDEX)] = SEG_IGNORE_INDEX
            seg = seg.astype(np.uint8)
        return ProbeSample(image=self.images[i], depth=self.depths[i].astype(np.float32), seg=seg)

    @property
    def identity(self) -> str:
        return f"nyu-mat/{self.path.resolve()}/{self.path.stat().st_size}/{self.split}/{len(self)}"


def _load_mat(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise UserError(f"{path}: NYUv2 .mat file not found")
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["images", "depths", "labels"])
        images = np.moveaxis(mat["images"], -1, 0)  # (H,W,3,N) -> (N,H,W,3)
        depths = np.moveaxis(mat["depths"], -1, 0)
        labels = np.moveaxis(mat["labels"], -1, 0) if "labels" in mat else None
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        images, depths, labels = _load_mat_h5(path)
    except KeyError as e:
        raise UserError(f"{path}: NYUv2 .mat lacks variable {e}") from None
    except (ValueError, OSError, TypeError) as e:
        raise UserError(f"{path}: cannot read NYUv2 .mat ({e})") from None
    if images.ndim != 4 or images.shape[-1] != 3 or depths.shape != images.shape[:3]:
        raise UserError(f"{path}: unexpected NYUv2 array shapes images {images.shape}, depths {depths.shape}")
    return images.astype(np.uint8), depths.astype(np.float32), labels


def _load_mat_h5(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        # lazy: optional dependency, only for v7.3 (HDF5) .mat files
        import h5py
    except ImportError:
        raise UserError(f"{path} is a MATLAB v7.3 (HDF5) file: `pip install h5py` to read it") from None
    with h5py.File(path, "r") as f:
        images = np.asarray(f["images"]).transpose(0, 3, 2, 1)  # (N,3,W,H) -> (N,H,W,3)
        depths = np.asarray(f["depths"]).transpose(0, 2, 1)
        labels = np.asarray(f["labels"]).transpose(0, 2, 1) if "labels" in f else None
    return images, depths, labels


def _split_indices(splits_path: Path | None, n: int, which: str) -> list[int]:
    if splits_path is not None and splits_path.is_file():
        try:
            key = "trainNdxs" if which == "train" else "testNdxs"
            idx = scipy.io.loadmat(str(splits_path))[key].reshape(-1).astype(int) - 1
        except (KeyError, ValueError, OSError, NotImplementedError) as e:
            raise UserError(f"{splits_path}: cannot read NYUv2 splits ({e})") from None
        return [int(i) for i in idx if 0 <= i < n]
    cut = min(NUM_TRAIN_DEFAULT, n // 2 if n < 2 * NUM_TRAIN_DEFAULT else NUM_TRAIN_DEFAULT)
    return list(range(cut)) if which == "train" else list(range(cut, n))


class NYUFolderDataset(ProbeDataset):
    name = "nyu"
    tasks = ("depth",)

    def __init__(self, root: str | Path, split: str = "train", depth_scale: float = 1000.0) -> None:
        self.root = Path(root)
        self.split = check_split(split)
        self.depth_scale = depth_scale
        sub = "train" if split == "train" else "test"
        folder = confined(self.root, sub)
        if not folder.is_dir():
            raise UserError(f"{folder}: NYUv2 folder layout needs {sub}/ with rgb_*.jpg + depth_*.png")
        self.skipped = []
        self.pairs = _find_pairs(self.root, sub, self.skipped)
        if not self.pairs:
            raise UserError(f"{folder}: no rgb_*.jpg/png with a matching depth_*.png found")

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> ProbeSample:
        rgb_path, depth_path = self.pairs[index]
        image = read_rgb(rgb_path)
        try:
            with Image.open(depth_path) as im:
                raw = np.asarray(im)
        except (OSError, ValueError) as e:
            raise UserError(f"{depth_path}: cannot read depth PNG ({e})") from None
        if raw.ndim != 2 or raw.shape != image.shape[:2]:
            raise UserError(f"{depth_path}: depth {raw.shape} does not match image {image.shape[:2]}")
        return ProbeSample(image=image, depth=raw.astype(np.float32) / self.depth_scale)

    @property
    def identity(self) -> str:
        return f"nyu-folder/{self.root.resolve()}/{self.split}/{len(self)}/{self.depth_scale}"


def _find_pairs(root: Path, sub: str, skipped: list[str]) -> list[tuple[Path, Path]]:
    """(rgb, depth) paths under ``root / sub``, confined to ``root``; refused items go to ``skipped``."""
    tree = walk_tree(root, sub)
    skipped += refusal_texts(tree.refused)
    pairs = []
    for rgb in sorted(tree.files, key=lambda e: Path(e.rel)):
        rel = Path(rgb.rel)
        if not (rel.name.startswith("rgb_") and rel.suffix in (".jpg", ".png")):
            continue
        stem = rel.stem[len("rgb_") :]
        for name in (f"sync_depth_{stem}.png", f"depth_{stem}.png"):
            try:
                cand = confined(root, rel.parent / name)
            except UnsafePathError as e:
                skipped.append(f"{(rel.parent / name).as_posix()}: {e.reason}")
                continue
            if cand.is_file():
                pairs.append((rgb.path, cand))
                break
    return pairs


def nyu_dataset(path: str | Path, split: str = "train") -> ProbeDataset:
    """The ``.mat`` reader for a file, the folder reader for a directory."""
    p = Path(path)
    if p.is_dir():
        files = walk_tree(p, recursive=False).files
        mats = [e.path for e in files if fnmatch(Path(e.rel).name, "nyu_depth_v2_labeled*.mat")]
        if mats and not (p / "train").is_dir():
            return NYUMatDataset(mats[0], split)
        return NYUFolderDataset(p, split)
    return NYUMatDataset(p, split)

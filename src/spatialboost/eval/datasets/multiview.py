"""Posed multi-view scenes for the 3D probes: views with depth, intrinsics, poses and class maps.

A ``MultiViewDataset`` is a ``ProbeDataset`` with one sample per view (image, depth, seg), so
``eval.features`` extracts and caches its features like any other split, plus per view its scene and camera
(``ViewCamera``: K at the source resolution, ``cam_to_world``, source height and width).

- ``synthetic``: scenes of the synthetic engine (``SyntheticConfig(views=V)``) at the held-out seeds of
  ``datasets.synthetic.split_seeds``, rendered at the probe resolution; exact depth, poses and classes.
  Scenes are pure functions of their seed, re-rendered on demand (a few ms each); features are cached.
- ``rgbd:PATH``: ``datagen.real.rgbd``'s ScanNet-style sequence folders (``color/``, ``depth/`` mm PNG,
  ``intrinsic.txt`` or ``intrinsic/``, ``pose/`` cam_to_world, ``instance/`` + ``labels.json``); one sequence
  is one scene. Sequences sorted by name; the last third (at least one) is ``test``, the rest ``train``.
  Classes are ``["void", *sorted label names of every sequence]``; pixels of instance 0 or of an unlabelled
  instance are not scored. A frame without depth, K or pose and a sequence with fewer than two such frames
  are skipped and listed in ``skipped``; so is a sequence whose matrices do not parse (ScanNet marks
  untracked frames with ``-inf`` poses: drop those frames first). Paths stay inside the root given
  (``io.confined``): a linked sequence or a piece leading outside it is never read, and is listed in ``skipped``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.datagen.real.rgbd import find_sequences, read_depth_png, read_instance_png, read_sequence
from spatialboost.datagen.scenes.synthetic import (
    SEMANTIC_CLASSES,
    SyntheticConfig,
    generate_scene,
    sample_layout,
)
from spatialboost.errors import UserError
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample, check_split, parse_data_spec, read_rgb
from spatialboost.eval.datasets.synthetic import split_seeds
from spatialboost.io import Refusal, UnsafePathError, confined

log = logging.getLogger(__name__)


@dataclass
class ViewCamera:
    K: np.ndarray  # (3, 3) at the source resolution
    cam_to_world: np.ndarray  # (4, 4)
    height: int  # source image size, pixels
    width: int


class MultiViewDataset(ProbeDataset):
    """Views of several scenes, flattened; ``scene_of[i]`` is view i's scene index."""

    tasks = ("depth", "seg")
    scene_names: list[str]
    scene_of: list[int]

    def camera(self, index: int) -> ViewCamera:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.scene_of)

    def scenes(self) -> list[list[int]]:
        """The view indices of each scene, in scene order."""
        out: list[list[int]] = [[] for _ in self.scene_names]
        for i, k in enumerate(self.scene_of):
            out[k].append(i)
        return out


class SyntheticMultiView(MultiViewDataset):
    name = "synthetic-mv"

    def __init__(
        self, split: str = "test", num_scenes: int = 16, views: int = 4, image_size: int = 64
    ) -> None:
        if views < 2:
            raise ValueError(f"multi-view scenes need >= 2 views, got {views}")
        self.split = check_split(split)
        self.seeds = split_seeds(split, num_scenes)
        self.views = views
        self.cfg = SyntheticConfig(image_size=image_size, views=views)
        self.seg_classes = list(SEMANTIC_CLASSES)
        self.scene_names = [f"synthetic-{s}" for s in self.seeds]
        self.scene_of = [k for k in range(num_scenes) for _ in range(views)]
        self._scene = lru_cache(maxsize=4)(self._render)
        self._layout = lru_cache(maxsize=None)(self._sample_layout)

    def _render(self, k: int):
        return generate_scene(self.seeds[k], self.cfg)

    def _sample_layout(self, k: int):
        return sample_layout(self.seeds[k], self.cfg)

    def _load(self, index: int) -> ProbeSample:
        view = self._scene(self.scene_of[index]).views[index % self.views]
        seg = view.semantic.astype(np.uint8).copy()
        seg[seg == 0] = SEG_IGNORE_INDEX
        return ProbeSample(image=view.rgb, depth=view.depth, seg=seg)

    def camera(self, index: int) -> ViewCamera:
        layout = self._layout(self.scene_of[index])
        size = self.cfg.image_size
        return ViewCamera(layout.K.copy(), layout.poses[index % self.views].copy(), size, size)

    @property
    def identity(self) -> str:
        return f"synthetic-mv/{self.split}/{self.seeds[0]}+{len(self.seeds)}/v{self.views}/{self.cfg.image_size}px"


# --- RGB-D folders ---------------------------------------------------------------------------------------


def split_sequences(seqs: list[Path], split: str) -> list[Path]:
    """The last third of the (sorted) sequences, at least one, is ``test``/``val``; the rest is ``train``."""
    n_test = max(1, round(len(seqs) / 3))
    return seqs[: len(seqs) - n_test] if split == "train" else seqs[len(seqs) - n_test :]


class RGBDMultiView(MultiViewDataset):
    name = "rgbd"

    def __init__(self, root: str | Path, split: str = "test", views: int = 0) -> None:
        self.root = Path(root)
        self.split = check_split(split)
        self.views = views
        self.skipped: list[str] = []
        refused: list[Refusal] = []
        seqs = find_sequences(self.root, refused)
        self.skipped += [f"{r.rel}: {r.reason}" for r in refused]
        self.seg_classes = ["void", *sorted({n for s in seqs for n in _labels(s).values()})]
        if len(self.seg_classes) > SEG_IGNORE_INDEX:
            raise UserError(
                f"{self.root}: {len(self.seg_classes) - 1} label names; at most {SEG_IGNORE_INDEX - 1}"
            )
        self.frames, self.scene_names, self.scene_of = [], [], []
        for seq in split_sequences(seqs, split):
            frames = self._usable(seq)
            if len(frames) < 2:
                self.skipped.append(f"{seq}: fewer than 2 frames with depth, K and pose")
                continue
            if views and len(frames) > views:
                frames = [frames[i] for i in np.linspace(0, len(frames) - 1, views).round().astype(int)]
            self.scene_of += [len(self.scene_names)] * len(frames)
            self.scene_names.append(seq.name)
            self.frames += frames
        for item in self.skipped:
            log.warning("rgbd: skipped %s", item)
        if not self.frames:
            raise UserError(
                f"{self.root}: no usable sequence in the {split} split ({len(seqs)} sequence(s); the last third "
                "is test, the rest train; each needs >= 2 frames with depth/, intrinsic and pose/)"
            )

    def _usable(self, seq: Path) -> list:
        refused: list[Refusal] = []
        try:
            frames = read_sequence(seq, key_prefix=f"{seq.name}/", refused=refused)
        except (UserError, ValueError, OSError) as e:
            self.skipped.append(f"{seq}: {e}")
            return []
        finally:
            self.skipped += [f"{r.rel}: {r.reason}" for r in refused]
        usable = []
        for f in frames:
            missing = [n for n, v in (("depth", f.depth), ("K", f.K), ("pose", f.pose)) if v is None]
            if missing:
                self.skipped.append(f"{f.color}: no {', '.join(missing)}")
            else:
                usable.append(f)
        return usable

    def _load(self, index: int) -> ProbeSample:
        f = self.frames[index]
        image = read_rgb(f.color)
        depth = read_depth_png(f.depth)
        if depth.shape != image.shape[:2]:
            raise UserError(
                f"{f.depth}: depth {depth.shape} does not match the colour image {image.shape[:2]}"
            )
        seg = np.full(depth.shape, SEG_IGNORE_INDEX, np.uint8)
        if f.instance is not None:
            inst = read_instance_png(f.instance)
            if inst.shape != depth.shape:
                raise UserError(f"{f.instance}: instance map {inst.shape} does not match {depth.shape}")
            for obj_id, label in f.labels.items():
                seg[inst == obj_id] = self.seg_classes.index(label)
        return ProbeSample(image=image, depth=depth, seg=seg)

    def camera(self, index: int) -> ViewCamera:
        f = self.frames[index]
        with Image.open(f.color) as im:
            w, h = im.size
        return ViewCamera(np.asarray(f.K, np.float64), np.asarray(f.pose, np.float64), h, w)

    @property
    def identity(self) -> str:
        return f"rgbd/{self.root.resolve()}/{self.split}/{len(self.scene_names)}x{len(self)}/v{self.views}"


def _labels(seq: Path) -> dict[int, str]:
    try:
        path = confined(seq, "labels.json")
    except UnsafePathError:  # read_sequence records it in skipped
        return {}
    if not path.is_file():
        return {}
    try:
        return {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError) as e:
        raise UserError(f'{path}: expected {{"<instance id>": "<class name>"}} ({e})') from None


def build_multiview(spec: str, split: str, num_scenes: int, views: int, image_size: int) -> MultiViewDataset:
    """``synthetic`` or ``rgbd:PATH`` as a multi-view split; other specs raise a UserError."""
    name, path = parse_data_spec(spec)
    if name == "synthetic" and path is None:
        return SyntheticMultiView(split, num_scenes=num_scenes, views=views, image_size=image_size)
    if name == "rgbd":
        if not path or not Path(path).expanduser().exists():
            raise UserError(f"rgbd dataset root not found: {path!r} (use --data rgbd:PATH)")
        return RGBDMultiView(Path(path).expanduser(), split, views=views)
    raise UserError(f"the 3D probes need posed multi-view data: --data synthetic or rgbd:PATH (got {spec!r})")

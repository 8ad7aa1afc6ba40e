"""The built-in synthetic probe benchmark: held-out scenes of the synthetic engine, exact ground truth.

Targets come from view 0 of each scene:

- ``depth``: the rendered z-depth in metres (0 = invalid).
- ``seg``: the semantic map; class 0 ("void") is mapped to ``SEG_IGNORE_INDEX`` (not scored), so the classes
  scored are ``scene.semantic_classes`` as they are (ids unchanged; id 0 simply never appears).
- ``label`` (classification): the **semantic class of the object with the most visible pixels** in the
  view (mode of ``semantic`` over pixels with ``instance > 0``); a view without any visible object falls
  back to the most frequent non-void class of the whole image. Labels index ``scene.semantic_classes``.

Splits come from disjoint seed ranges far above the default training seeds (``SEED_OFFSET`` + 0, +100_000,
+200_000 for train/val/test), so no probe image was ever seen in boosting.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.datagen.scenes.scene import Scene
from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample, check_split

SEED_OFFSET = 10_000_000
SPLIT_STRIDE = 100_000
SceneFn = Callable[[int], Scene]


def split_seeds(split: str, n: int) -> list[int]:
    """The scene seeds of a split: ``SEED_OFFSET + k * SPLIT_STRIDE + i`` for the split's k."""
    k = {"train": 0, "val": 1, "test": 2}[check_split(split)]
    if n > SPLIT_STRIDE:
        raise ValueError(f"at most {SPLIT_STRIDE} scenes per split, asked for {n}")
    return [SEED_OFFSET + k * SPLIT_STRIDE + i for i in range(n)]


class SyntheticSceneFn:
    """``seed -> Scene`` with the synthetic engine's default config at ``image_size`` pixels."""

    def __init__(self, image_size: int = 224, views: int = 1) -> None:
        self.image_size = image_size
        self.views = views
        self.__qualname__ = f"generate_scene@{image_size}px"

    def __call__(self, seed: int) -> Scene:
        return generate_scene(seed, SyntheticConfig(image_size=self.image_size, views=self.views))


def sample_from_scene(scene: Scene, view: int = 0) -> ProbeSample:
    """The probe sample of one view: image, depth, seg (void -> ignore), dominant-object class label."""
    v = scene.views[view]
    seg = None
    if v.semantic is not None:
        seg = v.semantic.astype(np.uint8).copy()
        seg[seg == 0] = SEG_IGNORE_INDEX
    return ProbeSample(image=v.rgb, depth=v.depth, seg=seg, label=dominant_class(v.semantic, v.instance))


def dominant_class(semantic: np.ndarray | None, instance: np.ndarray | None) -> int | None:
    """Semantic class of the object with the most visible pixels (fallback: most frequent non-void class)."""
    if semantic is None:
        return None
    if instance is not None and (instance > 0).any():
        ids, counts = np.unique(instance[instance > 0], return_counts=True)
        top = ids[np.argmax(counts)]  # ties -> lowest object id
        values, counts = np.unique(semantic[instance == top], return_counts=True)
        return int(values[np.argmax(counts)])
    values, counts = np.unique(semantic[semantic > 0], return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else 0


class SyntheticProbeDataset(ProbeDataset):
    name = "synthetic"
    tasks = ("depth", "seg", "cls")

    def __init__(
        self,
        split: str = "train",
        num_scenes: int = 64,
        scene_fn: SceneFn | None = None,
        image_size: int = 224,
    ) -> None:
        self.split = check_split(split)
        self.seeds = split_seeds(split, num_scenes)
        self._scene_fn = scene_fn or SyntheticSceneFn(image_size)
        self._sample = lru_cache(maxsize=None)(self._render)
        first = self._scene_fn(self.seeds[0]) if self.seeds else None
        self.seg_classes = list(first.semantic_classes) if first is not None else ["void"]
        self.cls_classes = self.seg_classes

    def __len__(self) -> int:
        return len(self.seeds)

    def _render(self, index: int) -> ProbeSample:
        scene = self._scene_fn(self.seeds[index])
        if list(scene.semantic_classes) != self.seg_classes:
            raise ValueError(
                f"scene seed {self.seeds[index]}: semantic_classes differ from the split's first scene"
            )
        return sample_from_scene(scene)

    def _load(self, index: int) -> ProbeSample:
        return self._sample(index)

    @property
    def identity(self) -> str:
        fn = getattr(self._scene_fn, "__qualname__", type(self._scene_fn).__name__)
        return f"synthetic/{self.split}/{self.seeds[0] if self.seeds else 0}+{len(self)}/{fn}"

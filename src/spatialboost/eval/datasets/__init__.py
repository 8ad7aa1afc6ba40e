"""Probe datasets chosen by name: ``build_dataset("nyu:/data/nyu", "train")``.

``synthetic`` is built in (held-out synthetic scenes); ``nyu``, ``ade20k``, ``voc``, ``imagefolder`` and ``rgbd``
(ScanNet-style RGB-D sequences, every frame: depth + class maps; see ``multiview``) read the usual on-disk
layouts (see each module). A spec is ``NAME`` or ``NAME:PATH``. The 3D probes read ``multiview.build_multiview``.
No reader reads outside the root it is given (``io.confined``); what it refuses is in ``dataset.skipped``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from spatialboost.errors import UserError
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample, parse_data_spec
from spatialboost.eval.datasets.imagefolder import ImageFolderDataset
from spatialboost.eval.datasets.multiview import RGBDMultiView
from spatialboost.eval.datasets.nyu import NYUFolderDataset, NYUMatDataset, nyu_dataset
from spatialboost.eval.datasets.segmentation import ADE20KDataset, VOCSegDataset
from spatialboost.eval.datasets.synthetic import SyntheticProbeDataset
from spatialboost.registry import Registry, UnknownNameError

# name -> factory(path | None, split, **options) -> ProbeDataset
log = logging.getLogger(__name__)

DATASETS: Registry[Callable[..., ProbeDataset]] = Registry("probe dataset")


def _needs_path(name: str, path: str | None) -> Path:
    if not path:
        raise UserError(f"dataset {name!r} needs a path: --data {name}:PATH")
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: {name} dataset root not found")
    return p


@DATASETS.register("synthetic")
def _synthetic(
    path: str | None, split: str, num_scenes: int = 64, scene_fn=None, image_size: int = 224, **_: object
) -> ProbeDataset:
    if path:
        raise UserError("the synthetic benchmark is built in: use --data synthetic (no path)")
    return SyntheticProbeDataset(split, num_scenes=num_scenes, scene_fn=scene_fn, image_size=image_size)


@DATASETS.register("nyu")
def _nyu(path: str | None, split: str, **_: object) -> ProbeDataset:
    return nyu_dataset(_needs_path("nyu", path), split)


@DATASETS.register("ade20k")
def _ade(path: str | None, split: str, **_: object) -> ProbeDataset:
    return ADE20KDataset(_needs_path("ade20k", path), split)


@DATASETS.register("voc")
def _voc(path: str | None, split: str, **_: object) -> ProbeDataset:
    return VOCSegDataset(_needs_path("voc", path), split)


@DATASETS.register("rgbd")
def _rgbd(path: str | None, split: str, **_: object) -> ProbeDataset:
    return RGBDMultiView(_needs_path("rgbd", path), split)


@DATASETS.register("imagefolder")
def _imagefolder(path: str | None, split: str, **_: object) -> ProbeDataset:
    return ImageFolderDataset(_needs_path("imagefolder", path), split)


def build_dataset(spec: str, split: str, **options: object) -> ProbeDataset:
    """A dataset from ``NAME`` or ``NAME:PATH`` for one split."""
    name, path = parse_data_spec(spec)
    try:
        factory = DATASETS.get(name)
    except UnknownNameError as e:
        raise UserError(str(e)) from None
    dataset = factory(path, split, **options)
    if dataset.skipped:
        log.warning(
            "%s (%s): skipped %d item(s), e.g. %s", spec, split, len(dataset.skipped), dataset.skipped[0]
        )
    return dataset


__all__ = [
    "DATASETS",
    "ADE20KDataset",
    "ImageFolderDataset",
    "NYUFolderDataset",
    "NYUMatDataset",
    "ProbeDataset",
    "ProbeSample",
    "SyntheticProbeDataset",
    "VOCSegDataset",
    "build_dataset",
    "parse_data_spec",
]

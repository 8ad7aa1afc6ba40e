"""Frozen features, extracted once per (encoder, weights, dataset split, layers, image transform) and cached.

A cache entry is a folder of ``.npy`` files opened memory-mapped (``mmap_mode="r"``):

- ``cls.npy`` (n, L*D) and ``patch.npy`` (n, h*w, L*D): the CLS and patch tokens of the chosen layers,
  concatenated layer-major along the channel axis (``last`` -> L = 1; ``last4`` -> the last four blocks,
  the DINOv2 "+ms"/4-layer linear protocol);
- the targets at the probe resolution: ``depth.npy`` (n, S, S) float32 metres, ``seg.npy`` (n, S, S)
  uint8, ``label.npy`` (n,) int64 -- whichever tasks the dataset has;
- ``meta.json`` with the key's ingredients, written last.

Entries are written into a temporary folder and renamed into place, so a half-written cache is never read.
Images go through the encoder's own preprocessing (``models.preprocess.transform_for(spec, S)``: shorter
side to S with the spec's interpolation, centre crop S x S, normalised), the pixels it was trained on; depth
and labels go through the same geometry by nearest neighbour, so targets stay aligned with what the encoder
sees. The key holds the transform (``ImageTransform.identity``), so features made by other preprocessing are
never read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample
from spatialboost.image_transform import ImageTransform
from spatialboost.io import atomic_dir, atomic_write_json
from spatialboost.models.encoder_base import VisionEncoder, weights_sha256
from spatialboost.models.preprocess import transform_for

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: images through the encoder's transform (was PIL bilinear), the transform in the key
LAYER_CHOICES = ("last", "last4")


# a dataset's task (``ProbeDataset.tasks``) -> the target array of a FeatureSet it fills (``ProbeSpec.targets``)
TARGET_OF_TASK = {"depth": "depth", "seg": "seg", "cls": "label"}


@dataclass
class FeatureSet:
    """Cached features and targets of one dataset split (arrays are read-only memmaps)."""

    cls: np.ndarray  # (n, L*D)
    patch: np.ndarray  # (n, h*w, L*D)
    grid: tuple[int, int]  # (h, w)
    image_size: int  # S, pixels
    depth: np.ndarray | None  # (n, S, S) float32 metres, 0 = invalid
    seg: np.ndarray | None  # (n, S, S) uint8
    label: np.ndarray | None  # (n,) int64
    path: Path | None = None

    def __len__(self) -> int:
        return self.cls.shape[0]


def layer_indices(layers: str, num_layers: int) -> list[int]:
    """Block indices of a layer choice: ``last`` -> [-1]; ``last4`` -> the last four (fewer if shallower)."""
    if layers == "last":
        return [-1]
    if layers == "last4":
        return list(range(-min(4, num_layers), 0))
    raise ValueError(f"unknown layers {layers!r}; known: {', '.join(LAYER_CHOICES)}")


def encoder_identity(encoder: VisionEncoder) -> dict[str, object]:
    s = encoder.spec
    return {
        "name": s.name,
        "family": s.family,
        "embed_dim": s.embed_dim,
        "patch_size": s.patch_size,
        "num_layers": s.num_layers,
        "weights_sha256": weights_sha256(encoder),
    }


def cache_key(
    encoder_id: dict[str, object], dataset_id: str, layers: str, transform: ImageTransform, dtype: str
) -> str:
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "enc": encoder_id,
            "data": dataset_id,
            "layers": layers,
            "transform": transform.identity(),
            "dt": dtype,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# --- preprocessing --------------------------------------------------------------------------------


def resize_sample(sample: ProbeSample, transform: ImageTransform) -> ProbeSample:
    """A sample at the encoder's input: the image (S, S, 3) float32 in [0, 1] through ``transform`` (not
    normalised), depth and labels (S, S) through the same geometry by nearest neighbour."""
    return ProbeSample(
        image=transform.resize_crop(sample.image).permute(1, 2, 0).numpy(),
        depth=None if sample.depth is None else transform.target(sample.depth),
        seg=None if sample.seg is None else transform.target(sample.seg),
        label=sample.label,
    )


# --- extraction -----------------------------------------------------------------------------------


@torch.inference_mode()
def encode_batch(
    encoder: VisionEncoder, images, layers: list[int], transform: ImageTransform | None = None
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Images ((B, H, W, 3) or a list) -> cls (B, L*D), patch (B, N, L*D) float32 numpy, grid (h, w).

    ``transform``: the preprocessing (default: the encoder's at the first image's height)."""
    transform = transform or transform_for(encoder.spec, int(np.shape(images[0])[0]))
    outs = encoder.forward_intermediates(transform(list(images)), layers)
    cls = torch.cat([o.cls for o in outs], dim=-1)
    patch = torch.cat([o.patch for o in outs], dim=-1)
    return cls.float().numpy(), patch.float().numpy(), tuple(outs[-1].grid)


def extract_features(
    encoder: VisionEncoder,
    dataset: ProbeDataset,
    cache_dir: str | Path,
    layers: str = "last",
    image_size: int = 224,
    batch_size: int = 32,
    dtype: str = "float32",
    encoder_id: dict[str, object] | None = None,
) -> FeatureSet:
    """Features of every sample of ``dataset``: read from the cache, or extracted and cached first."""
    if image_size % encoder.spec.patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of patch size {encoder.spec.patch_size}")
    encoder_id = encoder_id or encoder_identity(encoder)
    transform = transform_for(encoder.spec, image_size)
    key = cache_key(encoder_id, dataset.identity, layers, transform, dtype)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{encoder.spec.name}-{dataset.name}-{dataset.split}")[-60:]
    final = Path(cache_dir) / f"{slug}-{key}"
    if (final / "meta.json").is_file():
        log.info("feature cache hit: %s", final)
        return load_feature_set(final)
    log.info("extracting %s features of %s/%s (%d images) -> %s", encoder.spec.name, dataset.name, dataset.split,
             len(dataset), final)  # fmt: skip
    with atomic_dir(final) as tmp:  # another writer that wins the race leaves its complete entry
        _write_entry(tmp, encoder, dataset, layer_indices(layers, encoder.spec.num_layers), transform, batch_size,
                     dtype)  # fmt: skip
        meta = {"key": key, "encoder": encoder_id, "dataset": dataset.identity, "layers": layers,
                "image_size": image_size, "transform": transform.identity(), "dtype": dtype,
                "n": len(dataset)}  # fmt: skip
        atomic_write_json(tmp / "meta.json", meta)
    return load_feature_set(final)


def _write_entry(
    out: Path,
    encoder: VisionEncoder,
    dataset: ProbeDataset,
    layers: list[int],
    transform: ImageTransform,
    batch_size: int,
    dtype: str,
) -> None:
    n = len(dataset)
    arrays: dict[str, np.ndarray] = {}
    grid = None
    was_training = encoder.training
    encoder.eval()
    try:
        for start in tqdm(
            range(0, n, batch_size), desc=f"features {dataset.name}/{dataset.split}", unit="batch"
        ):
            samples = [dataset[i] for i in range(start, min(n, start + batch_size))]
            cls, patch, grid = encode_batch(encoder, [s.image for s in samples], layers, transform)
            if not arrays:
                arrays = _open_arrays(
                    out, n, cls.shape[1:], patch.shape[1:], transform.side, dataset.tasks, dtype
                )
            sl = slice(start, start + len(samples))
            arrays["cls"][sl] = cls
            arrays["patch"][sl] = patch
            for s_i, s in enumerate(samples):
                _store_targets(arrays, start + s_i, s, transform)
    finally:
        encoder.train(was_training)
    for a in arrays.values():
        a.flush()
    atomic_write_json(out / "grid.json", {"grid": list(grid or (0, 0))})


def _open_arrays(
    out: Path, n: int, cls_shape, patch_shape, size: int, tasks, dtype: str
) -> dict[str, np.ndarray]:
    mm = np.lib.format.open_memmap
    arrays = {
        "cls": mm(out / "cls.npy", mode="w+", dtype=dtype, shape=(n, *cls_shape)),
        "patch": mm(out / "patch.npy", mode="w+", dtype=dtype, shape=(n, *patch_shape)),
    }
    if "depth" in tasks:
        arrays["depth"] = mm(out / "depth.npy", mode="w+", dtype=np.float32, shape=(n, size, size))
    if "seg" in tasks:
        arrays["seg"] = mm(out / "seg.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
    if "cls" in tasks:
        arrays["label"] = mm(out / "label.npy", mode="w+", dtype=np.int64, shape=(n,))
    return arrays


def _store_targets(arrays: dict[str, np.ndarray], i: int, s: ProbeSample, transform: ImageTransform) -> None:
    if "depth" in arrays:
        arrays["depth"][i] = transform.target(s.depth) if s.depth is not None else 0.0
    if "seg" in arrays:
        arrays["seg"][i] = transform.target(s.seg) if s.seg is not None else SEG_IGNORE_INDEX
    if "label" in arrays:
        arrays["label"][i] = -1 if s.label is None else s.label


def load_feature_set(path: str | Path) -> FeatureSet:
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    grid = tuple(json.loads((path / "grid.json").read_text())["grid"])

    def opt(name: str) -> np.ndarray | None:
        p = path / f"{name}.npy"
        return np.load(p, mmap_mode="r") if p.is_file() else None

    return FeatureSet(
        cls=np.load(path / "cls.npy", mmap_mode="r"),
        patch=np.load(path / "patch.npy", mmap_mode="r"),
        grid=grid,  # type: ignore[arg-type]
        image_size=int(meta["image_size"]),
        depth=opt("depth"),
        seg=opt("seg"),
        label=opt("label"),
        path=path,
    )

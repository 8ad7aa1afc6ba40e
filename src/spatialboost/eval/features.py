"""Frozen features, extracted once per (encoder, weights, dataset split, layers, resolution) and cached.

A cache entry is a folder of ``.npy`` files opened memory-mapped (``mmap_mode="r"``):

- ``cls.npy`` (n, L*D) and ``patch.npy`` (n, h*w, L*D): the CLS and patch tokens of the chosen layers,
  concatenated layer-major along the channel axis (``last`` -> L = 1; ``last4`` -> the last four blocks,
  the DINOv2 "+ms"/4-layer linear protocol);
- the targets at the probe resolution: ``depth.npy`` (n, S, S) float32 metres, ``seg.npy`` (n, S, S)
  uint8, ``label.npy`` (n,) int64 -- whichever tasks the dataset has;
- ``meta.json`` with the key's ingredients, written last.

Entries are written into a temporary folder and renamed into place, so a half-written cache is never read.
Images and dense targets are resized so the shorter side is S, then centre-cropped to S x S (image:
bilinear; depth and labels: nearest), so targets stay aligned with the image the encoder sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample
from spatialboost.io import atomic_write_json, dir_mode
from spatialboost.models.encoder_base import VisionEncoder

log = logging.getLogger(__name__)

CACHE_VERSION = 1
LAYER_CHOICES = ("last", "last4")


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


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names, dtypes, shapes, bytes), sorted by name."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def encoder_identity(encoder: VisionEncoder) -> dict[str, object]:
    s = encoder.spec
    return {
        "name": s.name,
        "family": s.family,
        "embed_dim": s.embed_dim,
        "patch_size": s.patch_size,
        "num_layers": s.num_layers,
        "weights_sha256": weights_hash(encoder),
    }


def cache_key(
    encoder_id: dict[str, object], dataset_id: str, layers: str, image_size: int, dtype: str
) -> str:
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "enc": encoder_id,
            "data": dataset_id,
            "layers": layers,
            "size": image_size,
            "dt": dtype,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# --- resizing -----------------------------------------------------------------------------------


def _resize_crop(arr: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    h, w = arr.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if arr.dtype == np.uint8:
        im = Image.fromarray(arr)
    else:
        im = Image.fromarray(arr.astype(np.float32), mode="F")
    out = np.asarray(im.resize((nw, nh), resample))
    top, left = (nh - size) // 2, (nw - size) // 2
    return out[top : top + size, left : left + size]


def resize_sample(sample: ProbeSample, size: int) -> ProbeSample:
    """Shorter side to ``size`` then centre crop; bilinear for the image, nearest for targets."""
    return ProbeSample(
        image=_resize_crop(sample.image, size, Image.Resampling.BILINEAR),
        depth=None if sample.depth is None else _resize_crop(sample.depth, size, Image.Resampling.NEAREST),
        seg=None if sample.seg is None else _resize_crop(sample.seg, size, Image.Resampling.NEAREST),
        label=sample.label,
    )


def normalize_images(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 normalised with the encoder's mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


# --- extraction -----------------------------------------------------------------------------------


@torch.inference_mode()
def encode_batch(
    encoder: VisionEncoder, images: np.ndarray, layers: list[int]
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(B, S, S, 3) uint8 -> cls (B, L*D), patch (B, N, L*D) float32 numpy, grid (h, w)."""
    pixels = normalize_images(images, encoder.spec.mean, encoder.spec.std)
    outs = encoder.forward_intermediates(pixels, layers)
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
    key = cache_key(encoder_id, dataset.identity, layers, image_size, dtype)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{encoder.spec.name}-{dataset.name}-{dataset.split}")[-60:]
    final = Path(cache_dir) / f"{slug}-{key}"
    if (final / "meta.json").is_file():
        log.info("feature cache hit: %s", final)
        return load_feature_set(final)
    log.info("extracting %s features of %s/%s (%d images) -> %s", encoder.spec.name, dataset.name, dataset.split,
             len(dataset), final)  # fmt: skip
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, dir_mode())  # mkdtemp's 0700 would survive the rename
    try:
        _write_entry(tmp, encoder, dataset, layer_indices(layers, encoder.spec.num_layers), image_size, batch_size,
                     dtype)  # fmt: skip
        meta = {"key": key, "encoder": encoder_id, "dataset": dataset.identity, "layers": layers,
                "image_size": image_size, "dtype": dtype, "n": len(dataset)}  # fmt: skip
        atomic_write_json(tmp / "meta.json", meta)
        try:
            os.rename(tmp, final)
        except OSError:  # another writer won the race; its entry is complete
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_feature_set(final)


def _write_entry(
    out: Path,
    encoder: VisionEncoder,
    dataset: ProbeDataset,
    layers: list[int],
    size: int,
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
            samples = [resize_sample(dataset[i], size) for i in range(start, min(n, start + batch_size))]
            cls, patch, grid = encode_batch(encoder, np.stack([s.image for s in samples]), layers)
            if not arrays:
                arrays = _open_arrays(out, n, cls.shape[1:], patch.shape[1:], size, dataset.tasks, dtype)
            sl = slice(start, start + len(samples))
            arrays["cls"][sl] = cls
            arrays["patch"][sl] = patch
            for s_i, s in enumerate(samples):
                _store_targets(arrays, start + s_i, s)
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


def _store_targets(arrays: dict[str, np.ndarray], i: int, s: ProbeSample) -> None:
    if "depth" in arrays:
        arrays["depth"][i] = s.depth if s.depth is not None else 0.0
    if "seg" in arrays:
        arrays["seg"][i] = s.seg if s.seg is not None else SEG_IGNORE_INDEX
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

"""Frozen-encoder features computed once: what makes a long stage 1/2 affordable on a CPU.

In stages 1 and 2 the encoder is frozen, so every step would recompute the same patch features of the same
images. With ``data.cache_features`` the trainer encodes every image of the stage's datasets once, stores
the (N, D) patch tokens in one memory-mapped ``.npy`` and the dataset then serves ``image_features``
instead of ``pixel_values`` (``SpatialVLM.embed`` takes either; the outputs are the same).

Layout: ``<cache_dir>/<key>/features.npy`` (n_images, N, D) float32 and ``index.json`` (image path ->
row), written into a temporary sibling and renamed (``io.atomic_dir``), so a half-written cache is never
read. The key hashes the encoder's weights (``weights_sha256``, the digest probes record) and spec, the image transform (``ImageTransform.identity``: side, mean/std,
interpolation, its version) and every image file's path, size and mtime: a changed encoder, preprocessing
or image makes a new entry, never a stale read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from spatialboost.dataset_format import record_images
from spatialboost.image_transform import ImageTransform
from spatialboost.io import atomic_dir, confined
from spatialboost.models.encoder_base import weights_sha256

log = logging.getLogger(__name__)


class FeatureStore:
    """Memory-mapped patch features by image path (read-only)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index: dict[str, int] = json.loads((folder / "index.json").read_text())
        self.array = np.load(folder / "features.npy", mmap_mode="r")

    def get(self, paths: list[Path]) -> torch.Tensor:
        """(n, N, D) features of ``paths`` (in that order)."""
        if not paths:
            return torch.empty(0, *self.array.shape[1:])
        rows = [self.index[str(p)] for p in paths]
        return torch.from_numpy(np.ascontiguousarray(self.array[rows]))


def dataset_images(datasets) -> list[Path]:
    """Every image path the datasets read, resolved inside their roots, in first-seen order."""
    seen: dict[str, Path] = {}
    for ds in datasets:
        for record in ds.records:
            for rel in record_images(record):
                path = confined(ds.root, rel)
                seen.setdefault(str(path), path)
    return list(seen.values())


def cache_key(encoder, transform: ImageTransform, paths: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([encoder.spec.name, encoder.spec.family, transform.identity()]).encode())
    h.update(weights_sha256(encoder).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_feature_store(
    encoder, transform: ImageTransform, paths: list[Path], cache_dir: Path, batch_size: int = 32
) -> FeatureStore:
    """Encode every image of ``paths`` once, preprocessed by ``transform`` (cached under ``cache_dir``)."""
    folder = Path(cache_dir) / cache_key(encoder, transform, paths)
    if (folder / "index.json").is_file():
        log.info("encoder features cached at %s", folder)
        return FeatureStore(folder)
    with atomic_dir(folder) as tmp:
        was_training = encoder.training
        encoder.eval()
        array = None
        for start in tqdm(range(0, len(paths), batch_size), desc="encoding images once", unit="batch"):
            chunk = paths[start : start + batch_size]
            images = []
            for p in chunk:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
            feats = encoder.forward_features(transform(images)).patch.float().cpu().numpy()  # (b, N, D)
            if array is None:
                shape = (len(paths), *feats.shape[1:])
                array = np.lib.format.open_memmap(
                    tmp / "features.npy", mode="w+", dtype=np.float32, shape=shape
                )
            array[start : start + len(chunk)] = feats
        encoder.train(was_training)
        if array is not None:
            array.flush()
            del array
        (tmp / "index.json").write_text(json.dumps({str(p): i for i, p in enumerate(paths)}))
    log.info("encoded %d images once -> %s", len(paths), folder)
    return FeatureStore(folder)

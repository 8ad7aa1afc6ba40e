"""Paper Table 8's "Simple FT": the base's own 2D objective (``train.pretrain``) continued on the study data.

The same multi-label class + colour presence objective and optimiser recipe as pre-training, now on every
view of the stage-3 dataset's images (labels from their ``gt/`` sidecars), full fine-tuning, with the batch
size chosen so the number of optimiser steps matches stage 3. The pre-training head is not kept by
``train.pretrain``, so a fresh head is fitted along (noted in the report).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from spatialboost.datagen.scenes.synthetic import COLORS, OBJECT_CLASSES
from spatialboost.dataset_format import iter_records, load_gt_arrays, record_images
from spatialboost.io import confined
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.preprocess import preprocess_images
from spatialboost.train.pretrain import PretrainConfig, PretrainResult, fit

log = logging.getLogger(__name__)


def label_names() -> list[str]:

    return [f"class:{c}" for c in OBJECT_CLASSES] + [f"colour:{c}" for c in COLORS]


def load_labelled_images(
    dataset_dir: str | Path, encoder: VisionEncoder, min_pixels: int = 4, side: int | None = None
):
    """(M, 3, S, S) pixels of every view and (M, C + K) class/colour presence labels (pretrain's rule)."""
    from PIL import Image

    names = label_names()
    images, rows = [], []
    for record in iter_records(dataset_dir):
        _, meta = load_gt_arrays(dataset_dir, record["id"])
        for k, rel in enumerate(record_images(record)):
            with Image.open(confined(dataset_dir, rel)) as im:
                images.append(np.asarray(im.convert("RGB")))
            row = torch.zeros(len(names))
            for obj in meta["objects"]:
                if obj["visible_pixels"] and obj["visible_pixels"][k] >= min_pixels:
                    row[names.index(f"class:{obj['name']}")] = 1
                    if f"colour:{obj['color']}" in names:
                        row[names.index(f"colour:{obj['color']}")] = 1
            rows.append(row)
    return preprocess_images(images, encoder.spec, side), torch.stack(rows)


def simple_finetune(
    encoder: VisionEncoder, dataset_dir: str | Path, steps: int, lr: float, seed: int, side: int | None = None
) -> PretrainResult:
    """Continue the 2D objective for about ``steps`` optimiser steps (one pass over the images, at ``side``)."""
    pixels, labels = load_labelled_images(dataset_dir, encoder, side=side)
    n_train = len(pixels) - max(1, len(pixels) // 10)  # pretrain.fit holds out 10%
    batch = max(1, n_train // max(1, steps))
    cfg = PretrainConfig(scenes=len(pixels), epochs=1, batch_size=batch, lr=lr, seed=seed)
    log.info("simple FT: %d images, batch %d -> %d steps, lr %g", len(pixels), batch, n_train // batch, lr)
    return fit(encoder, pixels, labels, cfg)

"""A torch ``Dataset`` over the conversation shards of a dataset directory.

Layout (written by the data engine): ``<dir>/shards/*.jsonl``, one LLaVA record per line, image paths
relative to ``<dir>`` (resolved with ``resolve_inside``: nothing outside the dataset root is read).

Text is tokenized once, up front (cheap; gives every sample's length for packing and reports the samples
that cannot train, e.g. truncation that cuts every answer); images are read lazily in ``__getitem__``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from spatialboost.data.conversation import (
    EmptyLabelsError,
    TokenizedConversation,
    record_images,
    tokenize_conversation,
)
from spatialboost.data.images import ImageTransform, make_image_transform
from spatialboost.errors import UserError
from spatialboost.io import resolve_inside

log = logging.getLogger(__name__)


def read_records(root: str | Path) -> list[dict]:
    """Every record of ``<root>/shards/*.jsonl``, shards in name order."""
    shards = sorted(Path(root).glob("shards/*.jsonl"))
    if not shards:
        raise UserError(f"{root}: no shards/*.jsonl (generate a dataset with `spatialboost generate`)")
    records = []
    for shard in shards:
        with open(shard, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UserError(f"{shard}:{line_no}: not valid JSON ({e})") from None
    return records


class ConversationDataset(Dataset):
    """Samples ``{"id", "input_ids", "labels", "pixel_values"}`` for the VLM.

    ``num_image_tokens``: patch tokens per image (each ``<image>`` expands to that many ids).
    ``on_overflow``: ``"skip"`` drops (and logs, in ``self.skipped``) samples that cannot train, e.g.
    truncation to ``max_length`` that would cut every answer; ``"error"`` raises on the first one.
    """

    def __init__(
        self,
        root: str | Path,
        tokenizer,
        num_image_tokens: int,
        image_transform: ImageTransform | None = None,
        image_size: int = 224,
        max_length: int | None = None,
        on_overflow: str = "skip",
    ) -> None:
        if on_overflow not in ("skip", "error"):
            raise ValueError(f"on_overflow must be 'skip' or 'error', got {on_overflow!r}")
        self.root = Path(root)
        self.transform = image_transform or make_image_transform(image_size)
        self.records: list[dict] = []
        self.samples: list[TokenizedConversation] = []
        self.skipped: list[tuple[str, str]] = []  # (sample id, reason)
        for record in tqdm(read_records(root), desc="tokenizing", unit="conv", leave=False):
            try:
                sample = tokenize_conversation(record, tokenizer, num_image_tokens, max_length)
            except (EmptyLabelsError, ValueError) as e:
                if on_overflow == "error":
                    raise
                self.skipped.append((str(record.get("id", "?")), str(e)))
                continue
            self.records.append(record)
            self.samples.append(sample)
        if self.skipped:
            log.warning("%s: skipped %d sample(s), e.g. %s", root, len(self.skipped), self.skipped[0][1])
        if not self.samples:
            raise UserError(f"{root}: no trainable samples ({len(self.skipped)} skipped)")

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        paths = record_images(self.records[i])[: sample.num_images]  # truncation may drop trailing images
        images = [_load_rgb(resolve_inside(self.root, p)) for p in paths]
        return {
            "id": sample.id,
            "input_ids": torch.tensor(sample.input_ids, dtype=torch.long),
            "labels": torch.tensor(sample.labels, dtype=torch.long),
            "pixel_values": self.transform(images),  # (n_images, 3, H, W)
        }


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")

"""A torch ``Dataset`` over the conversation shards of a dataset directory.

The layout and records are ``spatialboost.dataset_format``'s: the shards its manifest lists, one LLaVA
record per line, image paths relative to the dataset directory (resolved with ``io.confined``: nothing
outside the dataset root is read; a record whose ``image`` is ``../x``, absolute or a symlink leading out is
skipped and listed in ``skipped`` with the reason, whatever ``on_overflow`` says).

Text is tokenized once, up front (cheap; gives every sample's length for packing and reports the samples
that cannot train, e.g. truncation that cuts every answer); images are read lazily in ``__getitem__``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from spatialboost.data.conversation import TokenizedConversation, tokenize_conversation
from spatialboost.data.refs import REF_TOKENS, Ref, annotate_record, ref_weights
from spatialboost.dataset_format import read_instance, read_meta, read_records, record_images, shard_files
from spatialboost.errors import EmptyLabelsError, UserError
from spatialboost.image_transform import ImageTransform
from spatialboost.io import UnsafePathError, confined

log = logging.getLogger(__name__)


_TOKENIZED: dict[tuple, tuple] = {}  # in-process memo: the stages of one run tokenize the same data once


def tokenize_dataset(
    root: Path,
    tokenizer,
    num_image_tokens: int,
    max_length: int | None,
    ref_tokens: tuple[str, ...],
    on_overflow: str,
) -> tuple[
    list[dict], list[TokenizedConversation], list[dict | None], list[list[Ref]], list[tuple[str, str]]
]:
    """(records, samples, sidecar metas, refs, skipped) of every record; memoised per process on the listed
    shards' names, sizes and mtimes, the tokenizer object and its size, and the options."""
    shards = shard_files(root)
    key = (str(Path(root).resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shards),
           id(tokenizer), len(tokenizer), num_image_tokens, max_length, ref_tokens, on_overflow)  # fmt: skip
    if key in _TOKENIZED:
        return _TOKENIZED[key]
    records, samples, metas, refs_all, skipped = [], [], [], [], []
    ref_ids = [tokenizer.convert_tokens_to_ids(t) for k, t in REF_TOKENS.items() if k in ref_tokens]
    for record in tqdm(read_records(root), desc="tokenizing", unit="conv", leave=False):
        meta, refs = None, []
        try:
            for rel in record_images(record):
                confined(root, rel)  # a record's image that leads outside the dataset is never read
        except UnsafePathError as e:
            skipped.append((str(record.get("id", "?")), f"image {e.path}: {e.reason}"))
            continue
        try:
            if ref_tokens:
                meta = read_meta(root, str(record.get("id", "")))
                if meta is not None:
                    record, refs = annotate_record(record, meta, ref_tokens)
            sample = tokenize_conversation(record, tokenizer, num_image_tokens, max_length)
        except (EmptyLabelsError, ValueError) as e:
            if on_overflow == "error":
                raise
            skipped.append((str(record.get("id", "?")), str(e)))
            continue
        records.append(record)
        samples.append(sample)
        metas.append(meta)
        refs_all.append(refs[: sum(sample.input_ids.count(i) for i in ref_ids)])  # truncation may cut some
    if len(_TOKENIZED) >= 8:
        _TOKENIZED.pop(next(iter(_TOKENIZED)))
    _TOKENIZED[key] = (records, samples, metas, refs_all, skipped)
    return _TOKENIZED[key]


def partners(num_images: list[int]) -> list[int]:
    """For each sample, the next sample (cyclically) with the same number of images (itself if none)."""
    out = []
    for i, n in enumerate(num_images):
        k = len(num_images)
        j = next((i + d) % k for d in range(1, k + 1) if num_images[(i + d) % k] == n)
        out.append(j)
    return out


class ConversationDataset(Dataset):
    """Samples ``{"id", "input_ids", "labels", "turns", "pixel_values"}`` (+ reference weights) for the VLM.

    ``image_transform``: images -> (n, 3, S, S) pixels; training passes the encoder's own
    (``models.preprocess.image_transform_for``), the default is ``ImageTransform(image_size)`` (ImageNet
    mean/std, bicubic): the one preprocessing path of ``spatialboost.image_transform`` either way.
    ``num_image_tokens``: patch tokens per image (each ``<image>`` expands to that many ids; 0 drops the
    image tokens, e.g. when reference tokens carry the image).
    ``ref_tokens``: which reference tokens to insert (``data.refs``: "point", "region"); ``ref_grid`` =
    (image side, patch grid side) of the encoder's input. Samples without a ground-truth sidecar get none.
    ``on_overflow``: ``"skip"`` drops (and logs, in ``self.skipped``) samples that cannot train, e.g.
    truncation to ``max_length`` that would cut every answer; ``"error"`` raises on the first one.
    ``swap_images`` (a control, ``data.swap_images``): every sample gets the images of its ``partners`` sample,
    another scene's, so the text no longer describes the image; reference tokens keep their places.
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
        ref_tokens: tuple[str, ...] = (),
        ref_grid: tuple[int, int] | None = None,
        swap_images: bool = False,
    ) -> None:
        if on_overflow not in ("skip", "error"):
            raise ValueError(f"on_overflow must be 'skip' or 'error', got {on_overflow!r}")
        if ref_tokens and ref_grid is None:
            raise ValueError("ref_tokens need ref_grid=(image side, patch grid side)")
        self.root = Path(root)
        self.transform = image_transform or ImageTransform(image_size)
        self.ref_tokens, self.ref_grid = tuple(ref_tokens), ref_grid
        self.feature_store = None  # set (train.features) to serve cached "image_features" instead of pixels
        self.records, self.samples, self.metas, self.refs, self.skipped = tokenize_dataset(
            self.root, tokenizer, num_image_tokens, max_length, self.ref_tokens, on_overflow
        )
        if self.skipped:
            log.warning("%s: skipped %d sample(s), e.g. %s", root, len(self.skipped), self.skipped[0][1])
        self.truncated = [s for s in self.samples if s.full_length is not None]
        if self.truncated:
            longest = max(s.full_length for s in self.truncated)
            log.warning("%s: %d of %d conversation(s) are longer than max_length=%d and were cut (the longest: %d "
                        "tokens); the answers past the cut are dropped (neither trained nor scored): raise "
                        "data.max_length or use fewer turns", root, len(self.truncated), len(self.samples), max_length, longest)  # fmt: skip
        if not self.samples:
            raise UserError(f"{root}: no trainable samples ({len(self.skipped)} skipped)")
        # which sample's images each sample reads (itself unless swap_images)
        self.image_source = list(range(len(self.samples)))
        if swap_images:
            self.image_source = partners([s.num_images for s in self.samples])
            kept = sum(i == j for i, j in enumerate(self.image_source))
            log.info("%s: images swapped between samples (%d kept their own: no partner)", root, kept)

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        # truncation may drop trailing images; a partner has as many as this sample
        paths = record_images(self.records[self.image_source[i]])[: sample.num_images]
        item = {
            "id": sample.id,
            "input_ids": torch.tensor(sample.input_ids, dtype=torch.long),
            "labels": torch.tensor(sample.labels, dtype=torch.long),
        }
        if self.feature_store is not None:
            item["image_features"] = self.feature_store.get([confined(self.root, p) for p in paths])
        else:
            images = [_load_rgb(confined(self.root, p)) for p in paths]
            item["pixel_values"] = self.transform(images)  # (n_images, 3, H, W)
        if sample.turns is not None:
            item["turns"] = torch.tensor(sample.turns, dtype=torch.long)
        if self.refs[i]:
            item.update(self.ref_tensors(i))
        return item

    def ref_tensors(self, i: int) -> dict[str, torch.Tensor]:
        """(E,) each: ``ref_rows`` (which ref), ``ref_images`` (which of the sample's images), ``ref_patches``
        (which patch token of it) and ``ref_vals`` (the weight); a ref's weights sum to 1."""
        refs, meta = self.refs[i], self.metas[i]
        needs_masks = any(r.kind == "region" for r in refs)
        instance = read_instance(self.root, self.samples[i].id) if needs_masks else None
        side, grid = self.ref_grid
        weights = ref_weights(refs, meta["sizes"], instance, side, grid)
        rows = [np.full(len(c), k, dtype=np.int64) for k, (c, _) in enumerate(weights)]
        cols = torch.from_numpy(np.concatenate([c for c, _ in weights]))
        return {
            "ref_rows": torch.from_numpy(np.concatenate(rows)),
            "ref_images": cols // (grid * grid),
            "ref_patches": cols % (grid * grid),
            "ref_vals": torch.from_numpy(np.concatenate([v for _, v in weights])),
        }


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")

"""Batches for the VLM: padded rows, or packed rows holding several conversations each.

Both collators take samples ``{"id", "input_ids" (L,), "labels" (L,), "pixel_values" (n, 3, H, W)}``
and return::

    input_ids     (R, L) long   pad_token_id in the padding
    labels        (R, L) long   LM_IGNORE_INDEX outside answers
    position_ids  (R, L) long   restart at 0 for every conversation
    attention_mask (R, L) bool  True on real tokens
    seq_ids       (R, L) long   packed only: 1, 2, ... per conversation in a row, 0 on padding
    pixel_values  (n_total, 3, H, W) or None, in the order the image tokens appear in input_ids (row-major)
    image_features (n_total, N, D) instead, when samples carry cached encoder features
    ids           list[str]     sample ids, for error messages
    turns         (R, L) long   the answer turn of each label token (-1 elsewhere), when samples carry it
    ref_rows, ref_images, ref_patches, ref_vals   (E,) reference-token weights (``data.refs``), when any:
                  ref k (in the order its token appears in input_ids, row-major) puts weight v on patch p
                  of batch image i (an index into pixel_values)

With ``seq_ids`` the VLM keeps attention inside each conversation -- varlen attention cut at the
conversation boundaries (``models.attention``, the default), or an explicit block-diagonal causal mask --
so a packed row computes exactly what the same conversations compute one per row: same attention, same
positions, same label tokens. The first
token of each conversation is never a target (as in an unpacked row), so no loss crosses a boundary.
A batch whose label mask is empty raises ``EmptyLabelsError`` naming its samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spatialboost.constants import LM_IGNORE_INDEX
from spatialboost.errors import EmptyLabelsError


def pack_lengths(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """First-fit decreasing bin packing: sample indices per row, each row at most ``max_length`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        if lengths[i] > max_length:
            raise ValueError(
                f"sample {i} has {lengths[i]} tokens > max_length={max_length}; truncate it first"
            )
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(max_length)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


class PaddedCollator:
    """One conversation per row, right-padded to the longest in the batch."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[dict]) -> dict:
        return _assemble([[s] for s in samples], self.pad_token_id, packed=False)


class PackedCollator:
    """Several conversations per row (first-fit decreasing), rows at most ``max_length`` tokens."""

    def __init__(self, pad_token_id: int, max_length: int) -> None:
        self.pad_token_id = pad_token_id
        self.max_length = max_length

    def __call__(self, samples: list[dict]) -> dict:
        rows = pack_lengths([len(s["input_ids"]) for s in samples], self.max_length)
        return _assemble([[samples[i] for i in row] for row in rows], self.pad_token_id, packed=True)


def _assemble(rows: list[list[dict]], pad_token_id: int, packed: bool) -> dict:
    width = max(sum(len(s["input_ids"]) for s in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, LM_IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    seq_ids = torch.zeros(shape, dtype=torch.long)
    turns = torch.full(shape, -1, dtype=torch.long)
    pixels, features, refs = [], [], []
    n_images = n_refs = 0
    for r, row in enumerate(rows):
        start = 0
        for k, sample in enumerate(row, 1):
            n = len(sample["input_ids"])
            input_ids[r, start : start + n] = sample["input_ids"]
            labels[r, start : start + n] = sample["labels"]
            labels[r, start] = LM_IGNORE_INDEX  # a conversation's first token is never a target
            position_ids[r, start : start + n] = torch.arange(n)
            seq_ids[r, start : start + n] = k
            if "turns" in sample:
                turns[r, start : start + n] = sample["turns"]
            if "ref_rows" in sample:
                refs.append(_offset_refs(sample, n_refs, n_images))
                n_refs += int(sample["ref_rows"].max()) + 1
            if sample.get("pixel_values") is not None and len(sample["pixel_values"]):
                pixels.append(sample["pixel_values"])
                n_images += len(sample["pixel_values"])
            if sample.get("image_features") is not None and len(sample["image_features"]):
                features.append(sample["image_features"])
                n_images += len(sample["image_features"])
            start += n
    ids = [s["id"] for row in rows for s in row]
    if not (labels != LM_IGNORE_INDEX).any():
        raise EmptyLabelsError(f"batch of samples {ids}: empty label mask, nothing to learn from")
    batch = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "attention_mask": seq_ids > 0,
        "pixel_values": torch.cat(pixels) if pixels else None,
        "ids": ids,
    }
    if packed:
        batch["seq_ids"] = seq_ids
    if features:
        batch["image_features"] = torch.cat(features)
    if any("turns" in s for row in rows for s in row):
        batch["turns"] = turns
    if refs:
        for key in REF_KEYS:
            batch[key] = torch.cat([ref[key] for ref in refs])
    return batch


REF_KEYS = ("ref_rows", "ref_images", "ref_patches", "ref_vals")


def _offset_refs(sample: dict, n_refs: int, n_images: int) -> dict[str, torch.Tensor]:
    """A sample's reference weights with its refs and images numbered within the batch."""
    return {
        "ref_rows": sample["ref_rows"] + n_refs,
        "ref_images": sample["ref_images"] + n_images,
        "ref_patches": sample["ref_patches"],
        "ref_vals": sample["ref_vals"],
    }

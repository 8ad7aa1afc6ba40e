"""Does the VLM read the image? The image gain, measured on held-out conversations.

SpatialBoost's stage 3 tunes the encoder through a frozen LM: the LM can only pass spatial signal back if
its answers depend on the image. ``measure_image_gain`` scores held-out conversations twice -- with their
own images, and with another scene's images (the next held-out sample with as many views; reference
tokens keep their places, so they read the other scene's features there) -- and reports:

- ``gain``: mean answer-token loss with other images minus loss with the right ones, nats per answer
  token, over all answers and per CoT level (``pixel``, ``object``, ``scene``, ``caption``; the level of
  each answer comes from the fact behind it in the sample's ground-truth sidecar);
- ``choice``: accuracy on balanced A/B questions (facts with ``choices``; chance 50%), right vs other
  images: the first answer token must prefer the right letter over the other one;
- ``numbers`` / ``pixel_numbers``: the gain on the tokens of *new* numbers only (all answers / pixel answers):
  numbers an answer states that appear nowhere earlier in the conversation, so the text cannot supply them
  (``2.94`` in "The depth at (34, 26) is 2.94 m.", not the copied ``34`` and ``26``). A per-answer-token gain
  is diluted by the copied words and coordinates; this one says how much the image helps where it can;
- ``noise``: the standard error of the gain over conversations, so the gain says whether it is real.

A gain near zero means the LM answers from the text alone: stage 3 can then only drift the encoder.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from spatialboost.constants import LM_IGNORE_INDEX
from spatialboost.data.collate import PaddedCollator
from spatialboost.data.dataset import ConversationDataset, partners
from spatialboost.dataset_format import read_meta
from spatialboost.train.data import dataset_options

log = logging.getLogger(__name__)

LEVELS = ("pixel", "object", "scene", "caption")
VALUE_LEVELS = ("numbers", "pixel_numbers")  # new numbers only (see the module doc)
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def answer_levels(meta: dict | None) -> list[str]:
    """The CoT level of each answer turn (from the sidecar's facts), or [] without a sidecar."""
    return [f.get("level", "?") for f in (meta or {}).get("facts", [])]


def choice_tokens(tokenizer, meta: dict | None) -> dict[int, tuple[int, int]]:
    """{answer turn: (first token of the right answer, first token of the other choice)} for A/B facts."""
    out = {}
    for turn, fact in enumerate((meta or {}).get("facts", [])):
        choices = fact.get("choices")
        if not choices or fact.get("answer_choice") not in choices:
            continue
        right = fact["answer_choice"]
        other = next(c for c in choices if c != right)
        ids = [tokenizer(c, add_special_tokens=False)["input_ids"][:1] for c in (right, other)]
        if ids[0] and ids[1] and ids[0] != ids[1]:
            out[turn] = (ids[0][0], ids[1][0])
    return out


class TokenText:
    """Each token id's text (special tokens: ''), decoded once per id: lets ``new_number_mask`` map the
    numbers it finds in the text back to token positions."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self.cache:
            self.cache[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=True)
        return self.cache[token_id]


def new_number_mask(input_ids: torch.Tensor, turns: torch.Tensor, labelled: torch.Tensor, text: TokenText):
    """(L,) bool: the labelled tokens that spell a number which appears nowhere earlier in the sequence
    (questions and earlier answers), i.e. a value only the image can supply."""
    pieces = [text(int(t)) for t in input_ids]
    starts = [0]
    for piece in pieces:
        starts.append(starts[-1] + len(piece))
    full = "".join(pieces)
    mask = torch.zeros(len(pieces), dtype=torch.bool)
    for turn in sorted(set(turns[labelled].tolist())):
        pos = torch.nonzero(labelled & (turns == turn))[:, 0].tolist()
        first, last = pos[0], pos[-1]
        seen = set(NUMBER.findall(full[: starts[first]]))
        for m in NUMBER.finditer(full, starts[first], starts[last + 1]):
            if m.group() in seen:
                continue
            for p in pos:
                if starts[p] < m.end() and starts[p + 1] > m.start():
                    mask[p] = True
    return mask


@torch.no_grad()
def token_losses(vlm, batch: dict, keep_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, L-1) per-token loss (0 off labels) and (R, L-1, K) logits of the ``keep_ids`` tokens predicting token
    t+1 at t. Row by row, and only K of the vocabulary kept: with a pre-trained LM's vocabulary (SmolLM2: 49,152)
    a float copy of every logit of both passes took a 32-conversation pass past 24 GB."""
    batch = {k: v for k, v in batch.items() if k != "ids"}
    logits = vlm(**batch).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    loss = torch.stack([F.cross_entropy(row.float(), target, ignore_index=LM_IGNORE_INDEX, reduction="none")
                        for row, target in zip(logits, targets, strict=True)])  # fmt: skip
    return loss, logits[..., keep_ids].float()


def measure_image_gain(vlm, dataset: ConversationDataset, tokenizer, max_samples: int, batch_size: int = 8):
    """The image gain of ``vlm`` on the first ``max_samples`` conversations of ``dataset`` (see module doc)."""
    n = min(max_samples, len(dataset))
    metas = [read_meta(dataset.root, dataset.samples[i].id) for i in range(n)]
    other = partners([dataset.samples[i].num_images for i in range(n)])
    collate = PaddedCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    per_sample: list[dict[str, Any]] = []
    text = TokenText(tokenizer)
    was_training = vlm.training
    vlm.eval()
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        items = [dataset[i] for i in idx]
        swapped = [
            {**item, "pixel_values": dataset[other[i]]["pixel_values"]}
            for i, item in zip(idx, items, strict=True)
        ]
        choices = [choice_tokens(tokenizer, metas[i]) for i in idx]
        keep_ids = sorted({t for c in choices for pair in c.values() for t in pair})
        column = {t: j for j, t in enumerate(keep_ids)}  # token id -> its column in the kept logits
        right_loss, right_logits = token_losses(vlm, collate(items), keep_ids)
        other_loss, other_logits = token_losses(vlm, collate(swapped), keep_ids)
        batch = collate(items)
        for r, i in enumerate(idx):
            per_sample.append(
                _sample_scores(
                    batch,
                    r,
                    right_loss[r],
                    other_loss[r],
                    right_logits[r],
                    other_logits[r],
                    answer_levels(metas[i]),
                    {turn: (column[a], column[b]) for turn, (a, b) in choices[r].items()},
                    text,
                )  # fmt: skip
            )
    vlm.train(was_training)
    return summarize(per_sample)


def _sample_scores(
    batch, r, loss_right, loss_other, logits_right, logits_other, levels, choices, text
) -> dict:
    """Loss sums per level and choice hits of one conversation (row r of a padded batch); ``choices`` maps a turn
    to the columns of its right and other answer token in ``logits_*``."""
    targets = batch["labels"][r, 1:]
    turns = batch["turns"][r, 1:] if "turns" in batch else torch.full_like(targets, -1)
    keep = targets != LM_IGNORE_INDEX
    masks = {"all": keep}
    for level in LEVELS:
        ids = torch.tensor([t for t, lv in enumerate(levels) if lv == level], dtype=turns.dtype)
        masks[level] = keep & torch.isin(turns, ids)
    masks["numbers"] = new_number_mask(batch["input_ids"][r, 1:], turns, keep, text)
    masks["pixel_numbers"] = masks["numbers"] & masks["pixel"]
    out: dict[str, Any] = {"levels": {}, "choice": []}
    for level, mask in masks.items():
        if mask.any():
            out["levels"][level] = (
                float(loss_right[mask].sum()),
                float(loss_other[mask].sum()),
                int(mask.sum()),
            )
    for turn, (right_col, other_col) in choices.items():
        pos = torch.nonzero(keep & (turns == turn))
        if len(pos):
            t = int(pos[0])
            out["choice"].append((bool(logits_right[t, right_col] > logits_right[t, other_col]),
                                  bool(logits_other[t, right_col] > logits_other[t, other_col])))  # fmt: skip
    return out


def summarize(per_sample: list[dict]) -> dict[str, Any]:
    """Token-weighted losses per level, the gain with its standard error over conversations, choice accuracy."""
    result: dict[str, Any] = {"samples": len(per_sample)}
    for level in ("all", *LEVELS, *VALUE_LEVELS):
        rows = [s["levels"][level] for s in per_sample if level in s["levels"]]
        if not rows:
            continue
        right, other, tokens = (sum(col) for col in zip(*rows, strict=True))
        per_conv = [(o - r) / t for r, o, t in rows]  # each conversation's gain per token
        mean = sum(per_conv) / len(per_conv)
        var = sum((g - mean) ** 2 for g in per_conv) / max(len(per_conv) - 1, 1)
        result[level] = {"loss_right": right / tokens, "loss_other": other / tokens,
                         "gain": (other - right) / tokens, "stderr": math.sqrt(var / len(per_conv)),
                         "tokens": tokens, "samples": len(rows)}  # fmt: skip
    hits = [h for s in per_sample for h in s["choice"]]
    if hits:
        n = len(hits)
        acc_right, acc_other = sum(h[0] for h in hits) / n, sum(h[1] for h in hits) / n
        result["choice"] = {"acc_right": acc_right, "acc_other": acc_other, "questions": n,
                            "stderr": math.sqrt(0.25 / n)}  # fmt: skip
    return result


def is_beyond_noise(entry: dict[str, float], k: float = 2.0) -> bool:
    """The rule every report uses: a gain counts when it exceeds ``k`` standard errors."""
    return entry["gain"] > k * entry["stderr"]


def _noise_tag(entry: dict[str, float], k: float = 2.0) -> str:
    """'' beyond noise; ' (within noise)'; or a gain that is negative beyond noise, said as such."""
    if is_beyond_noise(entry, k):
        return ""
    if -entry["gain"] > k * entry["stderr"]:
        return " (negative beyond noise: the right image makes answers worse)"
    return " (within noise)"


def describe(result: dict[str, Any]) -> str:
    """One line for logs and the demo: gain per level (± s.e.) and A/B accuracy."""
    parts = []
    for level in ("all", *LEVELS, *VALUE_LEVELS):
        if level in result:
            e = result[level]
            parts.append(f"{level} {e['gain']:+.3f} ± {e['stderr']:.3f}{_noise_tag(e)}")
    line = "image gain (nats/answer token, other images - right): " + ", ".join(parts)
    if "choice" in result:
        c = result["choice"]
        line += (f"; A/B accuracy {c['acc_right']:.1%} right vs {c['acc_other']:.1%} other images "
                 f"(n={c['questions']}, chance 50%)")  # fmt: skip
    return line


def load_eval_dataset(root: str | Path, tokenizer, vlm, dcfg) -> ConversationDataset:
    """A held-out dataset tokenized as the stage's training data is (image tokens, references), but cut only at
    the LM's context, not at the stage's packing length: a stage with short rows (the demo's stage 1 at 1024) would
    otherwise score fewer answers than stage 2 (179 of 191 A/B questions, session 20)."""
    options = dataset_options(dcfg, vlm)
    options["max_length"] = max(options["max_length"], eval_max_length(vlm))
    return ConversationDataset(root, tokenizer, **options)


def eval_max_length(vlm) -> int:
    """The LM's context length (0 when its config does not say)."""
    return int(getattr(getattr(vlm.llm, "config", None), "max_position_embeddings", 0) or 0)

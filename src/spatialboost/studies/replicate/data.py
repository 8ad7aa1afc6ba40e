"""The study's datasets: the main stage-3 data and its variants, written once with the data engine.

Every variant draws its scenes from the same seed, so sample ``i`` is the same scene in every variant
(``datagen.dataset.writer.sample_seed``): "quarter" and "half" are the first 1/4 and 1/2 of the main scenes,
"reverse"/"shuffled" re-order the turns of the same scenes. The view mix is the exception: the number of
views is drawn per sample from ``multiview_share``, so "single-view" and "multi-view" re-render.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
from spatialboost.datagen.questions.conversations import ConversationConfig
from spatialboost.datagen.recipes import reading_conversation
from spatialboost.datagen.scenes.synthetic import SyntheticConfig
from spatialboost.datagen.sources import GenerateConfig, SyntheticSource
from spatialboost.dataset_format import read_manifest
from spatialboost.studies.replicate.study import DATA, DataVariant, Sizes

log = logging.getLogger(__name__)


def variant_scenes(variant: DataVariant, sizes: Sizes) -> int:
    return max(sizes.batch_size, round(sizes.scenes * variant.fraction))


def conversation_config(
    variant: DataVariant, extra_turns: dict[str, int] | None = None
) -> ConversationConfig:
    return ConversationConfig(order=variant.order, coords=variant.coords, turns=dict(variant.turns),
                              caption=variant.caption, extra_turns=variant.extra_turns_for(extra_turns))  # fmt: skip


def turns_tag(extra_turns: dict[str, int]) -> str:
    """A short folder tag for a recipe's extra turns ("" for none: the first study's data layout)."""
    if not extra_turns:
        return ""
    return "-x" + hashlib.sha256(json.dumps(sorted(extra_turns.items())).encode()).hexdigest()[:6]


def ensure_dataset(
    root: Path, name: str, sizes: Sizes, scenes: int | None = None, extra_turns: dict[str, int] | None = None
) -> Path:
    """``root/<name>``: the variant's dataset (resumable; an existing complete one is reused)."""

    variant = DATA[name]
    out = root / (name + turns_tag(variant.extra_turns_for(extra_turns)))
    if (out / "manifest.json").is_file() and _complete(out):
        return out
    share = sizes.multiview_share if variant.multiview_share is None else variant.multiview_share
    n = scenes or variant_scenes(variant, sizes)
    cfg = GenerateConfig(scenes=n, seed=variant.seed, multiview_share=share, max_views=3, shard_size=16,
                         synthetic=SyntheticConfig(image_size=sizes.image_size),
                         conversation=conversation_config(variant, extra_turns))  # fmt: skip
    log.info("data %s: %d scenes (multi-view share %.2f, order %s, coords %s)", name, n, share, variant.order,
             variant.coords)  # fmt: skip
    write_dataset(SyntheticSource(cfg), WriteSpec(out, n, cfg.seed, cfg.shard_size, cfg.conversation))
    return out


def ensure_reading_dataset(root: Path, sizes: Sizes, reading_turns: dict[str, int]) -> Path:
    """The reading warm-up's conversations (the main scenes, single-view): terse auxiliary turns only."""

    out = root / ("reading" + turns_tag(reading_turns))
    if (out / "manifest.json").is_file() and _complete(out):
        return out
    conv = reading_conversation(reading_turns)
    cfg = GenerateConfig(scenes=sizes.scenes, seed=DATA["main"].seed, multiview_share=0.0, shard_size=16,
                         synthetic=SyntheticConfig(image_size=sizes.image_size), conversation=conv)  # fmt: skip
    write_dataset(SyntheticSource(cfg), WriteSpec(out, cfg.scenes, cfg.seed, cfg.shard_size, conv))
    return out


def ensure_heldout_dataset(root: Path, sizes: Sizes, extra_turns: dict[str, int]) -> Path:
    """Held-out conversations (seed 2, the main data's format): where the trainer measures the image gain."""

    out = root / ("heldout" + turns_tag(extra_turns))
    if (out / "manifest.json").is_file() and _complete(out):
        return out
    conv = conversation_config(DATA["main"], extra_turns)
    cfg = GenerateConfig(scenes=sizes.heldout_scenes, seed=2, multiview_share=sizes.multiview_share, max_views=3,
                         shard_size=16, synthetic=SyntheticConfig(image_size=sizes.image_size), conversation=conv)  # fmt: skip
    write_dataset(SyntheticSource(cfg), WriteSpec(out, cfg.scenes, cfg.seed, cfg.shard_size, conv))
    return out


def ensure_diag_dataset(root: Path, sizes: Sizes) -> Path:
    """Held-out pixel-level-only conversations (seed 1): the answer-token diagnostic's data."""

    out = root / "diag-pixel"
    if (out / "manifest.json").is_file() and _complete(out):
        return out
    conv = ConversationConfig(levels=["pixel"], turns={"pixel": 3}, caption=False)
    cfg = GenerateConfig(scenes=sizes.diag_scenes, seed=1, synthetic=SyntheticConfig(image_size=sizes.image_size),
                         conversation=conv)  # fmt: skip
    write_dataset(SyntheticSource(cfg), WriteSpec(out, cfg.scenes, cfg.seed, cfg.shard_size, conv))
    return out


def _complete(out: Path) -> bool:

    return bool(read_manifest(out).get("complete", False))

"""The synthetic datasets a training recipe reads, by recipe name: ``spatialboost generate synthetic --recipe``.

A recipe trains each stage on its own conversations; the default recipe, ``spatialboost`` (the packaged
training config of the same name, ``resources/spatialboost.yaml``), reads four datasets from one folder:

- ``main``: the hierarchical conversations (pixel -> object -> scene -> caption) plus balanced A/B turns and a
  multi-point depth read-out; half the samples multi-view (the paper's 50/50). Stage 2.
- ``reading``: the same scenes, single view, terse A/B point questions only: stage 1's reading warm-up.
- ``choices``: the main scenes and 3x as many more (sample i < 640 is main's scene i), single view, 24 A/B point
  turns each: stage 3 (the turns the stage-2 VLM demonstrably reads; 4x the scenes beat 1x on val, and 24 turns
  per image beat 6: docs/results.md).
- ``heldout``: other scenes (seed 2) in the main format: the image gain (right vs swapped images) per stage.

These are the study's datasets (``studies.replicate.data``, preset ``dinov2-s``) at its sizes: the study reads
its turn counts from here (``MAIN_EXTRA``, ``READING_EXTRA``, ``CHOICE_TURNS``, ``DENSE_CHOICE_TURNS``), and
``tests/test_recipes.py``
holds the two to the same conversations, sizes, seeds and view mixes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
from spatialboost.datagen.questions.conversations import ConversationConfig
from spatialboost.datagen.scenes.synthetic import SyntheticConfig
from spatialboost.datagen.sources import GenerateConfig, SyntheticSource
from spatialboost.registry import Registry

MAIN_EXTRA = {"choice_closer_point": 2, "choice_closer_object": 1, "depth_readout": 1}
READING_EXTRA = {"choice_closer_point": 4}
CHOICE_TURNS = 6  # choice_closer_point turns per stage-3 conversation in the study's arms up to session 9
# the default recipe's stage 3: 24 per image. Stage 3's cost is mostly the encoder's pass over the image, so 4x the
# questions give the encoder 4x the depth comparisons per step for ~2.1x the step time (benchmarks/bench_stage3.py)
DENSE_CHOICE_TURNS = 4 * CHOICE_TURNS


def main_conversation(extra: dict[str, int] | None = None) -> ConversationConfig:
    """The hierarchical conversation (the defaults) with ``extra`` auxiliary turns."""
    return ConversationConfig(extra_turns=dict(MAIN_EXTRA if extra is None else extra))


def reading_conversation(extra: dict[str, int] | None = None) -> ConversationConfig:
    """No hierarchical turns: only ``extra`` (terse A/B point questions), no caption."""
    return ConversationConfig(levels=["pixel", "object"], turns={"pixel": 0, "object": 0}, caption=False,
                              extra_turns=dict(READING_EXTRA if extra is None else extra))  # fmt: skip


def choices_conversation(turns: int = DENSE_CHOICE_TURNS) -> ConversationConfig:
    """Stage 3's conversations: ``turns`` A/B point questions, nothing else."""
    return ConversationConfig(turns={"pixel": 0, "object": 0, "scene": 0}, caption=False,
                              extra_turns={"choice_closer_point": turns})  # fmt: skip


@dataclass(frozen=True)
class RecipeDataset:
    """One dataset of a recipe: its folder name, what reads it, and how it is generated."""

    name: str
    purpose: str
    conversation: Callable[[], ConversationConfig]
    scenes: int  # the recipe's default size
    seed: int = 0  # 0: the main scenes (sample i is the same scene in every dataset of seed 0)
    multiview_share: float = 0.0


@dataclass(frozen=True)
class DataRecipe:
    name: str
    datasets: tuple[RecipeDataset, ...]
    image_size: int = 112  # DINOv2-S/14 sees 8x8 patches


DATA_RECIPES: Registry[DataRecipe] = Registry("data recipe")
DATA_RECIPES.add("spatialboost", DataRecipe("spatialboost", (
    RecipeDataset("main", "stage 2 (and every stage's default)", main_conversation, 640, multiview_share=0.5),
    RecipeDataset("reading", "stage 1: the reading warm-up", reading_conversation, 640),
    RecipeDataset("choices", "stage 3: A/B point turns only", choices_conversation, 2560),
    RecipeDataset("heldout", "image gain: right vs swapped images", main_conversation, 64, seed=2,
                  multiview_share=0.5),
)))  # fmt: skip


def generate_config(recipe: DataRecipe, dataset: RecipeDataset, scenes: int | None = None,
                    image_size: int | None = None) -> GenerateConfig:  # fmt: skip
    """What ``spatialboost generate synthetic`` writes for one of ``recipe``'s datasets."""
    return GenerateConfig(scenes=scenes or dataset.scenes, seed=dataset.seed, multiview_share=dataset.multiview_share,
                          max_views=3, shard_size=16, conversation=dataset.conversation(),
                          synthetic=SyntheticConfig(image_size=image_size or recipe.image_size))  # fmt: skip


def write_recipe_data(
    name: str, out: str | Path, image_size: int | None = None, workers: int = 1, progress: bool = True,
    sizes: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every dataset of recipe ``name`` under ``out/<dataset>`` (resumable: finished ones are kept); each
    dataset's size is ``sizes[name]`` where given, else the recipe's. Returns the manifests."""
    recipe = DATA_RECIPES.get(name)
    manifests = {}
    for ds in recipe.datasets:
        cfg = generate_config(recipe, ds, (sizes or {}).get(ds.name), image_size)
        spec = WriteSpec(Path(out) / ds.name, cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
        manifests[ds.name] = write_dataset(SyntheticSource(cfg), spec, workers=workers, progress=progress)
    return manifests

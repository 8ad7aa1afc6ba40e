"""Sample sources for the dataset writer, and the config of ``spatialboost generate synthetic``.

A source turns (sample index, sample seed) into a ``Scene``; the writer (``datagen.dataset.writer``) does the rest.
The real-photo source (``generate images``) plugs in the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spatialboost.config import ConfigError, to_dict
from spatialboost.datagen.questions.conversations import ConversationConfig
from spatialboost.datagen.scenes.scene import Scene
from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene


@dataclass
class GenerateConfig:
    """``spatialboost generate synthetic``: how many samples, their views, the scene engine and the dialogue."""

    scenes: int = 64
    seed: int = 0
    views: int = 1  # views of a single-view-share sample
    multiview_share: float = 0.0  # share of samples rendered with 2..max_views views (paper: 50/50)
    max_views: int = 3
    shard_size: int = 16  # samples per shard
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)

    def validate(self) -> None:
        if self.scenes < 1:
            raise ConfigError(f"scenes must be >= 1, got {self.scenes}")
        if not 1 <= self.views <= 8:
            raise ConfigError(f"views must be in [1, 8], got {self.views}")
        if not 0.0 <= self.multiview_share <= 1.0:
            raise ConfigError(f"multiview_share must be in [0, 1], got {self.multiview_share}")
        if self.multiview_share > 0 and not 2 <= self.max_views <= 8:
            raise ConfigError(f"max_views must be in [2, 8] when multiview_share > 0, got {self.max_views}")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


@dataclass
class SyntheticSource:
    """Procedural scenes from ``datagen.scenes.synthetic``; a sample's view count is drawn from its own seed."""

    cfg: GenerateConfig
    name: str = "synthetic"

    @property
    def multiview(self) -> bool:
        return self.cfg.views > 1 or self.cfg.multiview_share > 0

    def config(self) -> dict[str, Any]:
        c = self.cfg
        keys = ("views", "multiview_share", "max_views")
        return {"synthetic": to_dict(c.synthetic), **{k: getattr(c, k) for k in keys}}

    def num_views(self, seed: int) -> int:
        rng = np.random.default_rng([seed, 1])
        if self.cfg.multiview_share > 0 and rng.random() < self.cfg.multiview_share:
            return int(rng.integers(2, self.cfg.max_views + 1))
        return self.cfg.views

    def make_scene(self, index: int, seed: int, sample_id: str) -> Scene:
        scfg = dataclasses.replace(self.cfg.synthetic, views=self.num_views(seed))
        return generate_scene(seed, scfg, scene_id=sample_id)

"""Training data: the data engine's LLaVA datasets -> a deterministic plan of micro-batches.

Samples of every listed dataset are split into two pools by image count (single-view: at most one image,
multi-view: several). Each epoch draws ``len(all samples)`` of them, ``multi_view_ratio`` from the
multi-view pool (each pool shuffled, cycled if the ratio asks for more than it holds), and interleaves
them in a shuffled order. Everything derives from ``(seed, epoch)``, so optimiser step ``s`` always sees
the same samples: the data position of a checkpoint is just its step.

One optimiser step consumes a *global batch* of ``batch_size * grad_accum * world_size`` samples cut into
``grad_accum * world_size`` micro-batches; process ``r`` takes micro-batches ``r, r + world, ...``. So one
process with ``grad_accum=2`` and two processes with ``grad_accum=1`` see the same micro-batches, and the
loss is normalised by the label tokens of the whole global batch (``target_tokens``), known up front.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import ConcatDataset, DataLoader

from spatialboost.constants import LM_IGNORE_INDEX
from spatialboost.data.collate import PackedCollator, PaddedCollator
from spatialboost.data.dataset import ConversationDataset
from spatialboost.errors import UserError
from spatialboost.models.preprocess import image_transform_for
from spatialboost.train.config import DataConfig

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    dataset: ConcatDataset
    lengths: list[int]  # tokens per sample
    targets: list[int]  # label tokens per sample (what the loss averages over)
    multi_view: list[bool]

    def __len__(self) -> int:
        return len(self.lengths)


def dataset_options(cfg: DataConfig, vlm) -> dict:
    """``ConversationDataset`` keyword arguments for ``vlm``'s encoder under data config ``cfg``."""
    transform = image_transform_for(vlm.encoder, cfg.image_size)
    return {
        "num_image_tokens": transform.tokens_per_image if cfg.image_tokens else 0,
        "image_transform": transform,
        "max_length": cfg.max_length,
        "ref_tokens": tuple(cfg.refs),
        "ref_grid": (transform.side, transform.grid),
    }


def load_train_data(cfg: DataConfig, tokenizer, vlm) -> TrainData:
    """Tokenize every dataset of ``cfg`` (text up front, images lazily)."""
    if not cfg.datasets:
        raise UserError("data.datasets is empty: list dataset dirs made by `spatialboost generate`")
    options = dataset_options(cfg, vlm)
    parts = [
        ConversationDataset(root, tokenizer, **options, swap_images=cfg.swap_images) for root in cfg.datasets
    ]
    lengths, targets, multi = [], [], []
    for part in parts:
        for sample in part.samples:
            lengths.append(len(sample))
            targets.append(sum(label != LM_IGNORE_INDEX for label in sample.labels[1:]))
            multi.append(sample.num_images > 1)
    data = TrainData(ConcatDataset(parts), lengths, targets, multi)
    log.info("data: %d samples (%d multi-view) from %d dataset(s)", len(data), sum(multi), len(parts))
    return data


def epoch_order(data: TrainData, ratio: float | None, seed: int, epoch: int) -> list[int]:
    """This epoch's sample indices: pools mixed by ``ratio`` (None: their natural proportion)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    multi = [i for i, m in enumerate(data.multi_view) if m]
    single = [i for i, m in enumerate(data.multi_view) if not m]
    n = len(data)
    if ratio is None or not multi or not single:
        return [int(i) for i in torch.randperm(n, generator=g)]
    n_multi = round(ratio * n)
    chosen = _draw(multi, n_multi, g) + _draw(single, n - n_multi, g)
    return [chosen[int(i)] for i in torch.randperm(n, generator=g)]


def _draw(pool: list[int], k: int, g: torch.Generator) -> list[int]:
    out: list[int] = []
    while len(out) < k:
        out += [pool[int(i)] for i in torch.randperm(len(pool), generator=g)]
    return out[:k]


@dataclass
class BatchPlan:
    """Which samples each optimiser step and micro-batch uses."""

    data: TrainData
    ratio: float | None
    seed: int
    batch_size: int
    grad_accum: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        steps = len(self.data) // self.global_batch
        if steps == 0:
            raise UserError(
                f"{len(self.data)} samples cannot fill one global batch of {self.global_batch} "
                "(batch_size * grad_accum * processes); lower them or generate more data"
            )
        return steps

    def step_samples(self, step: int) -> list[int]:
        """The global batch of optimiser step ``step`` (0-based)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        return order[k * self.global_batch : (k + 1) * self.global_batch]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        samples = self.step_samples(step)
        b = self.batch_size
        chunks = [samples[j * b : (j + 1) * b] for j in range(self.grad_accum * self.world_size)]
        return chunks[rank :: self.world_size]

    def target_tokens(self, step: int) -> int:
        return sum(self.data.targets[i] for i in self.step_samples(step))

    def _order(self, epoch: int) -> list[int]:
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != epoch:
            cache = (epoch, epoch_order(self.data, self.ratio, self.seed, epoch))
            self._cache = cache
        return cache[1]


def make_collator(cfg: DataConfig, pad_token_id: int):
    if cfg.packing:
        return PackedCollator(pad_token_id, cfg.max_length)
    return PaddedCollator(pad_token_id)


def micro_batch_loader(
    plan: BatchPlan, start_step: int, end_step: int, rank: int, collate, num_workers: int = 0
) -> Iterator[dict]:
    """Collated micro-batches of steps ``start_step..end_step-1`` for ``rank``, in step order."""
    batches = [mb for step in range(start_step, end_step) for mb in plan.micro_batches(step, rank)]
    loader = DataLoader(plan.data.dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers)
    return iter(loader)

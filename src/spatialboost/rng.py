"""``seeded``: one block of code drawing from a seeded torch RNG, the caller's RNG left as it was.

Every seeded random init in the project (projector, Attn+/LoRA, a probe or BC head, the rows a pre-trained LM
grows for new tokens) goes through it, so a build is the same whatever ran before it, and nothing it draws moves
the random stream of the code around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's global (CPU) RNG seeded to ``seed``, then restore the caller's state.
    ``None``: no seeding and no fork, so the block draws from (and advances) the caller's RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

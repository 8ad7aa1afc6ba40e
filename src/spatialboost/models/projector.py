"""The vision -> language projector g_P: LLaVA-1.5's 2-layer MLP (Linear, GELU, Linear).

Maps encoder patch tokens (..., D_enc) to LLM token embeddings (..., D_llm). The paper follows LLaVA-1.5
(paper notes section 3); the hidden width equals the LLM hidden size, as in LLaVA's ``mlp2x_gelu``.
"""

from __future__ import annotations

import torch
from torch import nn


class MLPProjector(nn.Module):
    """``Linear(in_dim, out_dim) -> GELU -> Linear(out_dim, out_dim)``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D_enc) -> (..., D_llm)
        return self.fc2(self.act(self.fc1(x)))

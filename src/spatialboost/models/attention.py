"""Variable-length causal attention for packed rows (several conversations per row).

A packed row holds conversations end to end; each must attend only to itself. An explicit (R, 1, L, L)
block-diagonal mask gets that right but still computes every query against every key of the row, so
packing saves no attention arithmetic. Here the row is cut at the conversation boundaries instead and
each piece runs through ``F.scaled_dot_product_attention(is_causal=True)``: cost sum(n_i^2) instead of
L^2, and the fused CPU/GPU kernels skip the upper triangle.

Boundaries travel as Flash-Attention-style ``cu_seq_lens_q`` (cumulative lengths over the R x L tokens
flattened row-major; every token belongs to exactly one segment, a row's trailing padding is a segment
of its own). ``varlen_kwargs(seq_ids)`` builds them from the collator's conversation ids; the LLM hands
them on to its attention function untouched (``TransformersKwargs``), so:

- ``"sdpa_varlen"`` (registered here with transformers' ``AttentionInterface``) splits and runs SDPA;
  without ``cu_seq_lens_q`` (padded batches, generation) it is exactly transformers' ``"sdpa"``;
- ``"flash_attention_2/3"`` on GPUs use the same kwargs natively (flash-attn's varlen kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

VARLEN_SDPA = "sdpa_varlen"
_FLASH_PREFIX = "flash_attention"


def varlen_kwargs(seq_ids: torch.Tensor) -> dict:
    """(R, L) conversation ids (1, 2, ... per row, 0 on padding) -> cu_seq_lens / max_length kwargs.

    Segments are the maximal runs of one id inside a row, in row-major order over the R * L tokens.
    """
    R, L = seq_ids.shape
    starts = torch.ones_like(seq_ids, dtype=torch.bool)  # (R, L) True where a segment begins
    starts[:, 1:] = seq_ids[:, 1:] != seq_ids[:, :-1]
    begin = starts.reshape(-1).nonzero().squeeze(1)  # (S,) flat start of each segment
    end = torch.tensor([R * L], device=seq_ids.device)
    cu = torch.cat([begin, end]).to(torch.int32)  # (S + 1,)
    max_len = int(cu.diff().max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_len, "max_length_k": max_len}


def sdpa_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (R, H, L, d)
    key: torch.Tensor,  # (R, H_kv, L, d)
    value: torch.Tensor,  # (R, H_kv, L, d)
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention-function contract: returns ((R, L, H, d), None)."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise NotImplementedError(f"{VARLEN_SDPA}: sliding-window / softcap attention is not supported")
    R, H, L, d = query.shape
    sizes = cu.diff().tolist()  # segment lengths, summing to R * L
    pieces = zip(*(_token_major(x).split(sizes) for x in (query, key, value)), strict=True)
    outs = [_causal_sdpa(q, k, v, dropout, scaling) for q, k, v in pieces]  # each (n, H, d)
    return torch.cat(outs).view(R, L, H, d), None


def _token_major(x: torch.Tensor) -> torch.Tensor:
    """(R, H, L, d) -> (R * L, H, d); a view when x is the usual transposed projection output."""
    return x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3])


def _causal_sdpa(q, k, v, dropout: float, scaling: float | None) -> torch.Tensor:
    """One segment: q (n, H, d), k/v (n, H_kv, d) -> (n, H, d), causal inside the segment."""
    q, k, v = (x.transpose(0, 1)[None] for x in (q, k, v))  # (1, H, n, d)
    gqa = q.shape[1] != k.shape[1]
    out = F.scaled_dot_product_attention(
        q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa
    )
    return out[0].transpose(0, 1)  # (n, H, d)


def supports_varlen(llm: torch.nn.Module) -> bool:
    """Whether ``llm``'s attention takes packed-row boundaries from ``varlen_kwargs``."""
    impl = getattr(llm.config, "_attn_implementation", None) or ""
    return impl == VARLEN_SDPA or impl.startswith(_FLASH_PREFIX)


def use_varlen_attention(llm: torch.nn.Module) -> bool:
    """Switch an ``"sdpa"`` LLM to ``"sdpa_varlen"`` (same results; packed rows skip cross-conversation
    attention). Flash-attention LLMs are varlen already; ``"eager"`` stays on explicit masks."""
    if getattr(llm.config, "_attn_implementation", None) == "sdpa":
        llm.set_attn_implementation(VARLEN_SDPA)
    return supports_varlen(llm)


AttentionInterface.register(VARLEN_SDPA, sdpa_varlen_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_SDPA, sdpa_mask)  # padded batches: the usual sdpa masks

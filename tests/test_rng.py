"""``spatialboost.rng.seeded``: a seeded block draws the same numbers every time and leaves the caller's RNG alone."""

from __future__ import annotations

import pytest
import torch

from spatialboost.rng import seeded


def test_seeded_block_repeats_and_leaves_the_callers_stream_as_it_was():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(4)
    with seeded(7):
        assert torch.equal(torch.rand(4), first)
    assert torch.equal(torch.rand(3), expected)  # the two blocks drew nothing from the caller's stream


def test_seeded_none_draws_from_the_callers_stream():
    torch.manual_seed(123)
    expected = torch.rand(2)
    torch.manual_seed(123)
    with seeded(None):
        assert torch.equal(torch.rand(2), expected)
    assert not torch.equal(torch.rand(2), expected)  # the stream moved on


def test_seeded_restores_the_state_when_the_block_raises():
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with pytest.raises(RuntimeError), seeded(1):
        torch.rand(10)
        raise RuntimeError("boom")
    assert torch.equal(torch.rand(2), expected)

"""The conversation dataset the reference-token and image-gain tests read (fixtures: tests/conftest.py)."""

from __future__ import annotations

from spatialboost.data.dataset import ConversationDataset
from spatialboost.models.preprocess import image_transform_for


def conversation_dataset(root, vlm, tok, image_tokens=True):
    n = vlm.num_image_tokens() if image_tokens else 0
    return ConversationDataset(root, tok, n, image_transform_for(vlm.encoder), max_length=4096,
                               ref_tokens=("point", "region"), ref_grid=(64, 8))  # fmt: skip

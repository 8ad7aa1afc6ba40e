"""Feature cache: hit/miss keyed by encoder weights, layers and image transform; never a half-written entry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from eval_stubs import fake_scene
from spatialboost.eval.datasets import SyntheticProbeDataset
from spatialboost.eval.datasets.base import ProbeSample
from spatialboost.eval.features import encode_batch, extract_features, layer_indices, resize_sample
from spatialboost.image_transform import ImageTransform
from spatialboost.models.encoders import create_encoder
from spatialboost.models.preprocess import transform_for


@pytest.fixture(scope="module")
def dataset():
    return SyntheticProbeDataset("train", num_scenes=6, scene_fn=fake_scene)


def _entries(cache):
    return sorted(p.name for p in cache.iterdir())


def test_cache_miss_then_hit(tmp_path, dataset):
    enc = create_encoder("tiny-vit", seed=0)  # 128 dims, patch 8
    a = extract_features(enc, dataset, tmp_path, image_size=32, batch_size=4)
    assert a.patch.shape == (6, 16, 128) and a.cls.shape == (6, 128) and a.grid == (4, 4)
    assert isinstance(a.patch, np.memmap) and a.depth.shape == (6, 32, 32) and a.label.shape == (6,)
    with torch.inference_mode():  # the cache holds the encoder's own output on its own preprocessing
        _, patch, _ = encode_batch(enc, [dataset[0].image], [-1], transform_for(enc.spec, 32))
    np.testing.assert_allclose(a.patch[0], patch[0], rtol=1e-5, atol=1e-6)
    enc.forward_intermediates = None  # a hit must not run the encoder
    b = extract_features(enc, dataset, tmp_path, image_size=32, batch_size=4)
    assert b.path == a.path and len(_entries(tmp_path)) == 1


def test_cache_key_covers_weights_layers_resolution_and_transform(tmp_path, dataset):
    def enc(seed):  # three blocks, to see last4 clamp to what the encoder has
        return create_encoder("tiny-vit", seed=seed, num_hidden_layers=3)

    base = extract_features(enc(0), dataset, tmp_path, image_size=32)
    extract_features(enc(1), dataset, tmp_path, image_size=32)  # same name, other weights
    four = extract_features(enc(0), dataset, tmp_path, image_size=32, layers="last4")
    extract_features(enc(0), dataset, tmp_path, image_size=48)
    other = enc(0)  # same weights, other preprocessing: never the stale entry
    other.spec = dataclasses.replace(other.spec, interpolation="bilinear")
    bilinear = extract_features(other, dataset, tmp_path, image_size=32)
    assert len(_entries(tmp_path)) == 5 and bilinear.path != base.path
    assert not np.array_equal(bilinear.patch, base.patch)
    assert four.patch.shape[-1] == 3 * 128  # 3 blocks: last4 clamps to all 3
    assert layer_indices("last4", 12) == [-4, -3, -2, -1]


def test_interrupted_extraction_leaves_no_entry(tmp_path, dataset):
    enc = create_encoder("tiny-vit", seed=0)
    calls = {"n": 0}
    real = enc.forward_intermediates

    def boom(pixels, layers=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(pixels, layers)

    enc.forward_intermediates = boom
    with pytest.raises(KeyboardInterrupt):
        extract_features(enc, dataset, tmp_path, image_size=32, batch_size=3)
    assert _entries(tmp_path) == []  # no final entry, no temp folder left behind
    enc.forward_intermediates = real
    fs = extract_features(enc, dataset, tmp_path, image_size=32, batch_size=3)
    assert len(fs) == 6 and len(_entries(tmp_path)) == 1


def test_resize_keeps_targets_aligned():
    image = np.zeros((20, 40, 3), np.uint8)
    depth = np.tile(np.arange(40, dtype=np.float32), (20, 1))
    image[..., 0] = depth.astype(np.uint8)
    out = resize_sample(ProbeSample(image=image, depth=depth, seg=depth.astype(np.uint8)), ImageTransform(10))
    assert out.image.shape == (10, 10, 3) and out.depth.shape == (10, 10) and out.seg.shape == (10, 10)
    # centre crop of a 2:1 image: the middle half of the columns survives
    assert 9 <= out.depth[0, 0] <= 11 and 28 <= out.depth[0, -1] <= 30
    np.testing.assert_allclose(out.seg, out.depth.astype(np.uint8))

"""One preprocessing path: the same image gives the same tensor at train, encoder and probe time, targets
stay aligned with their image through the shared geometry, and the caches key on the transform."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spatialboost.data.dataset import ConversationDataset
from spatialboost.data.refs import Ref, mask_coverage, point_weights
from spatialboost.data.tokenizer import train_tokenizer
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample
from spatialboost.eval.depth_protocol import SlidingCrops
from spatialboost.eval.features import extract_features, resize_sample
from spatialboost.image_transform import ImageTransform, crop_geometry
from spatialboost.models.encoders import create_encoder
from spatialboost.models.preprocess import preprocess_images, transform_for
from spatialboost.train.config import DataConfig
from spatialboost.train.data import dataset_options
from spatialboost.train.features import cache_key
from train_fixtures import write_records

H, W = 50, 90  # a landscape image: the resize and the centre crop both matter


def _image(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class OneImage(ProbeDataset):
    name, split, tasks = "one", "test", ("depth",)

    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    def __len__(self) -> int:
        return 1

    def _load(self, index: int) -> ProbeSample:
        return ProbeSample(image=self.image, depth=np.ones(self.image.shape[:2], np.float32))

    @property
    def identity(self) -> str:
        return "one-image"


def _train_pixels(encoder, image: np.ndarray, root) -> torch.Tensor:
    """What training feeds the encoder: the dataset (``train.data.dataset_options``) reading a PNG."""
    (root / "images").mkdir(parents=True)
    Image.fromarray(image).save(root / "images" / "0.png")  # lossless
    conv = [{"from": "human", "value": "<image>\nHow far is the cone?"}, {"from": "gpt", "value": "2 m."}]
    write_records(root, [{"id": "s0", "image": "images/0.png", "conversations": conv}])
    tok = train_tokenizer([c["value"] for c in conv], vocab_size=300)
    options = dataset_options(DataConfig(), SimpleNamespace(encoder=encoder))
    return ConversationDataset(root, tok, **options)[0]["pixel_values"][0]


def _probe_pixels(encoder, image: np.ndarray, cache_dir) -> torch.Tensor:
    """What the probes' feature cache feeds the encoder."""
    seen = []
    real = encoder.forward_intermediates
    encoder.forward_intermediates = lambda pixels, layers=None: seen.append(pixels) or real(pixels, layers)
    extract_features(encoder, OneImage(image), cache_dir, image_size=encoder.spec.image_size)
    return seen[0][0]


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-dinov2"])
def test_train_encoder_and_probe_preprocessing_are_identical(name, tmp_path):
    encoder = create_encoder(name, seed=0)
    image = _image()
    own = preprocess_images([image], encoder.spec)[0]  # the encoder's own path
    train = _train_pixels(encoder, image, tmp_path / "data")
    probe = _probe_pixels(encoder, image, tmp_path / "cache")
    assert own.shape == (3, encoder.spec.image_size, encoder.spec.image_size)
    assert torch.equal(train, own) and torch.equal(probe, own)


def test_a_sliding_crop_is_the_encoder_input_where_it_overlaps():
    """The depth protocol's crops come from the same resize: the crop at the centre is the encoder's input."""
    transform = ImageTransform(32)
    image = _image(32, 96)
    crops = SlidingCrops(OneImage(image), transform)
    assert crops.offsets == [0, 32, 64]
    centre = torch.from_numpy(crops[1].image).permute(2, 0, 1)
    assert torch.equal(transform(centre.permute(1, 2, 0).numpy()[None])[0], transform([image])[0])


@pytest.mark.parametrize(
    ("h", "w", "side", "block"), [(40, 72, 80, 1), (30, 54, 80, 1), (160, 288, 80, 2), (90, 50, 32, 3)]
)
def test_a_marker_lands_at_the_same_place_in_image_and_target(h, w, side, block):
    """A bright block in the image and the same block in a target: the image's brightest input pixel is a
    marked target pixel, and the point reference at the block's centre weighs the patch that holds it."""
    r, c = (h // 3) // block * block, (2 * w // 3) // block * block  # off-centre, inside the crop
    image = np.zeros((h, w, 3), np.uint8)
    image[r : r + block, c : c + block] = 255
    target = np.zeros((h, w), np.int64)
    target[r : r + block, c : c + block] = 7
    transform = ImageTransform(side, interpolation="bicubic", patch_size=8)
    pixels = transform.resize_crop(image)[0]  # (S, S) red channel in [0, 1]
    marked = transform.target(target) == 7  # (S, S)
    assert 0 < marked.sum() <= (math.ceil(block * side / min(h, w)) + 1) ** 2  # the block, resized
    peak = np.unravel_index(int(pixels.argmax()), pixels.shape)
    assert marked[peak], (peak, np.argwhere(marked))
    weights = pixels.numpy() / pixels.sum().item()  # the image's centre of brightness: no half-pixel shift
    centre = np.array([(weights.sum(1) * np.arange(side)).sum(), (weights.sum(0) * np.arange(side)).sum()])
    tol = 0.25 * max(1.0, min(h, w) / side)  # shrinking, nearest keeps whole source pixels only
    assert np.abs(np.argwhere(marked).mean(0) - centre).max() < tol, (np.argwhere(marked).mean(0), centre)
    resample = ProbeSample(image=image, depth=target.astype(np.float32), seg=target.astype(np.uint8))
    out = resize_sample(resample, transform)
    assert np.array_equal(out.seg == 7, marked) and np.array_equal(out.depth == 7, marked)
    cols, vals = point_weights(Ref("point", 0, c + (block - 1) / 2, r + (block - 1) / 2), (w, h), side, 4)
    py, px = np.argwhere(marked).mean(0)
    assert cols[np.argmax(vals)] == int(py // (side / 4)) * 4 + int(px // (side / 4))
    cover = mask_coverage(target == 7, side, 4)
    assert cover.argmax() == cols[np.argmax(vals)]


def test_targets_resize_like_torch_nearest_exact():
    """Pixel-centre nearest neighbour (torch's ``nearest-exact``), up and down, dtype kept."""
    arr = np.random.default_rng(1).integers(0, 1000, (37, 61)).astype(np.int64)
    for side in (16, 37, 80):
        t = ImageTransform(side)
        g = crop_geometry(37, 61, side)
        ref = F.interpolate(torch.from_numpy(arr)[None, None].double(), size=g.resized, mode="nearest-exact")[
            0, 0
        ]
        assert np.array_equal(t.resize_target(arr), ref.long().numpy())
        assert np.array_equal(t.target(arr), ref.long().numpy()[g.top : g.top + side, g.left : g.left + side])
        assert t.target(arr).dtype == np.int64


def test_the_transform_is_resolved_from_the_spec_and_keys_the_caches(tmp_path):
    encoder = create_encoder("tiny-vit", seed=0)
    t = transform_for(encoder.spec, encoder.spec.image_size + 3)  # rounded down to whole patches
    assert t.side == encoder.spec.image_size and t.mean == encoder.spec.mean
    assert t.tokens_per_image == (encoder.spec.image_size // encoder.spec.patch_size) ** 2
    bilinear = ImageTransform(t.side, t.mean, t.std, "bilinear", t.patch_size)
    assert t.identity() != bilinear.identity()
    path = tmp_path / "a.png"
    Image.fromarray(_image()).save(path)
    assert cache_key(encoder, t, [path]) != cache_key(encoder, bilinear, [path])  # the training feature cache
    with pytest.raises(ValueError, match="known: bicubic, bilinear"):
        ImageTransform(32, interpolation="lanczos")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        ImageTransform(30, patch_size=8)

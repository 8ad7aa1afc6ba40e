"""Perception backends: tiny random checkpoints saved and loaded by path, batching, shapes, coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from spatialboost.datagen.real.perception import (
    BackendConfig,
    GroundTruth,
    build_backend,
    dominant_color,
    load_vocabulary,
)
from spatialboost.datagen.real.perception.base import Detection, box_iou, non_max_suppression
from spatialboost.datagen.real.perception.hf import Preprocess
from spatialboost.datagen.real.perception.tiny import save_tiny
from spatialboost.errors import UserError
from spatialboost.registry import UnknownNameError

SIZES = [(40, 60), (50, 50), (30, 70)]  # (H, W), deliberately different


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = str(save_tiny(name, tmp_path_factory.mktemp(name)))
        return cache[name]

    return get


def test_depth_pro_loads_by_path_and_batches(tiny_dir, images):
    one = build_backend("depth", "depth-pro", BackendConfig(model=tiny_dir("depth-pro"), batch_size=1))
    many = build_backend("depth", "depth-pro", BackendConfig(model=tiny_dir("depth-pro"), batch_size=3))
    keys = ["a", "b", "c"]
    r1, r3 = one.predict(images, keys), many.predict(images, keys)
    for (h, w), a, b in zip(SIZES, r1, r3, strict=True):
        assert a.depth.shape == (h, w) and a.depth.dtype == np.float32
        assert np.all(np.isfinite(a.depth)) and np.all(a.depth > 0)
        np.testing.assert_allclose(a.depth, b.depth, rtol=1e-4)  # batching does not change results
        # K is a centred pinhole whose focal length matches the predicted field of view
        assert a.K[0, 2] == pytest.approx(w / 2) and a.K[1, 2] == pytest.approx(h / 2)
        assert a.K[0, 0] == pytest.approx(0.5 * w / np.tan(0.5 * a.fov_x))


def test_sam2_one_mask_per_box(tiny_dir, images):
    seg = build_backend("segmenter", "sam2", BackendConfig(model=tiny_dir("sam2"), batch_size=2))
    boxes = [np.array([[1, 2, 20, 30.0], [0, 0, 60, 40]]), np.zeros((0, 4)), np.array([[5, 5, 50, 25.0]])]
    masks = seg.segment(images, boxes, ["a", "b", "c"])
    assert [m.shape for m in masks] == [(2, 40, 60), (0, 50, 50), (1, 30, 70)]
    assert all(m.dtype == bool for m in masks)
    # the decoder is per image: the same image+box alone gives the same mask as inside a batch
    alone = seg.segment(images[2:], boxes[2:], ["c"])
    np.testing.assert_array_equal(alone[0], masks[2])


@pytest.mark.parametrize("name", ["owlv2", "grounding-dino"])
def test_detectors_boxes_inside_image_labels_from_vocabulary(name, tiny_dir, images):
    vocab = ["chair", "cup", "red dog"]
    det = build_backend("detector", name, BackendConfig(model=tiny_dir(name), batch_size=2, threshold=0.0))
    out = det.detect(images, vocab, ["a", "b", "c"])
    assert len(out) == len(images)
    for (h, w), dets in zip(SIZES, out, strict=True):
        assert 0 < len(dets) <= 20
        for d in dets:
            assert d.label in vocab and 0.0 <= d.score <= 1.0
            assert 0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True)
    strict = build_backend("detector", name, BackendConfig(model=tiny_dir(name), threshold=1.01))
    assert strict.detect(images[:1], vocab, ["a"]) == [[]]


def test_unknown_backend_lists_known():
    with pytest.raises(UnknownNameError, match="depth-pro"):
        build_backend("depth", "midas")


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="model-path"):
        build_backend("depth", "depth-pro", BackendConfig(model=str(tmp_path / "nope")))


def test_preprocess_normalises_and_resizes():
    pre = Preprocess(8, 12, (0.2, 0.4, 0.6), (0.1, 0.2, 0.3))
    img = np.zeros((5, 7, 3), np.uint8)
    img[...] = (51, 102, 153)  # exactly 255 * mean
    x = pre([img, img[:3]])
    assert x.shape == (2, 3, 8, 12)
    np.testing.assert_allclose(x.numpy(), 0.0, atol=1e-5)


def test_dominant_color_names():
    img = np.zeros((4, 4, 3), np.uint8)
    for rgb, name in [((220, 25, 25), "red"), ((30, 60, 225), "blue"), ((40, 170, 50), "green"), ((245, 245, 245), "white"),
                      ((10, 10, 10), "black"), ((128, 128, 128), "gray"), ((240, 215, 30), "yellow"), ((20, 195, 210), "cyan")]:  # fmt: skip
        img[...] = rgb
        assert dominant_color(img) == name, rgb
    mask = np.zeros((4, 4), bool)
    assert dominant_color(img, mask) is None


def test_oracle_backends_read_and_degrade_truth():
    depth = np.full((20, 30), 2.0, np.float32)
    inst = np.zeros((20, 30), np.int32)
    inst[5:15, 3:13] = 1
    inst[2:8, 20:28] = 2
    gt = GroundTruth(depth, np.eye(3), inst, {1: "chair", 2: "cup"})
    truth = {"k": gt}.__getitem__
    img = np.zeros((20, 30, 3), np.uint8)
    dets = build_backend("detector", "oracle", truth=truth).detect([img], [], ["k"])[0]
    assert [d.label for d in dets] == ["chair", "cup"]
    np.testing.assert_array_equal(dets[0].box, [3, 5, 13, 15])
    masks = build_backend("segmenter", "oracle", truth=truth).segment(
        [img], [np.stack([d.box for d in dets])], ["k"]
    )[0]
    np.testing.assert_array_equal(masks[0], inst == 1)
    eroded = build_backend("segmenter", "oracle", BackendConfig(options={"erode_px": 1}), truth)
    m = eroded.segment([img], [dets[0].box[None]], ["k"])[0][0]
    assert m.sum() == 8 * 8 and not (m & ~(inst == 1)).any()
    noisy = build_backend("depth", "oracle", BackendConfig(options={"depth_noise": 0.05, "seed": 3}), truth)
    d1, d2 = noisy.predict([img], ["k"])[0].depth, noisy.predict([img], ["k"])[0].depth
    np.testing.assert_array_equal(d1, d2)  # seeded per key
    assert 0.02 < np.std(d1 / 2.0) < 0.08
    exact = build_backend("depth", "oracle", truth=truth).predict([img], ["k"])[0]
    np.testing.assert_array_equal(exact.depth, depth)


def test_nms_and_iou():
    a = Detection(np.array([0, 0, 10, 10.0]), "x", 0.9)
    b = Detection(np.array([1, 1, 10, 10.0]), "y", 0.8)
    c = Detection(np.array([20, 20, 30, 30.0]), "z", 0.7)
    assert box_iou(a.box[None], a.box[None])[0, 0] == pytest.approx(1.0)
    assert [d.label for d in non_max_suppression([c, b, a])] == ["x", "z"]


def test_vocabulary_file(tmp_path):
    assert "chair" in load_vocabulary(None)
    p = tmp_path / "v.txt"
    p.write_text("# mine\nMug\n\nmug\nfire hydrant\n")
    assert load_vocabulary(p) == ["mug", "fire hydrant"]
    p.write_text("# nothing\n")
    with pytest.raises(UserError):
        load_vocabulary(p)

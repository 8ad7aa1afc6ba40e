"""Every probe-dataset reader on tiny files written here in the real on-disk format."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from eval_stubs import CLASSES, fake_scene
from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.errors import UserError
from spatialboost.eval.datasets import DATASETS, build_dataset
from spatialboost.eval.datasets.synthetic import SEED_OFFSET, dominant_class, split_seeds

H, W = 12, 16


def _rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def test_registry_names_and_unknown():
    assert DATASETS.names() == ["ade20k", "imagefolder", "nyu", "rgbd", "synthetic", "voc"]
    with pytest.raises(UserError, match="known: ade20k"):
        build_dataset("kitti:/x", "train")
    with pytest.raises(UserError, match="needs a path"):
        build_dataset("voc", "train")


def test_synthetic_targets_and_disjoint_seeds():
    assert split_seeds("train", 3) == [SEED_OFFSET, SEED_OFFSET + 1, SEED_OFFSET + 2]
    assert not set(split_seeds("train", 50)) & set(split_seeds("test", 50))
    ds = build_dataset("synthetic", "test", num_scenes=3, scene_fn=fake_scene)
    scene = fake_scene(ds.seeds[1])
    s = ds[1]
    np.testing.assert_array_equal(s.image, scene.views[0].rgb)
    assert s.depth[0, 0] == 0 and (s.seg != 0).all() and ds.seg_classes == CLASSES
    # label = class of the object with the most visible pixels
    inst, sem = scene.views[0].instance, scene.views[0].semantic
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    assert s.label == sem[inst == ids[np.argmax(counts)]][0]
    img, target = ds.item(0, "cls")
    assert isinstance(target, int)


def test_dominant_class_by_hand():
    sem = np.array([[1, 3, 3], [1, 4, 1]], np.uint8)
    inst = np.array([[0, 1, 1], [0, 2, 0]], np.int32)
    assert dominant_class(sem, inst) == 3
    assert dominant_class(sem, np.zeros_like(inst)) == 1  # no object: most frequent non-void class


def test_nyu_mat_v5_with_splits(tmp_path):
    n = 4
    images = np.stack([_rgb(i) for i in range(n)], axis=-1)  # (H, W, 3, N) as MATLAB stores it
    depths = np.random.default_rng(0).uniform(0.5, 5, (H, W, n)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 5, (H, W, n)).astype(np.uint16)
    scipy.io.savemat(
        tmp_path / "nyu_depth_v2_labeled.mat", {"images": images, "depths": depths, "labels": labels}
    )
    scipy.io.savemat(
        tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [3]]), "testNdxs": np.array([[2], [4]])}
    )
    train = build_dataset(f"nyu:{tmp_path / 'nyu_depth_v2_labeled.mat'}", "train")
    test = build_dataset(f"nyu:{tmp_path}", "test")  # a folder holding the .mat works too
    assert len(train) == 2 and len(test) == 2
    s = test[1]  # 1-based index 4 -> image 3
    np.testing.assert_array_equal(s.image, images[..., 3])
    np.testing.assert_allclose(s.depth, depths[..., 3])
    expect = labels[..., 3].astype(np.int64)
    expect[expect == 0] = SEG_IGNORE_INDEX
    np.testing.assert_array_equal(s.seg, expect)


def test_nyu_mat_v73_says_what_to_install(tmp_path):
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    )
    path.write_bytes(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM" + b"\x00" * 64)
    try:
        import h5py  # noqa: F401

        pytest.skip("h5py installed: the v7.3 path reads HDF5 instead")
    except ImportError:
        pass
    with pytest.raises(UserError, match="h5py"):
        build_dataset(f"nyu:{path}", "train")


def test_nyu_folder_layout(tmp_path):
    depth_mm = np.random.default_rng(2).integers(0, 10000, (H, W)).astype(np.uint16)
    _png(tmp_path / "train" / "bedroom_0001" / "rgb_00007.jpg", _rgb(7))
    _png(tmp_path / "train" / "bedroom_0001" / "sync_depth_00007.png", depth_mm)
    _png(tmp_path / "test" / "kitchen" / "rgb_00001.png", _rgb(1))
    _png(tmp_path / "test" / "kitchen" / "depth_00001.png", depth_mm)
    _png(tmp_path / "test" / "kitchen" / "rgb_00002.png", _rgb(2))  # no depth -> skipped
    train, test = build_dataset(f"nyu:{tmp_path}", "train"), build_dataset(f"nyu:{tmp_path}", "test")
    assert len(train) == 1 and len(test) == 1 and train.tasks == ("depth",)
    np.testing.assert_allclose(test[0].depth, depth_mm / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(test[0].image, _rgb(1))


def test_ade20k_layout_reduces_zero_label(tmp_path):
    ann = np.array([[0, 1, 150] * (W // 3 + 1)][0][:W] * np.ones((H, 1)), dtype=np.uint8)
    for split, sub in (("train", "training"), ("val", "validation")):
        _png(tmp_path / "images" / sub / f"ADE_{sub}_00000001.jpg", _rgb(0))
        _png(tmp_path / "annotations" / sub / f"ADE_{sub}_00000001.png", ann, mode="L")
        ds = build_dataset(f"ade20k:{tmp_path}", split)
        seg = ds[0].seg
        assert len(ds) == 1 and seg.shape == (H, W)
        assert seg[0, 0] == SEG_IGNORE_INDEX and seg[0, 1] == 0 and seg[0, 2] == 149
    assert len(ds.seg_classes) == 150


def _voc(tmp_path, ids=("2007_000032",)):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    label = np.zeros((H, W), np.uint8)
    label[2:6, 3:9] = 15  # person
    label[1, :] = 255  # boundary
    for i in ids:
        _png(root / "JPEGImages" / f"{i}.jpg", _rgb(3))
        im = Image.fromarray(label, mode="P")
        im.putpalette([c for k in range(256) for c in (k, 255 - k, (k * 7) % 256)])
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        im.save(root / "SegmentationClass" / f"{i}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root, label


def test_voc_palette_png_and_ignore(tmp_path):
    _, label = _voc(tmp_path)
    ds = build_dataset(f"voc:{tmp_path}", "val")
    assert len(ds) == 1 and ds.seg_classes[15] == "person"
    np.testing.assert_array_equal(ds[0].seg, label)  # palette indices, not colours


def test_voc_path_escape_and_bad_file_named(tmp_path):
    root, _ = _voc(tmp_path)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("../../../../etc/passwd\n")
    with pytest.raises(UserError, match="no usable id.*outside"):
        build_dataset(f"voc:{tmp_path}", "train")
    (root / "JPEGImages" / "2007_000032.jpg").write_bytes(b"not a jpeg")
    ds = build_dataset(f"voc:{root}", "val")
    with pytest.raises(UserError, match="2007_000032.jpg"):
        ds[0]


def test_imagefolder(tmp_path):
    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            _png(tmp_path / split / cls / f"{k}.png", _rgb(k))
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored")
    train, val = (
        build_dataset(f"imagefolder:{tmp_path}", "train"),
        build_dataset(f"imagefolder:{tmp_path}", "val"),
    )
    assert train.cls_classes == ["cat", "dog"] and len(train) == 2 and len(val) == 2
    img, label = val.item(1, "cls")
    assert label == 1 and img.shape == (H, W, 3)
    with pytest.raises(UserError, match="no 'depth' targets"):
        val.item(0, "depth")

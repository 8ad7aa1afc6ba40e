"""The ``nyu-eigen`` depth protocol: ground-truth resolution, Eigen crop, 10 m cap, bilinear upsampling,
whole images by sliding crops; on tiny NYUv2 files in the real folder format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from spatialboost.cli import main
from spatialboost.errors import UserError
from spatialboost.eval.datasets import build_dataset
from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample
from spatialboost.eval.depth_protocol import (
    EIGEN_CROP,
    SlidingCrops,
    crop_offsets,
    eigen_metrics,
    resolve_protocol,
    upsample_bilinear,
)
from spatialboost.eval.job import run_job
from spatialboost.eval.runner import ProbeConfig
from spatialboost.image_transform import ImageTransform
from spatialboost.models.encoders import create_encoder

H, W = 480, 640
FAST = ["probes.depth.epochs=2", "data.max_train=3", "data.max_test=2"]


def test_eigen_metrics_by_hand():
    """Scored inside rows 45:471 x cols 41:601 where 0.001 < gt < 10 m; predictions clipped to [0.001, 10] m."""
    gt = np.full((H, W), 2.0)
    pred = gt.copy()
    pred[:45] = 7.0  # outside the crop: not scored
    pred[:, 601:] = 0.1
    gt[100:110, 100:110] = 12.0  # beyond 10 m: not scored
    pred[100:110, 100:110] = 3.0
    gt[200, 200:220] = 0.0  # invalid
    pred[300:310, 300:310] = 2.5  # 100 pixels off by 0.5 m
    pred[400, 400] = 50.0  # clipped to 10 m: off by 8 m
    n = (471 - 45) * (601 - 41) - 100 - 20
    m = eigen_metrics(pred, gt)
    assert m["rmse"] == pytest.approx(np.sqrt((100 * 0.25 + 64.0) / n))
    assert m["absrel"] == pytest.approx((100 * 0.25 + 4.0) / n)
    assert m["delta1"] == pytest.approx((n - 101) / n)  # 2.5 / 2 = 1.25 is not < 1.25: all 101 miss


def test_prediction_is_upsampled_bilinearly_with_pixel_centres():
    """A linear ramp sampled at low-resolution pixel centres comes back as the ramp at every inner pixel."""
    low = 1.0 + 0.01 * ((np.arange(80) + 0.5) * 8)[None, :].repeat(60, 0)  # (60, 80)
    high = upsample_bilinear(low, (H, W))
    x = np.arange(W) + 0.5
    np.testing.assert_allclose(high[:, 4:-4], np.broadcast_to(1.0 + 0.01 * x[4:-4], (H, W - 8)), atol=1e-5)


def test_sliding_crops_cover_the_image_and_average_overlaps():
    assert (
        crop_offsets(43, 32) == [0, 11]
        and crop_offsets(32, 32) == [0]
        and crop_offsets(100, 32) == [0, 23, 45, 68]
    )

    class One(ProbeDataset):
        name, tasks = "nyu", ("depth",)

        def __len__(self):
            return 1

        def _load(self, index):
            return ProbeSample(image=np.zeros((H, W, 3), np.uint8), depth=np.ones((H, W), np.float32))

    crops = SlidingCrops(One(), ImageTransform(32))
    assert crops.resized == (32, 43) and crops.offsets == [0, 11] and len(crops) == 2
    assert crops[1].image.shape == (32, 32, 3)
    stitched = crops.stitch(np.stack([np.full((32, 32), 1.0), np.full((32, 32), 3.0)]))
    assert stitched[0, 0] == 1.0 and stitched[0, 42] == 3.0 and stitched[0, 20] == 2.0


def test_protocol_resolution():
    assert resolve_protocol("auto", "nyu:/data/nyu") == "nyu-eigen"
    assert resolve_protocol("auto", "synthetic") == "probe"
    assert resolve_protocol("probe", "nyu:/x") == "probe"
    with pytest.raises(UserError, match="needs nyu: data"):
        resolve_protocol("nyu-eigen", "synthetic")
    with pytest.raises(UserError, match="480x640"):
        eigen_metrics(np.ones((4, 4)), np.ones((48, 64)))


def _nyu_folder(root, outside_test: float = 2.0) -> None:
    """NYUv2 "sync" folders: rgb_*.jpg + sync_depth_*.png (uint16 mm) for train, rgb_*.png + depth_*.png for test.

    The scene is a wall whose depth grows left to right; in the test split the ground truth outside the
    Eigen crop is ``outside_test`` metres and a block inside it is 12 m (beyond the cap)."""
    rng = np.random.default_rng(0)
    x = np.linspace(1.5, 4.0, W, dtype=np.float32)
    for split, count in (("train", 4), ("test", 2)):
        folder = root / split / "scene_0001"
        folder.mkdir(parents=True)
        for i in range(count):
            depth = np.broadcast_to(x + 0.1 * i, (H, W)).copy()
            rgb = np.clip(np.stack([depth * 60, 255 - depth * 50, rng.integers(0, 40, (H, W))], -1), 0, 255)
            if split == "test":
                inside = depth.copy()
                depth[:] = outside_test
                r0, r1, c0, c1 = EIGEN_CROP
                depth[r0:r1, c0:c1] = inside[r0:r1, c0:c1]
                depth[200:240, 300:340] = 12.0
            stem = f"{i:05d}"
            ext, name = (
                ("jpg", f"sync_depth_{stem}.png") if split == "train" else ("png", f"depth_{stem}.png")
            )
            Image.fromarray(rgb.astype(np.uint8)).save(folder / f"rgb_{stem}.{ext}")
            Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(folder / name)


@pytest.mark.slow
def test_probe_names_and_applies_the_eigen_protocol_on_nyu(tmp_path):
    data = tmp_path / "nyu"
    _nyu_folder(data)
    out = tmp_path / "out"
    rc = main(["probe", "--encoder", "tiny-dinov2", "--task", "depth", "--data", f"nyu:{data}", "--seeds", "1",
               "--image-size", "32", "--out", str(out), *FAST])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    (run,) = res["runs"]
    assert run["protocol"]["protocol"] == "nyu-eigen" and run["protocol"]["eval_resolution"] == [H, W]
    assert run["protocol"]["eigen_crop"] == list(EIGEN_CROP) and run["protocol"]["crops_per_image"] == 2
    assert res["depth_protocol"].startswith("nyu-eigen") and "nyu-eigen" in (out / "results.md").read_text()
    assert np.isfinite(run["metrics"]["rmse"])


@pytest.mark.slow
def test_ground_truth_outside_the_eigen_crop_or_beyond_10m_is_not_scored(tmp_path):
    """Same images and train data; the test ground truth differs only outside the crop: same numbers under
    nyu-eigen, different ones at the probe resolution (whose centre crop includes rows 0:45)."""
    results = {}
    for outside in (2.0, 9.0):
        data = tmp_path / f"nyu{outside}"
        _nyu_folder(data, outside_test=outside)
        for protocol in ("nyu-eigen", "probe"):
            cfg = ProbeConfig(tasks=["depth"], seeds=1, out=str(tmp_path / f"out-{outside}-{protocol}"))
            cfg.data.spec, cfg.features.image_size = f"nyu:{data}", 32
            cfg.probes.depth.epochs, cfg.probes.depth.protocol = 2, protocol
            res = run_job({"encoder": create_encoder("tiny-vit", seed=1)}, cfg)
            results[(outside, protocol)] = res.summary["runs"][0]["metrics"]
    assert results[(2.0, "nyu-eigen")] == results[(9.0, "nyu-eigen")]
    assert results[(2.0, "probe")]["rmse"] != results[(9.0, "probe")]["rmse"]


def test_nyu_eigen_needs_nyu_data(tmp_path, capsys):
    rc = main(["probe", "--encoder", "tiny-vit", "--task", "depth", "--data", "synthetic", "--out", str(tmp_path),
               "probes.depth.protocol=nyu-eigen"])  # fmt: skip
    assert rc == 2 and "needs nyu: data" in capsys.readouterr().err


def test_real_folder_reader_gives_480x640_ground_truth(tmp_path):
    _nyu_folder(tmp_path)
    assert build_dataset(f"nyu:{tmp_path}", "test")[0].depth.shape == (H, W)

"""The 3D probes: geometry helpers by hand, the multi-view data (synthetic + RGB-D folders) and the probes'
invariants with oracle features (features that encode the true 3D position / class vs random ones)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spatialboost.cli import main
from spatialboost.datagen.real.rgbd import export_scene
from spatialboost.datagen.scenes.geometry import camera_to_world, look_at, project_points, world_to_camera
from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene
from spatialboost.errors import UserError
from spatialboost.eval.datasets.multiview import RGBDMultiView, SyntheticMultiView, build_multiview
from spatialboost.eval.features import FeatureSet
from spatialboost.eval.geometry3d import (
    _kabsch_batch,
    alignment_rmse,
    kabsch,
    mutual_nearest_neighbours,
    patch_centre_pixels,
    probe_intrinsics,
    ransac_kabsch,
    relative_pose,
    rotation_angle_deg,
    voxel_keep,
)
from spatialboost.eval.probes3d import Probe3DConfig, SceneFeatures, run_probe_3d
from spatialboost.models.encoders import create_encoder


def _rotation(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


# --- geometry -------------------------------------------------------------------------------------------


def test_kabsch_recovers_a_rigid_transform_and_never_reflects():
    rng = np.random.default_rng(0)
    R, t = _rotation(rng), rng.normal(size=3)
    p = rng.normal(size=(10, 3))
    T = kabsch(p, p @ R.T + t)
    np.testing.assert_allclose(T[:3, :3], R, atol=1e-9)
    np.testing.assert_allclose(T[:3, 3], t, atol=1e-9)
    mirrored = p * np.array([1, 1, -1])  # the best fit without reflection is still a rotation
    assert np.linalg.det(kabsch(p, mirrored)[:3, :3]) == pytest.approx(1.0)
    Rb, tb = _kabsch_batch(np.stack([p[:4], p[4:8]]),
                           np.stack([p[:4] @ R.T + t, mirrored[4:8]]))  # fmt: skip
    np.testing.assert_allclose(Rb[0], R, atol=1e-9)
    np.testing.assert_allclose(tb[0], t, atol=1e-9)
    np.testing.assert_allclose(Rb[1], kabsch(p[4:8], mirrored[4:8])[:3, :3], atol=1e-9)


def test_ransac_kabsch_ignores_outliers_and_is_seeded():
    rng = np.random.default_rng(1)
    R, t = _rotation(rng), np.array([0.5, -0.2, 1.0])
    p = rng.uniform(-2, 2, size=(40, 3))
    q = p @ R.T + t
    q[:16] = rng.uniform(-2, 2, size=(16, 3))  # 40% outliers
    T, inliers = ransac_kabsch(p, q, 300, 0.05, np.random.default_rng(7))
    assert inliers[16:].all() and not inliers[:16].any()
    np.testing.assert_allclose(T[:3, :3], R, atol=1e-9)
    T2, _ = ransac_kabsch(p, q, 300, 0.05, np.random.default_rng(7))
    np.testing.assert_array_equal(T, T2)
    T_few, none = ransac_kabsch(p[:2], q[:2], 10, 0.05, np.random.default_rng(0))
    assert np.array_equal(T_few, np.eye(4)) and not none.any()


def test_mutual_nearest_neighbours_by_hand():
    fa = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    fb = np.array([[0.0, 2.0], [3.0, 0.1]])
    ia, ib, sim = mutual_nearest_neighbours(fa, fb)
    # a0 -> b1, b1 -> a0 (a0 is closer to b1 than a2 in cosine); a1 <-> b0; a2 -> b1 but b1 prefers a0
    assert ia.tolist() == [0, 1] and ib.tolist() == [1, 0] and sim[1] == pytest.approx(1.0)
    assert mutual_nearest_neighbours(fa[:0], fb)[0].size == 0


def test_patch_centres_rotation_angle_relative_pose_rmse_voxels():
    xs, ys = patch_centre_pixels((2, 2), 8)
    assert xs.tolist() == [2, 6, 2, 6] and ys.tolist() == [2, 2, 6, 6]
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    assert rotation_angle_deg(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])) == pytest.approx(30.0)
    a = look_at(np.array([2.0, 0, 1]), np.zeros(3))
    b = look_at(np.array([0, 2.0, 1]), np.zeros(3))
    p_cam_a = np.array([[0.1, 0.2, 2.0]])
    T = relative_pose(a, b)  # camera a -> camera b
    np.testing.assert_allclose(
        p_cam_a @ T[:3, :3].T + T[:3, 3], world_to_camera(camera_to_world(p_cam_a, a), b)
    )
    shifted = T.copy()
    shifted[:3, 3] += [0.3, 0.4, 0.0]
    assert alignment_rmse(shifted, T, np.random.default_rng(0).normal(size=(5, 3))) == pytest.approx(0.5)
    keep = voxel_keep(np.array([[0.01, 0, 0], [0.02, 0, 0], [0.5, 0, 0]]), 0.1)
    assert keep.tolist() == [0, 2]


def test_probe_intrinsics_follow_the_resize_and_centre_crop():
    """A point seen at continuous pixel (u, v) of a 48 x 32 image lands at (u/2 - 4, v/2) in the 16 x 16 crop."""
    K = np.array([[40.0, 0, 24.0], [0, 40.0, 16.0], [0, 0, 1]])
    K16 = probe_intrinsics(
        K, 32, 48, 16
    )  # height 32, width 48 -> shorter side 16, 24 x 16, crop 4 px left/right
    pts = np.array([[0.3, -0.2, 2.0], [-0.5, 0.1, 3.0]])
    uv, _ = project_points(pts, K)
    uv16, _ = project_points(pts, K16)
    np.testing.assert_allclose(uv16, uv * 0.5 - [4.0, 0.0])


# --- data -----------------------------------------------------------------------------------------------


def test_synthetic_multiview_views_and_cameras_match_the_generator():
    ds = SyntheticMultiView("test", num_scenes=2, views=3, image_size=32)
    assert len(ds) == 6 and ds.scenes() == [[0, 1, 2], [3, 4, 5]] and ds.tasks == ("depth", "seg")
    scene = generate_scene(ds.seeds[1], SyntheticConfig(image_size=32, views=3))
    sample = ds[4]
    np.testing.assert_array_equal(sample.image, scene.views[1].rgb)
    assert (sample.seg == 255).sum() == (scene.views[1].semantic == 0).sum()
    cam = ds.camera(4)
    np.testing.assert_array_equal(cam.cam_to_world, scene.views[1].camera.cam_to_world)
    np.testing.assert_array_equal(cam.K, scene.views[1].camera.K)
    angle = rotation_angle_deg(relative_pose(ds.camera(3).cam_to_world, ds.camera(4).cam_to_world))
    assert 10.0 < angle < 60.0  # the engine's azimuth step is 15-40 degrees
    assert ds.identity != SyntheticMultiView("train", num_scenes=2, views=3, image_size=32).identity


def _write_rgbd(root, n_seq: int = 3, size: int = 32):
    for k in range(n_seq):
        scene = generate_scene(500 + k, SyntheticConfig(image_size=size, views=3))
        scene.scene_id = f"seq{k}"
        export_scene(scene, root)
    return root


def test_rgbd_folders_read_as_posed_views(tmp_path):
    root = _write_rgbd(tmp_path / "rgbd")
    (root / "seq2" / "pose" / "000001.txt").unlink()  # a frame without a pose is skipped and recorded
    test = RGBDMultiView(root, "test")
    train = RGBDMultiView(root, "train")
    assert test.scene_names == ["seq2"] and train.scene_names == ["seq0", "seq1"] and len(test) == 2
    assert any("000001" in s and "pose" in s for s in test.skipped)
    assert test.seg_classes[0] == "void" and "floor" not in test.seg_classes  # instances only: objects
    scene = generate_scene(502, SyntheticConfig(image_size=32, views=3))
    s = test[1]  # frame 000002 of seq2
    np.testing.assert_allclose(s.depth, scene.views[2].depth, atol=6e-4)  # millimetre PNG
    obj = scene.views[2].instance > 0
    assert (s.seg[obj] != 255).all() and (s.seg[~obj] == 255).all()
    names = [test.seg_classes[c] for c in s.seg[obj]]
    assert set(names) == {o.name for o in scene.objects if (scene.views[2].instance == o.id).any()}
    np.testing.assert_allclose(test.camera(1).cam_to_world, scene.views[2].camera.cam_to_world, atol=1e-9)
    with pytest.raises(UserError, match="posed multi-view"):
        build_multiview("nyu:/x", "test", 2, 2, 32)


def test_rgbd_user_errors(tmp_path):
    root = _write_rgbd(tmp_path / "one", n_seq=1)
    with pytest.raises(UserError, match="no usable sequence in the train split"):
        RGBDMultiView(root, "train")
    (root / "seq0" / "labels.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="labels.json"):
        RGBDMultiView(root, "test")
    with pytest.raises(UserError, match="not found"):
        build_multiview(f"rgbd:{tmp_path / 'missing'}", "test", 2, 2, 32)


# --- probes with oracle features ------------------------------------------------------------------------


def _scene_features(split: str, kind: str, n: int = 4, size: int = 32, patch: int = 4) -> SceneFeatures:
    """Features of a synthetic multi-view split from ground truth: 'position' (random Fourier features of the
    patch centre's world point), 'class' (one-hot of its class) or 'random'."""
    ds = SyntheticMultiView(split, num_scenes=n, views=4, image_size=size)
    samples = [ds[i] for i in range(len(ds))]
    g = size // patch
    depth, seg = np.stack([s.depth for s in samples]), np.stack([s.seg for s in samples])
    empty = FeatureSet(np.zeros((len(ds), 1), np.float32), np.zeros((len(ds), g * g, 1), np.float32), (g, g), size,
                       depth, seg, None)  # fmt: skip
    sf = SceneFeatures.build(empty, ds)
    rng = np.random.default_rng(0)
    B, phase = rng.normal(0, 1 / 0.15, (256, 3)), rng.uniform(0, 2 * np.pi, 256)
    xs, ys = patch_centre_pixels((g, g), size)
    feats = []
    for i in range(len(ds)):
        if kind == "position":
            pts, _ = sf.points(i)
            feats.append(np.cos(camera_to_world(pts, sf.poses[i]) @ B.T + phase))
        elif kind == "class":
            feats.append(np.eye(32)[np.where(seg[i][ys, xs] == 255, 0, seg[i][ys, xs])])
        else:
            feats.append(rng.normal(size=(g * g, 32)))
    sf.fs = FeatureSet(empty.cls, np.stack(feats).astype(np.float32), (g, g), size, depth, seg, None)
    return sf


@pytest.fixture(scope="module")
def oracle_sets():
    sets = {k: (_scene_features("train", k), _scene_features("test", k)) for k in ("class", "random")}
    return {"position": (None, _scene_features("test", "position")), **sets}


def test_correspondence_and_registration_reward_3d_aware_features(oracle_sets):
    cfg = Probe3DConfig(ransac_iterations=200)
    corr = {k: run_probe_3d("corr", None, te, cfg, 0) for k, (_, te) in oracle_sets.items()}
    reg = {k: run_probe_3d("register", None, te, cfg, 0) for k, (_, te) in oracle_sets.items()}
    assert corr["position"].metrics["recall@0.2m"] > 0.5 > 0.05 > corr["random"].metrics["recall@0.2m"]
    assert corr["position"].metrics["recall@0.4m"] >= corr["position"].metrics["recall@0.2m"]
    assert (
        corr["position"].protocol["pairs"] == 4 * 6 and sum(corr["position"].protocol["pairs_per_bin"]) == 24
    )
    assert any(" rot[" in k for k in corr["position"].metrics)
    assert reg["position"].metrics["rr@0.2m"] > 0.6 and reg["random"].metrics["rr@0.2m"] < 0.1
    assert reg["position"].metrics["rte"] < 0.2 < reg["random"].metrics["rte"]
    assert reg["position"].metrics["rre"] < 5.0 < reg["random"].metrics["rre"]
    again = run_probe_3d("register", None, oracle_sets["position"][1], cfg, 0)
    assert again.metrics == reg["position"].metrics  # seeded RANSAC


def test_sem3d_rewards_class_aware_features(oracle_sets):
    cfg = Probe3DConfig()
    cfg.sem3d.epochs = 5
    res = {k: run_probe_3d("sem3d", tr, te, cfg, 0) for k, (tr, te) in oracle_sets.items() if k != "position"}
    assert res["class"].metrics["acc"] > res["random"].metrics["acc"] + 0.1
    assert res["class"].metrics["miou"] > res["random"].metrics["miou"]
    assert res["class"].protocol["train_points"] > 100 and res["class"].protocol["test_points"] > 100
    with pytest.raises(ValueError, match="train split"):
        run_probe_3d("sem3d", None, oracle_sets["class"][1], cfg, 0)


# --- the command ----------------------------------------------------------------------------------------


FAST_3D = ["probes3d.num_train=3", "probes3d.num_test=2", "probes3d.ransac_iterations=50",
           "probes3d.sem3d.epochs=2"]  # fmt: skip


@pytest.mark.slow
def test_cli_all3d_base_and_boosted_same_seeds(tmp_path):
    out = tmp_path / "out"
    rc = main(["probe", "--encoder", "tiny-vit", "--baseline", "tiny-vit", "--task", "all3d", "--seeds", "2",
               "--out", str(out), "--image-size", "32", *FAST_3D])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert {r["probe"] for r in res["runs"]} == {"corr", "register", "sem3d"}
    names = ("baseline (tiny-vit)", "encoder (tiny-vit)")  # named by the flags that gave them
    assert list(res["encoders"]) == list(names)
    for probe in ("corr", "register", "sem3d"):
        for enc in names:
            assert sorted(r["seed"] for r in res["runs"] if r["probe"] == probe and r["encoder"] == enc) == [
                0,
                1,
            ]
    keys = {e: {(r["probe"], r["metric"]) for r in res["rows"] if r["encoder"] == e} for e in names}
    assert keys[names[0]] == keys[names[1]] and ("corr", "recall@0.2m") in keys[names[0]]
    md = (out / "results.md").read_text()
    assert "## 3D probes" in md and "| register | rte ↓ |" in md and "view pairs" in md
    assert (out / "corr_rotation.png").is_file() and res["benches"]["3d"]["splits"]["test"]["scenes"] == 2


@pytest.mark.slow
def test_cli_all3d_on_rgbd_folders_and_with_2d_tasks(tmp_path):
    root = _write_rgbd(tmp_path / "rgbd")
    out = tmp_path / "out"
    rc = main(["probe", "--encoder", "tiny-vit", "--data", f"rgbd:{root}", "--seeds", "1", "--out", str(out),
               "--image-size", "32", "tasks=[depth,all3d]", "probes.depth.epochs=2", *FAST_3D])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert {r["probe"] for r in res["runs"]} == {"depth", "corr", "register", "sem3d"}
    assert res["benches"]["3d"]["splits"]["train"]["scenes"] == 2
    assert (
        main(["probe", "--encoder", "tiny-vit", "--task", "corr", "--data", "voc:/x", "--out", str(out)]) == 2
    )


def test_3d_probe_runs_at_a_non_multiple_size(tmp_path):
    """An encoder whose patch does not divide the probe size gets the largest multiple (features resize)."""
    from spatialboost.eval.job import run_job
    from spatialboost.eval.runner import ProbeConfig

    cfg = ProbeConfig(tasks=["corr"], seeds=1, out=str(tmp_path))
    cfg.features.image_size, cfg.probes3d.num_test = 36, 1
    res = run_job({"enc": create_encoder("tiny-vit", seed=0)}, cfg)  # patch 8
    (row,) = [r for r in res.summary["rows"] if r["metric"] == "recall@0.2m"]
    assert row["protocol"]["image_size"] == 32 and row["protocol"]["grid"] == [4, 4]


def test_paired_differences_over_units_say_whether_beyond_noise():
    from spatialboost.eval.report_benches import paired_differences, paired_lines

    def row(enc, values):
        unit = {"unit": "view pair", "values": {"recall@0.2m": values}}
        return {"encoder": enc, "probe": "corr", "metric": "recall@0.2m", "protocol": {"per_unit": unit}}

    base = [0.1, 0.2, 0.3, 0.4]
    summary = {"pairs": {"boosted": "base"},
               "rows": [row("base", base), row("boosted", [v + 0.1 + 0.01 * (-1) ** i for i, v in enumerate(base)])]}  # fmt: skip
    (d,) = paired_differences(summary)
    assert d["mean"] == pytest.approx(0.1) and d["n"] == 4 and d["beyond_noise"]
    assert d["se"] == pytest.approx(np.std([0.11, 0.09, 0.11, 0.09], ddof=1) / 2)
    summary["rows"][1] = row("boosted", [v + (0.1 if i % 2 else -0.1) for i, v in enumerate(base)])
    (d,) = paired_differences(summary)
    assert not d["beyond_noise"] and "within noise" in "\n".join(paired_lines(summary))


def test_report_noise_rule_uses_the_paired_units_when_seeds_have_no_spread():
    from spatialboost.eval.report import beyond_noise, delta_text

    def row(values, mean):
        unit = {"unit": "view pair", "values": {"recall@0.2m": values}}
        return {"metric": "recall@0.2m", "mean": mean, "std": 0.0, "n": 3, "protocol": {"per_unit": unit}}

    base = row([0.1, 0.2, 0.3, 0.4], 0.25)
    noisy = row([0.3, 0.0, 0.5, 0.2], 0.25 + 0.0)  # differences +0.2, -0.2, +0.2, -0.2: mean 0
    noisy["mean"] = 0.26
    assert beyond_noise(base, noisy) is False and "within noise" in delta_text(base, noisy)
    clear = row([0.21, 0.29, 0.41, 0.49], 0.35)
    assert beyond_noise(base, clear) is True and delta_text(base, clear).endswith("better")

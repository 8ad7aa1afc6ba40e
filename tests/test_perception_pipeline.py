"""``spatialboost generate images`` end to end: oracle RGB-D folders, tiny real models on a junk folder,
resume, sharding and per-stage caching."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialboost.cli import main
from spatialboost.datagen.real import rgbd
from spatialboost.datagen.real.perception.tiny import save_tiny
from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene
from spatialboost.dataset_format import iter_records, load_gt_arrays


@pytest.fixture(scope="module")
def rgbd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbd")
    for seed in range(3):
        rgbd.export_scene(generate_scene(seed, SyntheticConfig(image_size=96), scene_id=f"scene{seed}"), root)
    return root


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    return {name: str(save_tiny(name, base / name)) for name in ("depth-pro", "sam2", "owlv2")}


def test_oracle_rgbd_folder_to_dataset(rgbd_root, tmp_path):
    out = tmp_path / "ds"
    args = ["generate", "images", "--input", str(rgbd_root), "--out", str(out), "--depth", "oracle",
            "--detector", "oracle", "--segmenter", "oracle", "--no-progress", "--shard-size", "2"]  # fmt: skip
    assert main(args) == 0
    records = list(iter_records(out))
    assert len(records) == 3
    for r in records:
        assert r["conversations"] and all(t["value"] for t in r["conversations"])
        _, meta = load_gt_arrays(out, r["id"])
        assert meta["source"] == "images" and meta["scene_meta"]["frame"] == "floor"
        assert len(meta["objects"]) >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_skipped"] == []
    assert main(args) == 0  # resume: nothing to do, same result
    assert len(list(iter_records(out))) == 3


def test_provided_geometry_and_multiview(rgbd_root, tmp_path):
    out = tmp_path / "mv"
    seq = rgbd.export_scene(
        generate_scene(7, SyntheticConfig(image_size=80, views=2), scene_id="mv"), tmp_path / "in"
    )
    args = ["generate", "images", "--input", str(seq), "--out", str(out), "--depth", "provided", "--detector",
            "provided", "--segmenter", "provided", "--multiview", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    (record,) = list(iter_records(out))
    assert isinstance(record["image"], list) and len(record["image"]) == 2
    arrays, meta = load_gt_arrays(out, record["id"])
    assert arrays["depth"].shape[0] == 2 and meta["scene_meta"]["fusion"] == "posed"


def _junk_folder(root: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(3):
        buf = BytesIO()
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(buf, "PNG")
        (root / f"photo{i}.png").write_bytes(buf.getvalue())
    (root / "empty.jpg").write_bytes(b"")
    (root / "readme.txt").write_text("not an image")
    (root / "cut.png").write_bytes(buf.getvalue()[:200])


def test_tiny_models_junk_folder_resume_and_stage_cache(tiny_models, tmp_path, monkeypatch):
    src = tmp_path / "photos"
    src.mkdir()
    _junk_folder(src)
    out = tmp_path / "ds"
    args = ["generate", "images", "--input", str(src), "--out", str(out), "--no-progress", "--threshold", "0.0",
            "--model-path", f"depth={tiny_models['depth-pro']}", "--model-path", f"segmenter={tiny_models['sam2']}",
            "--model-path", f"detector={tiny_models['owlv2']}", "--batch-size", "2", "--shard-size", "2"]  # fmt: skip
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s["file"] for s in manifest["input_skipped"]} == {"empty.jpg", "readme.txt", "cut.png"}
    records = list(iter_records(out))
    assert len(records) == 3 and all(r["conversations"] for r in records)
    assert len(list((out / "cache" / "depth").glob("*.npz"))) == 3

    # a crash after the depth stage: detections, masks and shards are lost, depth is cached
    for stage in ("detector", "segmenter"):
        for p in (out / "cache" / stage).glob("*.npz"):
            p.unlink()
    for p in (out / "state").glob("*.json"):
        p.unlink()
    from spatialboost.datagen.real.perception.depth_pro import DepthProBackend

    def boom(*a, **k):
        raise AssertionError("depth was recomputed")

    monkeypatch.setattr(DepthProBackend, "predict", boom)
    assert main(args) == 0
    assert [r["conversations"] for r in iter_records(out)] == [r["conversations"] for r in records]


def test_sharded_runs_equal_one_run(rgbd_root, tmp_path):
    base = ["generate", "images", "--input", str(rgbd_root), "--depth", "oracle", "--detector", "oracle",
            "--segmenter", "oracle", "--no-progress", "--shard-size", "1"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    for i in range(2):
        assert main([*base, "--out", str(tmp_path / "two"), "--shard", f"{i}/2"]) == 0
    one = {r["id"]: r for r in iter_records(tmp_path / "one")}
    two = {r["id"]: r for r in iter_records(tmp_path / "two")}
    assert one == two


def test_unknown_backend_and_missing_vggt(tmp_path):
    from spatialboost.datagen.real.rgbd import vggt_reconstructor
    from spatialboost.errors import UserError

    (tmp_path / "a.png").write_bytes(b"")
    assert (
        main(
            ["generate", "images", "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--depth", "midas"]
        )
        == 2
    )
    with pytest.raises(UserError, match="vggt"):
        vggt_reconstructor()


def test_config_file_and_overrides_shape_the_conversation(rgbd_root, tmp_path):
    cfg = tmp_path / "images.yaml"
    cfg.write_text("conversation:\n  turns: {pixel: 2, object: 0, scene: 0}\n  caption: false\n")
    out = tmp_path / "cfg"
    args = ["generate", "images", "--input", str(rgbd_root), "--out", str(out), "--depth", "oracle",
            "--detector", "oracle", "--segmenter", "oracle", "--no-progress", "--config", str(cfg),
            "conversation.coords=norm1000"]  # fmt: skip
    assert main(args) == 0
    for r in iter_records(out):
        questions = [t["value"] for t in r["conversations"] if t["from"] == "human"]
        assert len(questions) == 2
        assert all("1000" in q and "in pixels" not in q for q in questions)
    bad = [*args[:-1], "conversation.order=sideways"]
    bad[bad.index(str(out))] = str(tmp_path / "bad")
    assert main(bad) == 2  # a bad value is a one-line error
    assert not (tmp_path / "bad").exists()

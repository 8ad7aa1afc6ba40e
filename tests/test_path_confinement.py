"""Paths stay inside the roots a user gives (``io.confined``, ``io.walk_tree``): tarfile's ``data`` rule.

Every reader that walks a user's folder or resolves a path named inside a file meets the same five traps, each
leading outside its root: a file symlink, a directory symlink, ``..`` in a record, an absolute path in a record
and a symlink loop. Each must be skipped with its reason recorded where that reader records bad files, and
nothing behind it may be read. "Read" is checked with an audit hook: every ``open``, ``os.scandir`` and
``os.listdir`` of the process during the call is recorded, and none may resolve into the outside folder (whose
files are valid images, so a reader that reached them would happily use them).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialboost.data.dataset import ConversationDataset
from spatialboost.data.tokenizer import train_tokenizer
from spatialboost.datagen.image_source import collect_items
from spatialboost.datagen.real.images import ImageLimits, scan_folder
from spatialboost.datagen.real.rgbd import export_scene
from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene
from spatialboost.dataset_format import iter_records
from spatialboost.errors import UserError
from spatialboost.eval.datasets import build_dataset
from spatialboost.eval.datasets.multiview import RGBDMultiView
from spatialboost.io import UnsafePathError, confined, walk_tree
from train_fixtures import write_records

# --- watching what the process reads ----------------------------------------------------------------------

_READS: list[str] | None = None  # paths opened or listed while a test watches; None = not watching


def _audit(event: str, args: tuple) -> None:
    if _READS is not None and event in ("open", "os.scandir", "os.listdir") and args:
        if isinstance(args[0], str | bytes | os.PathLike):
            _READS.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # process-wide and permanent; it records only while _READS is a list


@contextlib.contextmanager
def nothing_read_in(outside: Path) -> Iterator[list[str]]:
    """Fail when anything the body opens or lists resolves into ``outside``."""
    global _READS
    _READS = reads = []
    try:
        yield reads
    finally:
        _READS = None
    real = outside.resolve()
    touched = [
        p for p in reads if Path(os.path.realpath(p)) == real or real in Path(os.path.realpath(p)).parents
    ]
    assert not touched, f"read outside the root: {touched}"
    assert reads, "the audit hook saw nothing: the check would pass vacuously"


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder beside the root holding valid images (a reader that got here would use them)."""
    out = tmp_path / "outside"
    _png(out / "secret.png", 9)
    _png(out / "train" / "cat" / "secret.png", 9)
    (out / "secret.txt").write_text("sentinel")
    return out


def _traps(folder: Path, outside: Path, name: str = "trap") -> None:
    """A file symlink, a directory symlink (one to the outside folder, one to /) and a symlink loop."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_file.png").symlink_to(outside / "secret.png")
    (folder / f"{name}_dir").symlink_to(outside, target_is_directory=True)
    (folder / f"{name}_root").symlink_to("/", target_is_directory=True)
    (folder / f"{name}_loop_a.png").symlink_to(folder / f"{name}_loop_b.png")
    (folder / f"{name}_loop_b.png").symlink_to(folder / f"{name}_loop_a.png")


def _reasons(pairs) -> dict[str, str]:
    return {Path(k.rstrip("/")).name: v for k, v in pairs}


def _assert_trap_reasons(reasons: dict[str, str], name: str = "trap") -> None:
    assert "outside" in reasons[f"{name}_file.png"] and "not read" in reasons[f"{name}_file.png"]
    assert "outside" in reasons[f"{name}_dir"] and "not followed" in reasons[f"{name}_dir"]
    assert "outside" in reasons[f"{name}_root"]
    assert "loop" in reasons[f"{name}_loop_a.png"] and "loop" in reasons[f"{name}_loop_b.png"]


# --- the helper ---------------------------------------------------------------------------------------------


def test_confined_refuses_dotdot_absolute_symlink_and_loop(tmp_path, outside):
    root = tmp_path / "root"
    _png(root / "a.png")
    _traps(root, outside)
    assert confined(root, "a.png") == (root / "a.png").resolve()
    assert confined(root, root / "a.png") == (root / "a.png").resolve()  # absolute but inside: fine
    assert (
        confined(root, "not/yet/there.png") == root.resolve() / "not/yet/there.png"
    )  # missing: caller's job
    cases = {
        "../outside/secret.png": "'..'",
        str(outside / "secret.png"): "absolute",
        "trap_file.png": "symlink pointing outside",
        "trap_dir/secret.png": "symlink pointing outside",
        "trap_loop_a.png": "loop",
    }
    for path, why in cases.items():
        with pytest.raises(UnsafePathError, match=why) as info:
            confined(root, path)
        assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_walk_tree_never_follows_directory_links_and_ends_on_loops(tmp_path, outside):
    root = tmp_path / "root"
    _png(root / "a.png")
    _png(root / "sub" / "b.png")
    _traps(root / "sub", outside)
    (root / "sub" / "back").symlink_to(root, target_is_directory=True)  # a directory loop inside the root
    (root / "inside_link.png").symlink_to(root / "a.png")
    with nothing_read_in(outside):
        tree = walk_tree(root)
    assert [e.rel for e in tree.files] == ["a.png", "inside_link.png", "sub/b.png"]
    assert tree.files[1].path == (root / "a.png").resolve()  # a link inside the root is read at its target
    reasons = _reasons((r.rel, r.reason) for r in tree.refused)
    _assert_trap_reasons(reasons)
    assert "inside" in reasons["back"] and "not followed" in reasons["back"]
    with pytest.raises(UnsafePathError):
        walk_tree(root, "sub/trap_dir")  # a folder the caller names that leads outside is refused too


# --- image folders (generate images, scan_folder) ---------------------------------------------------------


def test_image_folder_skips_and_records_every_trap(tmp_path, outside):
    photos = tmp_path / "photos"
    _png(photos / "a.png", 1)
    _png(photos / "deep" / "b.png", 2)
    _traps(photos / "deep", outside)
    with nothing_read_in(outside):
        items, skipped = collect_items(photos, False, ImageLimits())
        good, _ = scan_folder(photos)
    assert [it.rel for it in items] == ["a.png", "deep/b.png"] == [g.rel for g in good]
    _assert_trap_reasons(_reasons((s["file"], s["reason"]) for s in skipped))


# --- RGB-D sequences (generate images on rgbd folders, --data rgbd:) ------------------------------------------


def _rgbd(root: Path, outside: Path, n_seq: int = 3) -> Path:
    for k in range(n_seq):
        scene = generate_scene(700 + k, SyntheticConfig(image_size=32, views=3))
        scene.scene_id = f"seq{k}"
        export_scene(scene, root)
    # a whole sequence outside, linked in; and inside the test sequence, every kind of trap
    outside_seq = generate_scene(799, SyntheticConfig(image_size=32, views=3))
    outside_seq.scene_id = "seqX"
    export_scene(outside_seq, outside)
    (root / "seq_linked").symlink_to(outside / "seqX", target_is_directory=True)
    last = root / f"seq{n_seq - 1}"
    (last / "color" / "000009.png").symlink_to(outside / "secret.png")  # file symlink
    (last / "color" / "000010.png").symlink_to(last / "color" / "000011.png")  # symlink loop
    (last / "color" / "000011.png").symlink_to(last / "color" / "000010.png")
    depth = last / "depth" / "000002.png"
    depth.unlink()
    depth.symlink_to(outside / "seqX" / "depth" / "000002.png")  # a frame's piece leading outside
    (last / "color" / "sub").symlink_to(outside, target_is_directory=True)  # directory symlink
    return root


def test_rgbd_sequences_skip_and_record_every_trap(tmp_path, outside):
    root = _rgbd(tmp_path / "rgbd", outside)
    with nothing_read_in(outside):
        items, skipped = collect_items(root, False, ImageLimits())
        test = RGBDMultiView(root, "test")
    assert sorted({it.rel.split("/")[0] for it in items}) == ["seq0", "seq1", "seq2"]
    reasons = {s["file"]: s["reason"] for s in skipped}
    assert "outside" in reasons["seq_linked/"] and "not followed" in reasons["seq_linked/"]
    assert "outside" in reasons["seq2/color/000009.png"] and "loop" in reasons["seq2/color/000010.png"]
    assert "outside" in reasons["seq2/depth/000002.png"] and "outside" in reasons["seq2/color/sub/"]
    # the eval reader: the frame whose depth leads outside has no depth, so it is skipped too
    assert test.scene_names == ["seq2"] and len(test) == 2
    listed = "\n".join(test.skipped)
    for part in ("seq_linked/", "color/000009.png", "color/000010.png", "depth/000002.png", "color/sub/"):
        assert part in listed, part


# --- probe datasets (imagefolder:, nyu:, ade20k:, voc:) ---------------------------------------------------------


def test_imagefolder_skips_and_records_every_trap(tmp_path, outside):
    root = tmp_path / "folder"
    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            _png(root / split / cls / f"{k}.png", k)
    _traps(root / "val" / "cat", outside)
    (root / "val" / "bird").symlink_to(outside / "train" / "cat", target_is_directory=True)
    (root / "train" / "bird").symlink_to(outside / "train" / "cat", target_is_directory=True)
    with nothing_read_in(outside):
        train = build_dataset(f"imagefolder:{root}", "train")
        val = build_dataset(f"imagefolder:{root}", "val")
        [val[i] for i in range(len(val))]
    assert train.cls_classes == ["cat", "dog"] and len(val) == 2
    reasons = _reasons(s.split(": ", 1) for s in val.skipped)
    _assert_trap_reasons(reasons)
    assert "outside" in reasons["bird"] and "bird" in "".join(train.skipped)


def test_nyu_folder_skips_links_leading_outside(tmp_path, outside):
    root = tmp_path / "nyu"
    for split in ("train", "test"):
        _png(root / split / "s" / "rgb_0.png", 0)
        Image.fromarray(np.full((40, 48), 1500, np.uint16)).save(root / split / "s" / "depth_0.png")
    (root / "test" / "s" / "rgb_1.png").write_bytes((root / "test" / "s" / "rgb_0.png").read_bytes())
    (root / "test" / "s" / "depth_1.png").symlink_to(outside / "secret.png")  # the depth leads outside
    _traps(root / "test" / "s", outside, name="rgb_9")
    with nothing_read_in(outside):
        ds = build_dataset(f"nyu:{root}", "test")
        ds[0]
    assert len(ds) == 1
    listed = "\n".join(ds.skipped)
    assert "depth_1.png: symlink pointing outside" in listed and "rgb_9_dir/" in listed
    assert "rgb_9_file.png: symlink pointing outside" in listed and "rgb_9_loop_a.png: symlink loop" in listed


def test_ade20k_skips_an_annotation_leading_outside(tmp_path, outside):
    root = tmp_path / "ade"
    for stem in ("a", "b"):
        _png(root / "images" / "validation" / f"{stem}.jpg", 0)
    (root / "annotations" / "validation").mkdir(parents=True)
    Image.fromarray(np.ones((40, 48), np.uint8)).save(root / "annotations" / "validation" / "a.png")
    (root / "annotations" / "validation" / "b.png").symlink_to(outside / "secret.png")
    (root / "images" / "validation" / "c.jpg").symlink_to(outside / "secret.png")
    with nothing_read_in(outside):
        ds = build_dataset(f"ade20k:{root}", "val")
        ds[0]
    assert len(ds) == 1
    listed = "\n".join(ds.skipped)
    assert "annotations/validation/b.png: symlink pointing outside" in listed
    assert "images/validation/c.jpg: symlink pointing outside" in listed


def test_voc_skips_listed_ids_leading_outside(tmp_path, outside):
    root = tmp_path / "VOC2012"
    _png(root / "JPEGImages" / "ok.jpg", 0)
    (root / "SegmentationClass").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(root / "SegmentationClass" / "ok.png")
    (root / "JPEGImages" / "link.jpg").symlink_to(outside / "secret.png")
    (root / "SegmentationClass" / "link.png").symlink_to(outside / "secret.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = ["ok", "../../outside/secret", "link"]
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    with nothing_read_in(outside):
        ds = build_dataset(f"voc:{root}", "val")
        ds[0]
    assert len(ds) == 1
    assert any("'../../outside/secret'" in s and "'..'" in s for s in ds.skipped)
    assert any("'link'" in s and "symlink pointing outside" in s for s in ds.skipped)


# --- LLaVA records and the manifest (the training data reader) --------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    corpus = ["What is the depth at the point? The depth is 2.5 m, so it is far."] * 4
    return train_tokenizer(corpus, vocab_size=300)


def _record(i: int, image: str) -> dict:
    conv = [{"from": "human", "value": "<image>\nWhat is the depth at the point?"},
            {"from": "gpt", "value": f"The depth is {i}.5 m, so it is far."}]  # fmt: skip
    return {"id": f"s{i}", "image": image, "conversations": conv}


def test_records_leading_outside_are_skipped_with_reason(tmp_path, outside, tokenizer):
    root = tmp_path / "data"
    _png(root / "images" / "0.png", 0, (12, 10))
    _traps(root / "images", outside)
    records = [
        _record(0, "images/0.png"),
        _record(1, "../outside/secret.png"),  # '..'
        _record(2, str(outside / "secret.png")),  # absolute
        _record(3, "images/trap_file.png"),  # file symlink
        _record(4, "images/trap_dir/secret.png"),  # through a directory symlink
        _record(5, "images/trap_loop_a.png"),  # loop
    ]
    write_records(root, records)
    for on_overflow in ("skip", "error"):
        with nothing_read_in(outside):
            ds = ConversationDataset(root, tokenizer, 2, image_size=8, on_overflow=on_overflow)
            [ds[i] for i in range(len(ds))]
        assert [ds[i]["id"] for i in range(len(ds))] == ["s0"]
        reasons = dict(ds.skipped)
        assert "'..'" in reasons["s1"] and "absolute" in reasons["s2"]
        assert "symlink pointing outside" in reasons["s3"] and "symlink pointing outside" in reasons["s4"]
        assert "loop" in reasons["s5"]


def test_manifest_entry_leading_outside_is_reported_not_read(tmp_path, outside, tokenizer):
    root = tmp_path / "data"
    _png(root / "images" / "0.png", 0, (12, 10))
    write_records(root, [_record(0, "images/0.png")])
    (outside / "shard.jsonl").write_text(json.dumps(_record(7, "images/0.png")) + "\n")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["shards"].append({**manifest["shards"][0], "shard": 1, "file": "../outside/shard.jsonl"})
    (root / "manifest.json").write_text(json.dumps(manifest))
    errors: list[str] = []
    with nothing_read_in(outside):
        ids = [r["id"] for r in iter_records(root, errors)]
        with pytest.raises(UserError, match="refused"):
            ConversationDataset(root, tokenizer, 2, image_size=8)
    assert (
        ids == ["s0"] and len(errors) == 1 and "../outside/shard.jsonl" in errors[0] and "'..'" in errors[0]
    )

"""The HTML viewer: paging says what it leaves out, legends name hidden objects, overlays keep objects' colours."""

from __future__ import annotations

import re

import numpy as np
import pytest

from scene_kit import box, four_boxes, make_scene
from spatialboost.cli import main
from spatialboost.datagen.dataset.viewer import depth_colorbar, instance_overlay, legend_html


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("view") / "ds"
    argv = [
        "generate",
        "synthetic",
        "--out",
        str(out),
        "--scenes",
        "5",
        "--image-size",
        "32",
        "--no-progress",
    ]
    assert main(argv) == 0
    return out


def test_page_says_how_many_it_shows_and_how_to_page(dataset, tmp_path):
    out = tmp_path / "r.html"
    assert main(["view", str(dataset), "--out", str(out), "--max-samples", "2"]) == 0
    text = out.read_text()
    assert "showing samples 1-2 of 5" in text and "--start 2 --max-samples 2" in text
    assert text.count('<div class="s">') == 2
    assert main(["view", str(dataset), "--out", str(out), "--start", "4", "--max-samples", "2"]) == 0
    text = out.read_text()
    assert "showing samples 5-5 of 5" in text and text.count('<div class="s">') == 1
    assert "00000004" in text and "00000000" not in text
    assert main(["view", str(dataset), "--out", str(out), "--max-samples", "5"]) == 0
    text = out.read_text()
    assert "showing all 5 samples" in text
    # a depth colour bar in metres and the key to the panels on every page
    assert re.search(r'class="cbar"><span>\d+\.\d\d m</span>', text) and "How to read this page" in text


def test_legend_names_the_objects_a_view_hides():
    scene = four_boxes()
    hidden = box(5, (-1.0, 0.6, 0.1), (0.2, 0.2, 0.2), "ball", "purple")  # right behind the red box
    scene = make_scene([*scene.objects, hidden], [scene.views[0].camera])
    assert (scene.views[0].instance == 5).sum() == 0
    legend = legend_html(scene, 0)
    assert "4 of 5 object(s) visible" in legend
    shown, _, hid = legend.partition("hidden in this view")
    assert "the purple ball" in hid and "the purple ball" not in shown and "the red box" in shown


def test_instance_overlay_keeps_each_objects_own_colour():
    rgb = np.zeros((120, 120, 3), np.uint8)
    instance = np.zeros((120, 120), np.int32)
    rgb[10:60, 10:60], instance[10:60, 10:60] = (200, 30, 30), 1  # a red object
    rgb[70:110, 60:110], instance[70:110, 60:110] = (30, 40, 210), 2  # a blue object
    out = instance_overlay(rgb, instance, labels=False)
    np.testing.assert_array_equal(out[20, 20], (200, 30, 30))
    np.testing.assert_array_equal(out[100, 100], (30, 40, 210))
    assert (out[10, 30] == 255).all()  # outlined in white
    assert out[5, 5].min() > 150  # background greyed, not coloured


def test_depth_colorbar_labels_metres():
    bar = depth_colorbar(0.5, 4.25)
    assert "0.50 m" in bar and "4.25 m" in bar


def test_a_sample_that_cannot_be_read_is_skipped_and_listed(dataset, tmp_path):
    """A corrupt ground-truth file or an image path leading outside the dataset skips that sample, not the page."""
    import json
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    (copy / "gt" / "00000001.npz").write_bytes(b"not an npz")
    shard = copy / "shards" / "shard-00000.jsonl"
    records = [json.loads(line) for line in shard.read_text().splitlines()]
    records[3]["image"] = "../outside.png"
    shard.write_text("".join(json.dumps(r) + "\n" for r in records))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][0].pop("hash", None)  # an edited shard: its recorded hash no longer matches
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r.html"
    assert main(["view", str(copy), "--out", str(out), "--max-samples", "5"]) == 0
    text = out.read_text()
    assert text.count('<div class="s">') == 3
    assert "2 sample(s) skipped" in text and "sample 00000001" in text and "sample 00000003" in text
    assert "outside.png" in text and "spatialboost validate" in text

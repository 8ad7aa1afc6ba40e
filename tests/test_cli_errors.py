"""Every subcommand against a table of bad inputs: exit 2, one line on stderr, no traceback.

Each case runs ``spatialboost.cli.main`` in-process: an exception that escapes ``main`` is a traceback a
user would see, and fails the test. Everything a case needs (a tiny dataset, damaged copies of it, a plain
photo folder, an empty folder, a text file) is built once per module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spatialboost.cli import main
from spatialboost.config import ConfigError
from spatialboost.errors import UserError
from spatialboost.registry import UnknownNameError

BARE = str(
    Path(__file__).with_name("bare.yaml")
)  # TrainConfig defaults (no --config: the `spatialboost` recipe)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """notes.txt, empty/, photos/ (two plain PNGs), ds/ and damaged copies of it."""
    root = tmp_path_factory.mktemp("bad")
    (root / "notes.txt").write_text("not a dataset\n")
    (root / "empty").mkdir()
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / name)
    ds = root / "ds"
    argv = ["generate", "synthetic", "--out", str(ds), "--scenes", "3", "--image-size", "32", "--no-progress"]
    assert main(argv) == 0
    for name in ("truncated", "badmanifest", "noimage", "partial"):
        shutil.copytree(ds, root / name)
    shard = next((root / "truncated" / "shards").glob("*.jsonl"))
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text(lines[0] + lines[1][: len(lines[1]) // 2] + "\n" + "".join(lines[2:]))
    (root / "badmanifest" / "manifest.json").write_text('{"counts": ')
    next((root / "noimage" / "images").glob("*.png")).unlink()
    manifest = json.loads((root / "partial" / "manifest.json").read_text())
    del manifest["shards"]
    (root / "partial" / "manifest.json").write_text(json.dumps(manifest))
    return root


ORACLE = ["--depth", "oracle", "--detector", "oracle", "--segmenter", "oracle", "--no-progress"]

# (argv with {w} = the world folder, a substring the one error line must contain)
CASES = [
    (["generate", "synthetic", "--out", "{w}/notes.txt", "--scenes", "2"], "not a directory"),
    (["generate", "synthetic", "--out", "{w}/X", "--image-size", "13"], "image_size"),
    (["generate", "images", "--input", "{w}/empty", "--out", "{w}/X", *ORACLE], "no files"),
    (["generate", "images", "--input", "{w}/notes.txt", "--out", "{w}/X", *ORACLE], "not a directory"),
    (["generate", "images", "--input", "{w}/photos", "--out", "{w}/X", *ORACLE], "oracle"),
    (["generate", "images", "--input", "{w}/photos", "--out", "{w}/notes.txt", *ORACLE], "not a directory"),
    (["generate", "images", "--input", "{w}/photos", "--out", "{w}/X", "--depth", "nope"], "--depth"),
    (["validate", "{w}/notes.txt"], "not a directory"),
    (["validate", "{w}/nowhere"], "no such"),
    (["validate", "{w}/ds", "--max-samples", "0"], "--max-samples"),
    (["validate", "{w}/badmanifest"], "manifest.json"),
    (["validate", "{w}/partial"], "manifest.json"),
    (["view", "{w}/truncated", "--out", "{w}/r.html"], "shard-00000.jsonl line 2"),
    (["view", "{w}/badmanifest", "--out", "{w}/r.html"], "manifest.json"),
    # a page whose only sample cannot be read (with readable ones the page skips and lists it: test_viewer)
    (["view", "{w}/noimage", "--out", "{w}/r.html", "--max-samples", "1"], "00000000_v0.png"),
    (["view", "{w}/notes.txt", "--out", "{w}/r.html"], "not a directory"),
    (["view", "{w}/ds", "--out", "{w}/r.html", "--max-samples", "0"], "--max-samples"),
    (["train", "--config", "{w}/nothere.yaml"], "not found"),
    (["train", "--config", "{w}/notes.txt"], "mapping"),
    (
        ["train", "--config", BARE, "run_dir={w}/T", "data.datasets=[{w}/ds]", "model.boost.gate=chanel"],
        "channel",
    ),
    (
        ["train", "--config", BARE, "run_dir={w}/T", "data.datasets=[{w}/ds]", "model.llm_options.width=3"],
        "llm_options",
    ),
    (
        ["train", "--config", BARE, "run_dir={w}/T", "data.datasets=[{w}/ds]", "crash_after_steps=1"],
        "unknown config key",
    ),
    (["train", "--config", BARE, "run_dir={w}/notes.txt", "data.datasets=[{w}/ds]"], "not a directory"),
    (["train", "--config", BARE, "run_dir={w}/T", "data.datasets=[{w}/nowhere]"], "nowhere"),
    (["export", "{w}/nowhere", "--out", "{w}/E"], "nowhere"),
    (["probe", "--encoder", "{w}/empty", "--out", "{w}/P"], "config.json"),
    (["probe", "--encoder", "no-such-encoder", "--out", "{w}/P"], "known:"),
    (["probe", "--encoder", "tiny-vit", "--image-size", "13", "--out", "{w}/P"], "image_size"),
    (["probe", "--encoder", "tiny-vit", "--data", "nope:x", "--out", "{w}/P"], "nope"),
    (["probe", "--encoder", "tiny-vit", "--out", "{w}/notes.txt"], "not a directory"),
    (["probe", "--out", "{w}/P"], "--encoder"),
    (["demo", "--out", "{w}/notes.txt"], "not a directory"),
    (["demo", "--out", "{w}/D", "--scenes", "0"], "--scenes"),
    (["demo", "--out", "{w}/D", "--full", "--quick"], "--full"),
    (["demo", "--out", "{w}/D", "--smollm2", "--tiny"], "--smollm2"),
    (["replicate", "--arms", "nosucharm", "--out", "{w}/R"], "nosucharm"),
    (["replicate", "--seeds", "0", "--out", "{w}/R"], "--seeds"),
    (["replicate", "--size", "huge", "--out", "{w}/R"], "huge"),
    (["replicate", "--out", "{w}/notes.txt"], "not a directory"),
]


OUTPUTS = {"X": "manifest.json", "T": "config.yaml", "R": "command.json", "P": "results.json", "D": "data"}


@pytest.mark.parametrize("argv, expect", CASES, ids=[f"{i:02d}-{c[0][0]}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_exit_2(world, argv, expect, capsys):
    try:
        code = main([a.replace("{w}", str(world)) for a in argv])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("spatialboost ") and expect in lines[0], lines[0]
        for folder, output in OUTPUTS.items():  # refused before any work: no output was written
            assert not (world / folder / output).exists(), f"{folder}/{output} written"
    finally:
        for folder in OUTPUTS:
            shutil.rmtree(world / folder, ignore_errors=True)


def test_config_and_lookup_errors_are_user_errors():
    assert issubclass(ConfigError, UserError) and issubclass(UnknownNameError, UserError)
    # still what callers caught before
    assert issubclass(ConfigError, ValueError) and issubclass(UnknownNameError, KeyError)


def test_one_line_in_a_real_process(world):
    """The console script as a user runs it: logging on stderr too, still one line and no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "spatialboost", "validate", str(world / "badmanifest")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_validate_lists_a_truncated_line_and_checks_the_rest(world, capsys):
    assert main(["validate", str(world / "truncated")]) == 1
    err = capsys.readouterr().err
    assert "shards/shard-00000.jsonl line 2: not a valid JSON record" in err and "Traceback" not in err
    assert "in 2 sample(s)" in err  # lines 1 and 3 were still checked


def test_symlinked_folder_is_recorded_as_skipped(world, tmp_path):
    """generate images lists a directory symlink that leaves --input among the skipped inputs."""
    from spatialboost.datagen.image_source import collect_items
    from spatialboost.datagen.real.images import ImageLimits

    photos = tmp_path / "photos"
    shutil.copytree(world / "photos", photos)
    (photos / "elsewhere").symlink_to(world / "empty", target_is_directory=True)
    items, skipped = collect_items(photos, False, ImageLimits())
    assert [it.rel for it in items] == ["a.png", "b.png"]
    assert [s["file"] for s in skipped] == ["elsewhere/"] and "outside" in skipped[0]["reason"]

"""Helpers several stages share live once: metric direction and the noise verdict (``noise``), the weights
digest (``models.encoder_base``), the atomic directory write (``io``), ImageNet mean/std (``image_transform``),
the base of a saved boosted encoder (``models.export``) and ``--data`` spec parsing (``eval.datasets``)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from spatialboost.io import atomic_dir
from spatialboost.models.encoder_base import weights_sha256
from spatialboost.models.encoders import create_encoder
from spatialboost.noise import lower_is_better, verdict

SRC = Path(__file__).resolve().parents[1] / "src" / "spatialboost"
# name -> the one module (relative to src/spatialboost) allowed to define it
OWNERS = {
    "LOWER_IS_BETTER": "noise.py",
    "NOISE_RULE": "noise.py",
    "IMAGENET_MEAN": "image_transform.py",
    "IMAGENET_STD": "image_transform.py",
    "weights_sha256": "models/encoder_base.py",
    "weights_hash": None,
    "parse_data_spec": "eval/datasets/base.py",
    "atomic_dir": "io.py",
    "load_saved_base": "models/export.py",
}


def _definitions(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_each_shared_helper_is_defined_once():
    where: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for name in _definitions(path) & OWNERS.keys():
            where.setdefault(name, []).append(str(path.relative_to(SRC)))
    wrong = {n: w for n, w in where.items() if w != [OWNERS[n]]}
    assert not wrong, f"defined outside their owner: {wrong} (owners: {OWNERS})"


def test_metric_direction_and_verdict():
    assert lower_is_better("rte") and lower_is_better("rmse_median") and not lower_is_better("miou")
    assert lower_is_better("miou", {"lower_is_better": True})  # the row's own word wins
    base = {"metric": "rre", "mean": 2.0, "std": 0.1}
    assert verdict(base, {**base, "mean": 3.0}) == "worse"
    assert verdict(base, {**base, "mean": 1.0}) == "better"
    assert verdict(base, {**base, "mean": 2.2}) == "within noise"  # 0.2 < 2 * sqrt(0.02)
    assert verdict(base, {**base, "mean": 3.0}, metric="acc") == "better"


def test_weights_digest_reads_any_dtype_and_tells_weights_apart():
    enc = create_encoder("tiny-vit", seed=0)
    digest = weights_sha256(enc)
    assert weights_sha256(create_encoder("tiny-vit", seed=0)) == digest
    assert weights_sha256(create_encoder("tiny-vit", seed=1)) != digest
    assert weights_sha256(enc.to(torch.bfloat16)) != digest  # bf16 has no numpy dtype: read as bytes


def test_atomic_dir_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "entry"
    with atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".entry.")
        (tmp / "a.txt").write_text("a")
    assert (final / "a.txt").read_text() == "a"
    assert os.stat(final).st_mode & 0o777 == 0o777 & ~_umask()
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "broken") as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_atomic_dir_keeps_the_entry_another_writer_finished_first(tmp_path):
    final = tmp_path / "entry"
    with atomic_dir(final, tmp=tmp_path / ".tmp-entry", durable=True) as tmp:
        (tmp / "mine").write_text("mine")
        final.mkdir()
        (final / "theirs").write_text("theirs")
    assert [p.name for p in final.iterdir()] == ["theirs"] and not (tmp_path / ".tmp-entry").exists()


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask

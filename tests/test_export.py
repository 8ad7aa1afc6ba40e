"""save_encoder / load_encoder / export_run and the ``spatialboost export`` command."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from spatialboost.cli import main
from spatialboost.errors import UserError
from spatialboost.models.dual_channel import boost_encoder, trainable_parameters
from spatialboost.models.encoders import create_encoder, list_encoders
from spatialboost.models.export import load_encoder, save_encoder

FAMILIES = list_encoders(tiny_only=True)


def pixels(encoder) -> torch.Tensor:
    s = encoder.spec.image_size
    return torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))


def boosted(name: str, seed: int = 1, **boost):
    return boosted_from(create_encoder(name, seed=0), seed, **boost)


def boosted_from(encoder, seed: int = 1, **boost):
    enc = boost_encoder(encoder, **boost)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainable_parameters(enc).values():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return enc


def assert_same_outputs(a, b) -> None:
    x = pixels(a)
    with torch.no_grad():
        for u, v in zip(
            a.forward_intermediates(x, [0, -1]), b.forward_intermediates(x, [0, -1]), strict=True
        ):
            torch.testing.assert_close(u.patch, v.patch, rtol=0, atol=0)
            torch.testing.assert_close(u.cls, v.cls, rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_save_load_base_and_boosted(tmp_path, name):
    base = create_encoder(name, seed=0)
    save_encoder(base, tmp_path / "base")
    loaded = load_encoder(tmp_path / "base")
    assert dataclasses.replace(loaded.spec, extra={}) == dataclasses.replace(base.spec, extra={})
    assert loaded.spec.extra["source"]["kind"] == "path"  # now a base that boosted saves can reference
    assert getattr(loaded, "boost_config", None) is None
    assert_same_outputs(base, loaded)

    enc = boosted(name)
    save_encoder(enc, tmp_path / "boosted", include_base=False)  # random base: written anyway
    assert (tmp_path / "boosted" / "base.safetensors").is_file()
    loaded = load_encoder(tmp_path / "boosted")
    assert loaded.boost_config == enc.boost_config
    assert_same_outputs(enc, loaded)
    assert not any(p.requires_grad and ".plus." not in n and not n.endswith(".gate")
                   for n, p in loaded.named_parameters())  # fmt: skip


@pytest.mark.parametrize(
    "boost", [dict(gate="head", layers=[0]), dict(mode="lora", lora_rank=2), dict(mode="full")]
)
def test_save_load_ablation_modes(tmp_path, boost):
    enc = boosted("tiny-dinov3", **boost)
    save_encoder(enc, tmp_path / "e")
    loaded = load_encoder(tmp_path / "e")
    assert loaded.boost_config == enc.boost_config
    assert_same_outputs(enc, loaded)


def test_reobtainable_base_is_referenced_not_copied(tmp_path):
    create_encoder("tiny-clip", seed=0).model.save_pretrained(tmp_path / "hf")
    enc = boost_encoder(create_encoder(str(tmp_path / "hf")))
    save_encoder(enc, tmp_path / "adapter-only", include_base=False)
    assert not (tmp_path / "adapter-only" / "base.safetensors").exists()
    loaded = load_encoder(tmp_path / "adapter-only")
    assert loaded.spec == enc.spec
    assert_same_outputs(enc, loaded)
    assert_same_outputs(enc, create_encoder(str(tmp_path / "adapter-only")))  # dispatches to load_encoder


def test_saved_base_dir_is_referenced_by_boosted_saves(tmp_path):
    """The demo's flow: pre-train tiny-vit, save it, boost the re-loaded copy, checkpoint the adapter only."""
    save_encoder(create_encoder("tiny-vit", seed=3), tmp_path / "pretrained")
    enc = boosted_from(create_encoder(str(tmp_path / "pretrained")))
    save_encoder(enc, tmp_path / "ckpt", include_base=False)
    assert not (tmp_path / "ckpt" / "base.safetensors").exists()
    assert_same_outputs(enc, load_encoder(tmp_path / "ckpt"))


def test_resave_leaves_no_temp_files(tmp_path):
    save_encoder(create_encoder("tiny-dinov2", seed=0), tmp_path / "e")
    enc = boosted("tiny-dinov2")
    save_encoder(enc, tmp_path / "e")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == [
        ".spatialboost-output.json",
        "adapter.safetensors",
        "base.safetensors",
        "config.json",
    ]
    assert_same_outputs(enc, load_encoder(tmp_path / "e"))


def test_export_cli_round_trip(tmp_path):
    run = tmp_path / "run"
    old, new = boosted("tiny-vit", seed=1), boosted("tiny-vit", seed=2)
    save_encoder(old, run / "checkpoints" / "step-9" / "encoder", include_base=False)
    save_encoder(new, run / "checkpoints" / "step-10" / "encoder", include_base=False)
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--format", "spatialboost"]) == 0
    assert (tmp_path / "out" / "base.safetensors").is_file()
    assert_same_outputs(new, load_encoder(tmp_path / "out"))  # newest step by number, not by name

    save_encoder(old, run / "encoder", include_base=False)  # a final encoder wins over checkpoints
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 0
    assert_same_outputs(old, load_encoder(tmp_path / "out"))


def test_export_cli_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "empty-run").mkdir()
    assert main(["export", str(tmp_path / "empty-run"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoints/step-<N>/encoder" in capsys.readouterr().err


def test_clear_errors_on_directories_that_are_not_encoders(tmp_path):
    with pytest.raises(UserError, match=r"config\.json: missing"):
        load_encoder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"config\.json: not valid JSON"):
        load_encoder(tmp_path)
    create_encoder("tiny-clip").model.save_pretrained(tmp_path / "hf")
    with pytest.raises(UserError, match=r"config\.json: not a SpatialBoost encoder config"):
        load_encoder(tmp_path / "hf")

    save_encoder(boosted("tiny-dinov2"), tmp_path / "e")
    (tmp_path / "e" / "adapter.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"adapter\.safetensors: not a readable safetensors file"):
        load_encoder(tmp_path / "e")
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    config["version"] = 99
    (tmp_path / "e" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="unsupported version 99"):
        load_encoder(tmp_path / "e")

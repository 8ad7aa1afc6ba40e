"""The transformers-native export: loads with AutoModel and no spatialboost, same outputs, a valid model card.

One subprocess (``hf_isolated_load.py`` under ``python -I`` with spatialboost removed from sys.path) loads
every export of the module fixture: every registered family boosted (gates channel / head / scalar), a
merged LoRA, a full fine-tune, a plain encoder and an adapter-only folder that points at its base.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import spatialboost
from spatialboost.cli import main
from spatialboost.errors import UserError
from spatialboost.models.config import GATES
from spatialboost.models.dual_channel import boost_encoder, trainable_parameters
from spatialboost.models.encoders import create_encoder, list_encoders
from spatialboost.models.export import load_encoder, save_encoder
from spatialboost.models.hf_export import ADAPTER_WEIGHTS, WEIGHTS, save_hf_encoder
from spatialboost.models.preprocess import preprocess_images

FAMILIES = list_encoders(tiny_only=True)
TOL = 1e-6


def close(got: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal to TOL of the reference's scale: float32 rounding only (our inference path folds the gate
    into one output projection; the exported modeling code mixes the two attentions as the paper writes)."""
    torch.testing.assert_close(got, ref, rtol=0, atol=TOL * max(ref.abs().max().item(), 1.0))


def _perturbed(enc, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainable_parameters(enc).values():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return enc


def _cases(root: Path) -> dict[str, tuple]:
    """name -> (encoder, remote code expected)."""
    cases = {}
    for i, name in enumerate(FAMILIES):
        layers = [-1] if name == "tiny-dinov3" else None  # one boosted block of two
        cases[name] = (
            _perturbed(boost_encoder(create_encoder(name, seed=0), gate=GATES[i % 3], layers=layers)),
            True,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # peft draws LoRA's A from the global RNG
        lora = boost_encoder(create_encoder("tiny-dinov2", seed=0), mode="lora", lora_rank=2)
    cases["lora"] = (
        _perturbed(lora),
        False,
    )
    cases["full"] = (_perturbed(boost_encoder(create_encoder("tiny-clip", seed=0), mode="full")), False)
    cases["plain"] = (create_encoder("tiny-vit", seed=0), False)
    create_encoder("tiny-dinov2-reg", seed=5).model.save_pretrained(root / "base-ckpt")
    cases["adapter-only"] = (_perturbed(boost_encoder(create_encoder(str(root / "base-ckpt")))), True)
    return cases


def _image(side: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side, side + 8, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    """Export every case, copy the folders elsewhere, load them all in one isolated subprocess."""
    root = tmp_path_factory.mktemp("hf")
    cases = _cases(root)
    jobs, refs = [], {}
    for name, (enc, remote) in cases.items():
        save_hf_encoder(enc, root / "exports" / name, adapter_only=name == "adapter-only")
        s = enc.spec.image_size
        pixels = torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(0))
        save_file(
            {"pixels": pixels, "image": torch.from_numpy(_image(s))}, str(root / f"{name}.in.safetensors")
        )
        with torch.no_grad():
            out = enc.forward_features(pixels)
            # plain folders: the reference is what spatialboost loads from the folder (LoRA merged)
            folder = root / "exports" / name
            hidden = None if remote else load_encoder(folder).model(pixels).last_hidden_state
        refs[name] = {"cls": out.cls, "patch": out.patch, "hidden": hidden, "pixels": pixels, "encoder": enc}
        jobs.append({"folder": str(root / "elsewhere" / name), "inputs": str(root / f"{name}.in.safetensors"),
                     "out": str(root / f"{name}.out.safetensors"), "remote": remote})  # fmt: skip
    shutil.copytree(root / "exports", root / "elsewhere")  # the folder handed to someone else
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(root / "hf-home"), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}  # fmt: skip
    script = Path(__file__).with_name("hf_isolated_load.py")
    proc = subprocess.run([sys.executable, "-I", str(script), str(root / "jobs.json")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split("RESULT ", 1)[1] for line in proc.stdout.splitlines() if "RESULT " in line]
    reports = {Path(r["folder"]).name: r for r in map(json.loads, lines)}
    return root, cases, refs, reports


@pytest.mark.slow
@pytest.mark.parametrize("name", [*FAMILIES, "lora", "full", "plain", "adapter-only"])
def test_transformers_alone_gives_the_same_outputs(isolated, name):
    root, cases, refs, reports = isolated
    enc, remote = cases[name]
    report, got, ref = reports[name], load_file(str(root / f"{name}.out.safetensors")), refs[name]
    assert not report["spatialboost_loaded"]
    if remote:
        assert report["class"].startswith("SpatialBoost") and report["module"].startswith(
            "transformers_modules"
        )
        assert report["refused_without_trust"] is True  # never a plain family model with random attention
        close(got["cls"], ref["cls"])
        close(got["patch"], ref["patch"])
    else:
        assert report["class"] == type(enc.model).__name__.removeprefix("Peft")  # a plain family checkpoint
        close(got["hidden"], ref["hidden"])
    # the image processor reproduces spatialboost's preprocessing (no resize needed at this size)
    ours = preprocess_images([_image(enc.spec.image_size)], enc.spec)
    torch.testing.assert_close(got["processed"], ours, rtol=0, atol=TOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*FAMILIES, "adapter-only", "plain"])
def test_spatialboost_loads_the_hf_folder_too(isolated, name):
    root, cases, refs, _ = isolated
    enc, _ = cases[name]
    loaded = load_encoder(root / "elsewhere" / name)
    assert getattr(loaded, "boost_config", None) == getattr(enc, "boost_config", None)
    with torch.no_grad():
        out = loaded.forward_features(refs[name]["pixels"])
    torch.testing.assert_close(out.patch, refs[name]["patch"], rtol=0, atol=0)
    torch.testing.assert_close(out.cls, refs[name]["cls"], rtol=0, atol=0)


@pytest.mark.slow
def test_merged_lora_matches_the_unmerged_encoder(isolated):
    """Merging changes the arithmetic (x(W + sBA) vs xW + s(xA)B): equal up to float rounding, not bit for bit."""
    root, cases, refs, _ = isolated
    enc = cases["lora"][0]
    with torch.no_grad():
        unmerged = enc.model(refs["lora"]["pixels"]).last_hidden_state
    torch.testing.assert_close(refs["lora"]["hidden"], unmerged, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_adapter_only_holds_only_attn_plus_and_gates(isolated):
    root, cases, _, _ = isolated
    folder = root / "exports" / "adapter-only"
    assert not (folder / WEIGHTS).exists()
    keys = set(load_file(str(folder / ADAPTER_WEIGHTS)))
    assert keys and all(".plus." in k or k.endswith(".gate") for k in keys)
    config = json.loads((folder / "config.json").read_text())
    assert config["spatialboost"]["base_model"] == str((root / "base-ckpt").resolve())
    full = sum(p.numel() for p in cases["adapter-only"][0].parameters())
    assert sum(v.numel() for v in load_file(str(folder / ADAPTER_WEIGHTS)).values()) < full / 2


def test_adapter_only_refuses_a_base_transformers_cannot_load(tmp_path):
    enc = boost_encoder(create_encoder("tiny-dinov2", seed=0))  # random registered config: no checkpoint
    with pytest.raises(UserError, match="export the full model"):
        save_hf_encoder(enc, tmp_path / "a", adapter_only=True)
    with pytest.raises(UserError, match="needs a dual-channel"):
        save_hf_encoder(
            boost_encoder(create_encoder("tiny-dinov2"), mode="full"), tmp_path / "b", adapter_only=True
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_processor_resizes_like_spatialboost(isolated):
    from transformers import AutoImageProcessor

    root, cases, _, _ = isolated
    enc = cases["tiny-dinov2"][0]
    yy, xx = np.mgrid[0:61, 0:47]
    image = np.stack([yy * 4, xx * 5, (yy + xx) * 2], -1).clip(0, 255).astype(np.uint8)  # a resize is needed
    processor = AutoImageProcessor.from_pretrained(root / "exports" / "tiny-dinov2")
    got = processor(images=[image], return_tensors="pt")["pixel_values"]
    ours = preprocess_images([image], enc.spec)
    assert got.shape == ours.shape
    # the same steps, not the same bits: PIL resizes uint8 images and rounds the resized side down (41 rows
    # here, spatialboost 42), so pixels differ by about 1.5/255 on a smooth image
    assert (got - ours).abs().mean() < 0.05 and (got - ours).abs().max() < 0.15


# --------------------------------------------------------------------------------------------- CLI and card


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    """A run whose encoder was probed (the demo's layout: RUN/../probes), its base a local checkpoint with a card."""
    from spatialboost.eval.job import probe_before_after
    from spatialboost.eval.runner import ProbeConfig, ProbeDataConfig

    root = tmp_path_factory.mktemp("run")
    base = root / "base-ckpt"
    create_encoder("tiny-dinov2", seed=0).model.save_pretrained(base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a base\n")
    enc = _perturbed(boost_encoder(create_encoder(str(base))))
    save_encoder(enc, root / "train" / "encoder", include_base=False)
    (root / "train" / "config.yaml").write_text(
        "run_dir: RUN\nseed: 7\ndata:\n  datasets: [" + str(root / "data") + "]\nmodel:\n  encoder: " + str(base)
        + "\n  llm: tiny-qwen2\n  boost: {gate: channel}\nstages:\n  run: [align, instruct, encoder]\n"
        "  encoder: {max_steps: 60, batch_size: 8, grad_accum: 1, lr: 0.0001, lr_gates: 0.01}\n"
    )  # fmt: skip
    (root / "data").mkdir()
    manifest = {"complete": True, "seed": 0, "counts": {"samples": 64, "views": 80, "turns": 500},
                "config": {"source": "synthetic"}}  # fmt: skip
    (root / "data" / "manifest.json").write_text(json.dumps(manifest))
    cfg = ProbeConfig(seeds=2, tasks=["cls"], data=ProbeDataConfig(num_train=6, num_test=4))
    probe_before_after(str(base), root / "train" / "encoder", cfg, out=root / "probes", plots=False)
    return root


def test_export_cli_prints_files_and_the_two_load_lines(probed_run, tmp_path, capsys):
    out = tmp_path / "boosted"
    assert main(["export", str(probed_run / "train"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f'model = AutoModel.from_pretrained("{out}", trust_remote_code=True)' in printed
    assert f'processor = AutoImageProcessor.from_pretrained("{out}")' in printed
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_spatialboost.py",
        "preprocessor_config.json",
        "README.md",
    ):
        assert name in printed and (out / name).is_file()


def test_model_card_parses_and_tells_what_was_boosted(probed_run, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "boosted"
    assert main(["export", str(probed_run / "train"), "--out", str(out)]) == 0
    card = ModelCard.load(out / "README.md")  # a local path: parsed offline
    data = card.data.to_dict()
    assert (
        data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    )  # inherited from the base
    assert {"spatialboost", "dinov2", "dual-channel-attention"} <= set(data["tags"])
    assert "base_model" not in data  # a local base has no hub id to name
    text = card.text
    assert "## Not a plain DINOv2" in text and "own softmax" in text
    assert "| synthetic | 64 | 80 | 500 | 0 |" in text  # data from the run's dataset manifest
    assert "| encoder | Attn+ and gates | 60 | 8 x 1 | 0.0001 | 0.01 |" in text  # recipe from config.yaml
    assert "## Probe results" in text and "cls-linear" in text and "2 probe seed(s) [0, 1]" in text
    assert "| cls-linear | top1 ↑ |" in text and ("within noise" in text or "| yes, " in text)
    assert f"spatialboost train --config {probed_run / 'train' / 'config.yaml'} run_dir=NEW_RUN_DIR" in text
    assert f"spatialboost probe --encoder {out} --task cls --data synthetic --seeds 2" in text


def test_card_without_a_matching_probe_says_so_and_hub_bases_are_named(tmp_path):
    from huggingface_hub import ModelCard

    from spatialboost.models.card import model_card
    from spatialboost.models.hf_export import hf_config

    enc = boost_encoder(create_encoder("tiny-dinov3", seed=0), gate="scalar")
    config = hf_config(enc)
    config["spatialboost"]["source"] = {"kind": "hub", "ref": "facebook/dinov3-vits16-pretrain-lvd1689m"}
    card = ModelCard(model_card(config, tmp_path))
    data = card.data.to_dict()
    assert data["base_model"] == "facebook/dinov3-vits16-pretrain-lvd1689m"
    assert (data["license"], data["license_name"]) == ("other", "dinov3-license")
    assert "No probe of these weights was found" in card.text
    assert "Not recorded: this folder was exported from an encoder object" in card.text


def test_probe_results_of_other_weights_are_refused(probed_run, tmp_path, capsys):
    other = tmp_path / "other-run"
    save_encoder(_perturbed(boost_encoder(create_encoder("tiny-dinov2", seed=0)), seed=9), other / "encoder")
    args = ["export", str(other), "--out", str(tmp_path / "o"), "--probe-results", str(probed_run / "probes")]
    assert main(args) == 2
    assert "no probed encoder there has this export's weights" in capsys.readouterr().err


def test_public_api_exports_hf(tmp_path):
    enc = boost_encoder(create_encoder("tiny-clip", seed=0))
    spatialboost.save_hf_encoder(enc, tmp_path / "e")
    assert (tmp_path / "e" / "modeling_spatialboost.py").is_file()


def test_noise_rule_needs_two_seeds_and_says_the_direction():
    from spatialboost.models.card import beyond_noise

    base, boosted = {"mean": 1.0, "std": 0.01, "metric": "rmse"}, {"mean": 0.9, "std": 0.01, "metric": "rmse"}
    assert beyond_noise(base, boosted, seeds=3) == "yes, better"  # lower RMSE
    assert beyond_noise(base, {**boosted, "std": 0.05}, seeds=3) == "no (within noise)"
    assert beyond_noise(base, boosted, seeds=1) == "unknown (1 seed)"
    assert beyond_noise({**base, "metric": "miou"}, {**boosted, "metric": "miou"}, seeds=3) == "yes, worse"


@pytest.mark.slow
def test_probe_finds_the_base_of_an_hf_folder(isolated):
    from spatialboost.eval.runner import saved_base

    root, _, refs, _ = isolated
    base = saved_base(root / "elsewhere" / "tiny-dinov2")
    x = refs["tiny-dinov2"]["pixels"]
    with torch.no_grad():
        torch.testing.assert_close(
            base(x).patch, create_encoder("tiny-dinov2", seed=0)(x).patch, rtol=0, atol=0
        )

"""The demo as the whole loop (quick sizes), the pre-training cache, and the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spatialboost.cli import main
from spatialboost.config import load_config
from spatialboost.train.config import TrainConfig
from spatialboost.train.pretrain import PretrainConfig, cache_path, pretrain_encoder
from train_fixtures import one_thread  # noqa: F401

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.slow
def test_demo_quick_runs_the_whole_loop(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for stage in ("align", "instruct", "encoder"):
        assert f"stage {stage}" in out
    assert (tmp_path / "train" / "encoder" / "config.json").is_file()
    assert (tmp_path / "boosted-encoder" / "config.json").is_file()
    card = (tmp_path / "boosted-encoder" / "README.md").read_text()
    assert "## Probe results" in card and "No probe of these weights" not in card  # the demo's probes
    assert "frozen-feature probes, base -> boosted" in out and "| depth | rmse ↓ |" in out
    assert out.count("| depth | rmse ↓ |") == 1  # the table is printed once


def test_demo_fails_loudly_when_a_step_cannot_import(tmp_path, monkeypatch):
    """A broken install (here: the probe package) stops the demo with the ImportError, never a silent skip."""
    import sys

    from spatialboost.studies import demo

    monkeypatch.setitem(sys.modules, "spatialboost.eval.runner", None)  # `import` of it now raises
    with pytest.raises(ImportError):
        demo.step_probe(demo.DemoState(out=tmp_path, scenes=1))


def test_pretrained_encoder_is_cached_and_reloads(tmp_path):
    from spatialboost.models.encoders import create_encoder

    cfg = PretrainConfig(encoder="tiny-dinov2", scenes=12, epochs=1, batch_size=8, cache_dir=tmp_path)
    first = pretrain_encoder(cfg)
    assert not first.cached and first.path == cache_path(cfg)
    again = pretrain_encoder(cfg)
    assert again.cached and again.path == first.path
    enc = create_encoder(str(first.path))
    ref = create_encoder("tiny-dinov2", pretrained=False, seed=0)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(enc(x).patch, ref(x).patch), "pre-training left the weights untouched"
    cfg.epochs = 2
    assert cache_path(cfg) != first.path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.stages.run

"""`spatialboost train` end to end through cli.main, the saved config, and the exported encoder."""

from __future__ import annotations

import pytest
import torch

import spatialboost
from spatialboost.cli import main
from spatialboost.config import load_config
from spatialboost.train.config import TrainConfig
from spatialboost.train.metrics import read_metrics
from spatialboost.train.stages import STAGES, stage_dir
from train_fixtures import TRAIN_BARE, make_dataset, one_thread, tiny_overrides  # noqa: F401


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = make_dataset(tmp / "data", n=12)
    torch.set_num_threads(1)
    overrides = tiny_overrides(tmp / "run", data, steps=3, every=2) + [
        "stages.encoder.lr=0.01",
        "log.tensorboard=true",
    ]
    assert main([*TRAIN_BARE, *overrides]) == 0
    return tmp / "run", overrides


def test_cli_writes_config_metrics_and_tensorboard(run, tmp_path):
    run_dir, overrides = run
    saved = load_config(TrainConfig, run_dir / "config.yaml")
    assert saved == load_config(TrainConfig, None, overrides)
    for name in STAGES:
        rows = read_metrics(stage_dir(run_dir, name))
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert all({"loss", "lr", "tokens_per_s", "grad_norm"} <= set(r) for r in rows)
        assert list((stage_dir(run_dir, name) / "tb").glob("events.out.tfevents.*"))


def test_exported_encoder_loads_and_differs_from_base(run, tmp_path):
    run_dir, _ = run
    assert main(["export", str(run_dir), "--out", str(tmp_path / "exported")]) == 0
    boosted = spatialboost.load_encoder(tmp_path / "exported")
    assert boosted.boost_config is not None
    base = spatialboost.create_encoder("tiny-dinov2", seed=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        diff = (boosted(x).patch - base(x).patch).abs().max()
    assert diff > 1e-6, "stage 3 did not change the encoder"
    again = spatialboost.load_encoder(run_dir / "encoder")
    with torch.no_grad():
        assert torch.equal(again(x).patch, boosted(x).patch)


def test_bad_config_is_a_user_error(tmp_path, capsys):
    assert main([*TRAIN_BARE, f"run_dir={tmp_path}", "stages.align.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main([*TRAIN_BARE, f"run_dir={tmp_path}"]) == 2  # no datasets listed
    assert "data.datasets" in capsys.readouterr().err

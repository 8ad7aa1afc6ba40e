"""torchrun with gloo on CPU: 2 processes give the losses of 1 process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spatialboost.cli import main
from spatialboost.train import checkpoint as ckpt
from spatialboost.train.metrics import read_metrics
from spatialboost.train.stages import finished_output, stage_dir
from train_fixtures import make_dataset, one_thread, tiny_overrides  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, args: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "spatialboost", "train", *args]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]


STAGE = "instruct"  # projector + LLM train: the most parameters to reduce / shard


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process, global batch 4 as 2 accumulated micro-batches of 2."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_dataset(tmp / "data", n=16)
    common = tiny_overrides(tmp / "unused", data, steps=3, every=3, batch=2)[1:] + [f"stages.run=[{STAGE}]"]
    torch.set_num_threads(1)
    assert main(["train", f"run_dir={tmp / 'one'}", *common, f"stages.{STAGE}.grad_accum=2"]) == 0
    return tmp, common


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(one_process, tmp_path, strategy):
    tmp, common = one_process
    stage = STAGE
    two = [f"run_dir={tmp_path / 'two'}", *common, f"stages.{stage}.grad_accum=1", f"distributed={strategy}"]
    torchrun(2, two, tmp_path)
    tmp_path, two_dir = tmp, tmp_path / "two"
    loss_one = [r["loss"] for r in read_metrics(stage_dir(tmp_path / "one", stage))]
    loss_two = [r["loss"] for r in read_metrics(stage_dir(two_dir, stage))]
    assert len(loss_one) == len(loss_two) == 3
    assert loss_one == pytest.approx(loss_two, rel=1e-5, abs=1e-6)
    w1 = load_file(str(finished_output(tmp_path / "one", stage) / ckpt.WEIGHTS))
    w2 = load_file(str(finished_output(two_dir, stage) / ckpt.WEIGHTS))
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-4, atol=1e-5, msg=name)

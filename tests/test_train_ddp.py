"""torchrun with gloo on CPU: 2 processes give the losses of 1 process with the same global batch, and an
FSDP run killed with ``kill -9`` mid-stage resumes to the weights of an uninterrupted FSDP run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spatialboost.cli import main
from spatialboost.models.dual_channel import adapter_state_dict
from spatialboost.models.export import load_encoder
from spatialboost.train import checkpoint as ckpt
from spatialboost.train.metrics import read_metrics
from spatialboost.train.stages import checkpoints_dir, finished_output, stage_dir
from train_fixtures import TRAIN_BARE, make_dataset, one_thread, tiny_overrides  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
STAGE = "instruct"  # projector + LLM train: the most parameters to reduce / shard


def torchrun_cmd(nproc: int, args: list[str]) -> tuple[list[str], dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "spatialboost", *TRAIN_BARE, *args]  # fmt: skip
    return cmd, env


def torchrun(nproc: int, args: list[str], cwd: Path) -> None:
    cmd, env = torchrun_cmd(nproc, args)
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: one process, global batch 4 as 2 accumulated micro-batches of 2."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = make_dataset(tmp / "data", n=16)
    common = tiny_overrides(tmp / "unused", data, steps=3, every=1, batch=2)[1:]
    torch.set_num_threads(1)
    one = [f"run_dir={tmp / 'one'}", *common, f"stages.run=[{STAGE}]", f"stages.{STAGE}.grad_accum=2"]
    assert main([*TRAIN_BARE, *one]) == 0
    return tmp, common


def fsdp_args(run: Path, common: list[str]) -> list[str]:
    """Stage 2 (LLM layers sharded one by one) then stage 3 (encoder checkpoints), 2 processes."""
    return [f"run_dir={run}", *common, "stages.run=[instruct,encoder]", "distributed=fsdp"]


@pytest.fixture(scope="module")
def fsdp_reference(one_process):
    """An uninterrupted FSDP run; shared by the 1-vs-2-process check and the resume check."""
    tmp, common = one_process
    torchrun(2, fsdp_args(tmp / "fsdp", common), tmp)
    return tmp / "fsdp"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process(one_process, request, tmp_path, strategy):
    tmp, common = one_process
    if strategy == "fsdp":
        two_dir = request.getfixturevalue("fsdp_reference")
    else:
        two_dir = tmp_path / "two"
        torchrun(2, [f"run_dir={two_dir}", *common, f"stages.run=[{STAGE}]", "distributed=ddp"], tmp_path)
    loss_one = [r["loss"] for r in read_metrics(stage_dir(tmp / "one", STAGE))]
    loss_two = [r["loss"] for r in read_metrics(stage_dir(two_dir, STAGE))]
    assert len(loss_one) == len(loss_two) == 3
    assert loss_one == pytest.approx(loss_two, rel=1e-5, abs=1e-6)
    w1 = load_file(str(finished_output(tmp / "one", STAGE) / ckpt.WEIGHTS))
    w2 = load_file(str(finished_output(two_dir, STAGE) / ckpt.WEIGHTS))
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-4, atol=1e-5, msg=name)


def final_files(run: Path) -> dict[str, bytes]:
    out = {name: (finished_output(run, name) / ckpt.WEIGHTS).read_bytes() for name in ("instruct", "encoder")}
    out["encoder/adapter"] = (run / "encoder" / "adapter.safetensors").read_bytes()
    return out


def assert_checkpoints_complete(run: Path) -> None:
    """Each kept checkpoint resumes and exports on its own: full optimiser state; stage 3 also ``encoder/``."""
    for stage in ("instruct", "encoder"):
        kept = ckpt.list_checkpoints(checkpoints_dir(run, stage))
        assert kept, stage
        for path in kept:
            weights, optim, _ = ckpt.load_checkpoint(path)
            assert len(optim["optimizer"]["state"]) == len(weights), path
            if stage == "encoder":
                saved = adapter_state_dict(load_encoder(path / "encoder"))
                mine = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
                assert saved.keys() == mine.keys(), path
                for name in saved:
                    assert torch.equal(saved[name], mine[name]), (path, name)


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (torchrun starts its workers in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier += [child for child, parent in parents.items() if parent == pid]
    return tree


def kill_9_all(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and both workers at once, as a lost node would; wait until all are gone."""
    pids = process_tree(proc.pid)
    assert len(pids) >= 3, f"expected torchrun + 2 workers, found {pids}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_fsdp_resume_after_kill_9_matches_uninterrupted(fsdp_reference, one_process, tmp_path):
    tmp, common = one_process
    run = tmp_path / "run"
    cmd, env = torchrun_cmd(2, fsdp_args(run, common))
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = checkpoints_dir(run, STAGE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and ckpt.latest_checkpoint(target) is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    kill_9_all(proc)
    assert finished_output(run, STAGE) is None, "killed too late: the stage had finished"
    torchrun(2, fsdp_args(run, common), tmp_path)
    assert final_files(run) == final_files(fsdp_reference)
    assert_checkpoints_complete(fsdp_reference)
    assert_checkpoints_complete(run)

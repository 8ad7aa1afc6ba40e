"""Checkpoints: resume after a crash gives bit-identical weights; NaN stops cleanly; no frozen weights saved."""

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
from spatialboost.train import checkpoint as ckpt
from spatialboost.train.stages import STAGES, checkpoints_dir, finished_output
from train_fixtures import TRAIN_BARE, busy_cpu, make_dataset, one_thread, tiny_overrides  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("resume") / "data", n=16)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run of the three stages."""
    run = tmp_path_factory.mktemp("ref") / "run"
    torch.set_num_threads(1)
    assert main([*TRAIN_BARE, *tiny_overrides(run, data, steps=4, every=2)]) == 0
    return run


def final_files(run: Path) -> dict[str, bytes]:
    out = {name: (finished_output(run, name) / ckpt.WEIGHTS).read_bytes() for name in STAGES}
    out["encoder/adapter"] = (run / "encoder" / "adapter.safetensors").read_bytes()
    return out


def test_resume_after_simulated_crash_is_bitwise_identical(reference, data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_save = ckpt.save_checkpoint
    calls = {"n": 0}

    def crashing_save(root, step, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # stage 2's final checkpoint: die half-way through writing it
            (Path(root) / f".tmp-step-{step:08d}-dead").mkdir(parents=True)
            raise KeyboardInterrupt("simulated crash")
        return real_save(root, step, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        main([*TRAIN_BARE, *tiny_overrides(run, data, steps=4, every=2)])
    assert finished_output(run, "instruct") is None and finished_output(run, "align") is not None
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    assert main([*TRAIN_BARE, *tiny_overrides(run, data, steps=4, every=2)]) == 0
    assert final_files(run) == final_files(reference)
    assert not list(checkpoints_dir(run, "instruct").glob(".tmp-*"))


@pytest.mark.slow
def test_resume_after_kill_9_is_bitwise_identical(reference, data, tmp_path):
    run = tmp_path / "run"
    args = [*TRAIN_BARE, *tiny_overrides(run, data, steps=4, every=1)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "spatialboost", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    target = checkpoints_dir(run, "instruct")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and ckpt.latest_checkpoint(target) is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert finished_output(run, "encoder") is None
    assert main([*TRAIN_BARE, *tiny_overrides(run, data, steps=4, every=1)]) == 0
    assert final_files(run) == final_files(reference)


def test_checkpoint_holds_only_trainable_weights_without_pickle(reference):
    for name in STAGES:
        last = finished_output(reference, name)
        files = sorted(p.name for p in last.iterdir())
        assert ckpt.WEIGHTS in files and ckpt.OPTIM in files
        assert not [f for f in files if f.endswith((".bin", ".pkl", ".pth"))]
        keys = set(load_file(str(last / ckpt.WEIGHTS)))
        if name != "instruct":
            assert not any(k.startswith("llm.") for k in keys), name
        if name == "encoder":
            assert all(k.startswith("projector.") or ".plus." in k or k.endswith(".gate") for k in keys)
        state = torch.load(last / ckpt.OPTIM, weights_only=True)  # plain tensors and containers only
        assert {"optimizer", "scheduler", "rng"} <= set(state)
    kept = ckpt.list_checkpoints(checkpoints_dir(reference, "align"))
    assert [p.name for p in kept] == ["step-00000002", "step-00000004"]


def test_rerun_of_a_finished_run_changes_nothing_and_plans_no_data(reference, data, monkeypatch):
    """A finished stage is skipped before its data is tokenized (minutes for a big stage-3 set)."""
    from spatialboost.train import loop

    def no_plan(*a, **k):
        raise AssertionError("a finished stage planned its data again")

    before = final_files(reference)
    monkeypatch.setattr(loop, "plan_data", no_plan)
    assert main([*TRAIN_BARE, *tiny_overrides(reference, data, steps=4, every=2)]) == 0
    assert final_files(reference) == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = tiny_overrides(run, data, steps=8, every=1) + [
        "stages.run=[align]",
        "stages.align.lr=1.0e+30",
        "stages.align.grad_clip=0",
        "stages.align.warmup_ratio=0",
    ]
    assert main([*TRAIN_BARE, *overrides]) == 2
    err = capsys.readouterr().err
    assert "loss is nan" in err or "loss is inf" in err
    last = ckpt.latest_checkpoint(checkpoints_dir(run, "align"))
    assert last is not None, "no checkpoint before the divergence; make it diverge later"
    weights, _, state = ckpt.load_checkpoint(last)
    assert not state["done"] and all(torch.isfinite(t).all() for t in weights.values())
    assert str(last) in err


def test_changed_config_refuses_to_resume(reference, data, capsys):
    args = tiny_overrides(reference, data, steps=4, every=2) + ["stages.align.lr=0.5"]
    assert main([*TRAIN_BARE, *args]) == 2
    assert "different config" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ref_data(tmp_path_factory):
    """Engine conversations whose questions name many points and objects: with data.refs each sample
    carries ~100 (reference, patch) entries, so a micro-batch of 4 reads >= 256 of them (x 128 channels of
    the tiny ViT: the size from which a CPU accumulate of their gradient runs threaded)."""
    from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
    from spatialboost.datagen.questions.conversations import ConversationConfig
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig
    from spatialboost.datagen.sources import GenerateConfig, SyntheticSource

    root = tmp_path_factory.mktemp("refdata") / "data"
    conv = ConversationConfig(turns={"pixel": 2, "object": 2, "scene": 1},
                              extra_turns={"choice_closer_point": 2, "choice_closer_object": 2})  # fmt: skip
    cfg = GenerateConfig(scenes=8, seed=0, multiview_share=0.5, max_views=2, shard_size=8,
                         synthetic=SyntheticConfig(image_size=64), conversation=conv)  # fmt: skip
    write_dataset(SyntheticSource(cfg), WriteSpec(root, cfg.scenes, cfg.seed, cfg.shard_size, conv))
    return root


@pytest.mark.slow
def test_stage3_resume_under_load_is_bitwise_identical(ref_data, tmp_path, monkeypatch):
    """Issue 26: stage 3 (the fused dual-channel path, tiny-vit, 2 threads, grad accumulation, reference
    tokens as in the demo config) stopped at a mid-stage checkpoint and resumed equals the uninterrupted
    run bit for bit, repeated beside a busy thread so that a kernel or thread-count choice made at run time
    would show. The reference tokens are what provoked the issue: their features' gradient sums many
    entries into each patch, and advanced indexing's backward summed them by unordered atomic adds on
    2 threads, so every stage-3 weight came out ~1e-8 off from run to run (resumed or not)."""
    from spatialboost.models import vlm as vlm_module

    torch.set_num_threads(2)
    widest = {"elements": 0}
    real_gather = vlm_module.gather_patches

    def spy(feats, images, patches):
        if feats.requires_grad:
            widest["elements"] = max(widest["elements"], len(images) * feats.shape[-1])
        return real_gather(feats, images, patches)

    monkeypatch.setattr(vlm_module, "gather_patches", spy)

    def args(run: Path, *extra: str) -> list[str]:
        return [*TRAIN_BARE, *tiny_overrides(run, ref_data, steps=6, every=2), "model.encoder=tiny-vit",
                "data.refs=[point,region]", "data.image_tokens=false", "data.max_length=2048",
                "stages.encoder.grad_accum=2", "stages.encoder.batch_size=4", *extra]  # fmt: skip

    real_save = ckpt.save_checkpoint

    def crashing_save(root, step, *a, **k):
        path = real_save(root, step, *a, **k)
        if "encoder" in Path(root).parent.name and step == 2:
            raise KeyboardInterrupt("simulated crash mid stage 3")
        return path

    with busy_cpu():
        assert main(args(tmp_path / "ref")) == 0
        assert widest["elements"] >= 32768, f"stage 3 gathered only {widest} reference-feature elements"
        want = final_files(tmp_path / "ref")["encoder/adapter"]
        for rep in range(4):  # stages 1-2 from the reference run: each repeat is a fresh stage 3
            run, only3 = tmp_path / f"run{rep}", ["stages.run=[encoder]", f"init_from={tmp_path / 'ref'}"]
            monkeypatch.setattr(ckpt, "save_checkpoint", crashing_save)
            with pytest.raises(KeyboardInterrupt):
                main(args(run, *only3))
            monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
            assert main(args(run, *only3)) == 0
            got = (run / "encoder" / "adapter.safetensors").read_bytes()
            assert got == want, f"repeat {rep}: the resumed stage 3 differs from the uninterrupted one"
            assert (finished_output(run, "encoder") / ckpt.WEIGHTS).read_bytes() == (
                finished_output(tmp_path / "ref", "encoder") / ckpt.WEIGHTS
            ).read_bytes()

"""Stage trainable sets, frozen weights staying bit-identical, param groups, schedule, tiny overfit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spatialboost.config import ConfigError, load_config
from spatialboost.data.tokenizer import corpus_from_records, train_tokenizer
from spatialboost.dataset_format import read_records
from spatialboost.models.config import BoostConfig
from spatialboost.models.llm import ensure_image_token
from spatialboost.models.vlm import SpatialVLM
from spatialboost.train.config import TrainConfig
from spatialboost.train.data import BatchPlan, load_train_data, make_collator, micro_batch_loader
from spatialboost.train.distributed import DistEnv
from spatialboost.train.loop import clip_and_step, forward_backward
from spatialboost.train.stages import (
    build_vlm,
    make_optimizer,
    param_groups,
    set_stage_trainable,
    trainable_named,
    warmup_cosine,
)
from train_fixtures import make_dataset, one_thread, tiny_overrides  # noqa: F401


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    data = make_dataset(root / "data", n=12)
    cfg = load_config(TrainConfig, None, tiny_overrides(root / "run", data))
    tok = train_tokenizer(corpus_from_records(read_records(data)), vocab_size=300)
    ensure_image_token(tok)
    return cfg, tok


def _names(vlm):
    return set(trainable_named(vlm))


def test_align_trains_only_the_projector(setup):
    cfg, tok = setup
    vlm = build_vlm(cfg, tok, "align")
    summary = set_stage_trainable(vlm, "align", cfg.stages.align)
    assert list(summary) == ["projector"]
    assert _names(vlm) == {n for n, _ in vlm.projector.named_parameters(prefix="projector")}


def test_instruct_trains_projector_and_llm(setup):
    cfg, tok = setup
    vlm = build_vlm(cfg, tok, "instruct")
    summary = set_stage_trainable(vlm, "instruct", cfg.stages.instruct)
    assert list(summary) == ["projector", "llm"]
    names = _names(vlm)
    assert not any(n.startswith("encoder.") for n in names)
    assert {n for n, _ in vlm.llm.named_parameters(prefix="llm")} <= names


@pytest.mark.parametrize("train_projector", [True, False])
def test_encoder_stage_trains_attn_plus_and_gates(setup, train_projector):
    cfg, tok = setup
    cfg.stages.encoder.train_projector = train_projector
    vlm = build_vlm(cfg, tok, "encoder")
    summary = set_stage_trainable(vlm, "encoder", cfg.stages.encoder)
    assert set(summary) == {"adapter", "gates"} | ({"projector"} if train_projector else set())
    for name in _names(vlm):
        assert name.startswith("projector.") or ".plus." in name or name.endswith(".gate"), name
    assert not any(n.startswith("llm.") for n in _names(vlm))
    cfg.stages.encoder.train_projector = True


def test_stage3_steps_leave_llm_and_original_encoder_bit_identical(setup):
    cfg, tok = setup
    vlm = build_vlm(cfg, tok, "encoder")
    set_stage_trainable(vlm, "encoder", cfg.stages.encoder)
    before = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    params = trainable_named(vlm)
    opt = make_optimizer(vlm, cfg.stages.encoder)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    dcfg = cfg.data
    data = load_train_data(dcfg, tok, vlm)
    plan = BatchPlan(data, None, 0, 4, 1, 1)
    batches = micro_batch_loader(plan, 0, 3, 0, make_collator(dcfg, tok.pad_token_id))
    for step in range(3):
        forward_backward(
            vlm, [next(batches)], plan.target_tokens(step), DistEnv(), lambda: torch.enable_grad()
        )
        clip_and_step(params, opt, sched, cfg.stages.encoder)
    for name, p in vlm.named_parameters():
        if name in params:
            continue
        assert torch.equal(p, before[name]), f"frozen {name} changed"
    moved = [n for n in params if not torch.equal(params[n], before[n])]
    assert any(".plus." in n for n in moved) and any(n.startswith("projector.") for n in moved)


def _anchored_steps(cfg, tok, weight: float, steps: int = 4) -> list[float]:
    """Stage-3 steps from Attn+ moved off the original (so the CLS anchor starts > 0); the anchor per step."""
    cfg = dataclasses.replace(cfg, stages=dataclasses.replace(cfg.stages))
    cfg.stages.encoder = dataclasses.replace(cfg.stages.encoder, cls_anchor=weight, lr=3e-4)
    vlm = build_vlm(cfg, tok, "encoder")
    set_stage_trainable(vlm, "encoder", cfg.stages.encoder)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in vlm.encoder.named_parameters():
            if ".plus." in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.3 * (p.std() if p.numel() > 1 else 1.0))
    params = trainable_named(vlm)
    opt = make_optimizer(vlm, cfg.stages.encoder)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    data = load_train_data(cfg.data, tok, vlm)
    plan = BatchPlan(data, None, 0, 4, 1, 1)
    batches = micro_batch_loader(plan, 0, steps, 0, make_collator(cfg.data, tok.pad_token_id))
    anchors = []
    for step in range(steps):
        out = forward_backward(vlm, [next(batches)], plan.target_tokens(step), DistEnv(), torch.enable_grad)
        anchors.append(out.anchor)
        clip_and_step(params, opt, sched, cfg.stages.encoder)
    return anchors


def test_cls_anchor_pulls_the_cls_token_back_to_the_original(setup):
    cfg, tok = setup
    free = _anchored_steps(cfg, tok, 1e-9)  # measured, too weak to act
    held = _anchored_steps(cfg, tok, 1e3)
    assert free[0] == pytest.approx(held[0]) and free[0] > 0  # same start: seeded build, same perturbation
    assert held[-1] < 0.5 * held[0], held
    assert held[-1] < free[-1], (held, free)


def test_cls_anchor_off_returns_no_anchor_and_needs_dual_channel(setup):
    cfg, tok = setup
    vlm = build_vlm(cfg, tok, "encoder")
    assert vlm.cls_anchor == 0.0
    with pytest.raises(ConfigError, match="cls_anchor needs model.boost.mode=dual"):
        load_config(
            TrainConfig, None, [*_overrides(cfg), "stages.encoder.cls_anchor=1", "model.boost.mode=full"]
        )
    with pytest.raises(ConfigError, match=">= 0"):
        load_config(TrainConfig, None, [*_overrides(cfg), "stages.encoder.cls_anchor=-1"])


def _overrides(cfg) -> list[str]:
    return [f"run_dir={cfg.run_dir}", f"data.datasets=[{cfg.data.datasets[0]}]", "model.encoder=tiny-dinov2"]


def test_param_groups_and_gate_lr(setup):
    cfg, tok = setup
    vlm = build_vlm(cfg, tok, "encoder")
    groups = param_groups(vlm)
    assert groups["projector.fc1.weight"] == "projector"
    assert groups["llm.model.layers.0.mlp.up_proj.weight"] == "llm"
    assert groups["encoder.model.encoder.layer.0.attention.gate"] == "gates"
    assert groups["encoder.model.encoder.layer.0.attention.plus.q_proj.weight"] == "adapter"
    set_stage_trainable(vlm, "encoder", cfg.stages.encoder)
    scfg = cfg.stages.encoder
    scfg.weight_decay = 0.1
    opt = make_optimizer(vlm, scfg)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["gates/no_decay"]["lr"] == scfg.lr_gates and by_name["gates/no_decay"]["weight_decay"] == 0
    assert by_name["adapter"]["weight_decay"] == 0.1 and by_name["adapter/no_decay"]["weight_decay"] == 0
    scfg.weight_decay = 0.0


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, 100, 10, 0.1) for s in range(101)]
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0
    assert max(lrs) == pytest.approx(1.0, abs=1e-3)
    assert lrs[100] == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_loss_decreases_on_tiny_overfit(tmp_path):
    from spatialboost.train.pipeline import run_training

    data = make_dataset(tmp_path / "data", n=4, multi_every=0)
    overrides = tiny_overrides(tmp_path / "run", data, steps=20, every=20) + [
        "stages.run=[instruct]",
        "stages.instruct.lr=0.005",
        "stages.instruct.batch_size=4",
    ]
    cfg = load_config(TrainConfig, None, overrides)
    (result,) = run_training(cfg)
    assert math.isfinite(result.loss_end)
    assert result.loss_end < 0.5 * result.loss_start, (result.loss_start, result.loss_end)


def test_projector_norm_starts_at_the_token_embeddings_scale(setup):
    cfg, tok = setup
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, projector_norm=True))
    vlm = build_vlm(cfg, tok, "align")
    emb_rms = vlm.llm.get_input_embeddings().weight.pow(2).mean().sqrt()
    out = vlm.projector(torch.randn(64, vlm.encoder.spec.embed_dim) * 10.0)  # large features in
    assert torch.allclose(out.pow(2).mean().sqrt(), emb_rms, rtol=1e-3)
    summary = set_stage_trainable(vlm, "align", cfg.stages.align)
    assert "projector.norm.weight" in _names(vlm) and list(summary) == ["projector"]
    plain = build_vlm(setup[0], tok, "align")  # off by default: the checkpoints of earlier runs still load
    assert plain.projector.norm is None and not any(
        "norm" in n for n, _ in plain.projector.named_parameters()
    )


def test_full_finetune_stage_trains_every_encoder_weight(setup):
    cfg, tok = setup
    boost = BoostConfig(mode="full_finetune")  # the long name of mode "full"
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, boost=boost))
    vlm = build_vlm(cfg, tok, "encoder")
    summary = set_stage_trainable(vlm, "encoder", cfg.stages.encoder)
    assert set(summary) == {"projector", "adapter"}
    assert summary["adapter"]["params"] == sum(p.numel() for p in vlm.encoder.parameters())


def test_from_config_rebuilds_bit_identical_models(setup):
    cfg, tok = setup
    a = SpatialVLM.from_config(cfg.model, tok, seed=3, boosted=True)
    b = SpatialVLM.from_config(cfg.model, tok, seed=3, boosted=True)
    assert a.encoder.boost_config == cfg.model.boost
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = SpatialVLM.from_config(cfg.model, tok, seed=4)
    assert not torch.equal(c.projector.fc1.weight, a.projector.fc1.weight)

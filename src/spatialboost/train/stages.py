"""The paper's three stages (paper notes section 4): what each builds, trains and hands to the next.

===  ============  ==========================================  ==================================
 #   name          trainable                                   starts from
===  ============  ==========================================  ==================================
 1   ``align``     projector                                   fresh projector
 2   ``instruct``  projector + LLM                             stage 1's projector
 3   ``encoder``   Attn+ and gates (+ projector), LLM frozen   stage 2's projector + LLM
===  ============  ==========================================  ==================================

A stage's output is the ``trainable.safetensors`` of its final checkpoint (parameter names of the
``SpatialVLM``). Stage k starts by loading the outputs of the stages before it, in order, so stage 3
gets stage 1's projector overwritten by stage 2's, plus stage 2's LLM. Every base weight is rebuilt from
``(config, seed)``, so a resumed process holds bit-identical frozen weights.

Parameter groups for AdamW: ``projector``, ``llm``, ``adapter`` (Attn+, LoRA or full encoder weights)
and ``gates`` (the dual-channel alphas: their own lr, no weight decay); the encoder's two come from the
roles its adapter declares (``models.dual_channel.adapter_keys``), not from parameter names. Biases, norms and other 1-D
tensors of the other groups get no weight decay either (nanoGPT's rule).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from spatialboost.errors import UserError
from spatialboost.models.dual_channel import GATE, adapter_keys, mark_only_adapter_trainable
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.vlm import SpatialVLM, encoder_from_config
from spatialboost.train import checkpoint as ckpt
from spatialboost.train.config import STAGE_NAMES, StageConfig, TrainConfig

log = logging.getLogger(__name__)

GROUPS = ("projector", "llm", "adapter", "gates")


@dataclass(frozen=True)
class StageSpec:
    name: str
    index: int  # 1-based, as in the paper
    title: str
    llm: bool  # LLM trains
    encoder: str  # "frozen" | "adapter"
    boosted: bool  # the encoder carries the dual-channel adapter


STAGES = {
    "align": StageSpec("align", 1, "feature alignment (projector)", False, "frozen", False),
    "instruct": StageSpec(
        "instruct", 2, "visual instruction tuning (projector + LLM)", True, "frozen", False
    ),
    "encoder": StageSpec(
        "encoder", 3, "encoder tuning (Attn+ and gates, LLM frozen)", False, "adapter", True
    ),
}


def stage_dir(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / f"stage{STAGES[name].index}-{name}"


def checkpoints_dir(run_dir: str | Path, name: str) -> Path:
    return stage_dir(run_dir, name) / "checkpoints"


def finished_output(run_dir: str | Path, name: str) -> Path | None:
    """The final checkpoint of a finished stage, or None."""
    last = ckpt.latest_checkpoint(checkpoints_dir(run_dir, name))
    return last if last is not None and ckpt.read_state(last).get("done") else None


# ----------------------------------------------------------------------------------------------------
# Model


def build_vlm(cfg: TrainConfig, tokenizer, stage: str) -> SpatialVLM:
    """The stage's VLM (``SpatialVLM.from_config``; boosted for stage 3), every random init seeded from cfg.seed."""
    vlm = SpatialVLM.from_config(
        cfg.model,
        tokenizer,
        seed=cfg.seed,
        boosted=STAGES[stage].boosted,
        check_boost_layers=_boosts_later(cfg),
    )
    vlm.blind = cfg.blind
    vlm.cls_anchor = cfg.stages.encoder.cls_anchor if stage == "encoder" else 0.0
    return vlm


def build_encoder(cfg: TrainConfig, stage: str) -> VisionEncoder:
    """The stage's encoder alone, as ``build_vlm`` builds it (boosted for stage 3), seeded from cfg.seed."""
    return encoder_from_config(
        cfg.model, cfg.seed, STAGES[stage].boosted, check_boost_layers=_boosts_later(cfg)
    )


def _boosts_later(cfg: TrainConfig) -> bool:
    """Stage 3 runs: stage 1 already knows the encoder, so bad adapter layers are refused before training."""
    return "encoder" in cfg.stages.run


def load_previous_outputs(vlm: nn.Module, cfg: TrainConfig, stage: str) -> list[str]:
    """Load the outputs of the stages before ``stage`` (this run, else ``cfg.init_from``); returns sources."""
    loaded = []
    for prev in STAGE_NAMES[: STAGE_NAMES.index(stage)]:
        out = finished_output(cfg.run_dir, prev)
        if out is None and cfg.init_from:
            out = finished_output(cfg.init_from, prev)
        if out is None:
            continue
        load_trainable(vlm, ckpt.load_weights(out), source=str(out))
        loaded.append(str(out))
    if not loaded and stage != "align":
        log.warning("stage %s: no earlier stage output found; starting from fresh projector/LLM", stage)
    return loaded


def load_encoder_weights(encoder: nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """Load the ``encoder.*`` entries of VLM-level ``weights`` (a stage-3 checkpoint) into the encoder alone."""
    mine = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    load_trainable(encoder, mine, source=source)


def load_trainable(vlm: nn.Module, weights: dict[str, torch.Tensor], source: str = "") -> None:
    """Copy named tensors into ``vlm``'s parameters; every name must exist with the same shape."""
    params = dict(vlm.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise UserError(f"{source}: weights {unknown[:3]} do not belong to this model (config changed?)")
    with torch.no_grad():
        for name, tensor in weights.items():
            if params[name].shape != tensor.shape:
                raise UserError(
                    f"{source}: {name} has shape {tuple(tensor.shape)}, model wants {params[name].shape}"
                )
            params[name].copy_(tensor)


# ----------------------------------------------------------------------------------------------------
# Trainable set


def set_stage_trainable(vlm: SpatialVLM, stage: str, stage_cfg: StageConfig) -> dict[str, dict[str, int]]:
    """requires_grad per the stage table; returns and logs the trainable set grouped by parameter group."""
    spec = STAGES[stage]
    vlm.requires_grad_(False)
    vlm.projector.requires_grad_(stage != "encoder" or stage_cfg.train_projector)
    vlm.llm.requires_grad_(spec.llm if stage_cfg.train_llm is None else stage_cfg.train_llm)
    if spec.encoder == "adapter":
        mark_only_adapter_trainable(vlm.encoder)
    summary = trainable_summary(vlm)
    if not summary:
        raise UserError(f"stage {stage}: nothing to train (check model.boost and train_projector)")
    lines = [f"  {g:<9} {s['tensors']:>5} tensors {s['params']:>12,} params" for g, s in summary.items()]
    log.info("stage %d %s: trainable parameters\n%s", spec.index, spec.title, "\n".join(lines))
    log.debug("trainable tensors: %s", ", ".join(trainable_named(vlm)))
    return summary


def param_groups(vlm: SpatialVLM) -> dict[str, str]:
    """Parameter name -> optimiser group (``GROUPS``): the VLM part, and for the encoder the role its
    adapter declares (``dual_channel.adapter_keys``: the gates apart from everything else it trains)."""
    boosted = getattr(vlm.encoder, "boost_config", None) is not None
    roles = adapter_keys(vlm.encoder) if boosted else {}
    groups = {}
    for name, _ in vlm.named_parameters():
        part, _, rest = name.partition(".")
        if part == "encoder":
            groups[name] = "gates" if roles.get(rest) == GATE else "adapter"
        else:
            groups[name] = part  # "projector" | "llm"
    return groups


def trainable_named(vlm: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in vlm.named_parameters() if p.requires_grad}


def trainable_summary(vlm: SpatialVLM) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    groups = param_groups(vlm)
    for name, p in trainable_named(vlm).items():
        entry = out.setdefault(groups[name], {"tensors": 0, "params": 0})
        entry["tensors"] += 1
        entry["params"] += p.numel()
    return {g: out[g] for g in GROUPS if g in out}


# ----------------------------------------------------------------------------------------------------
# Optimiser and schedule


def make_optimizer(vlm: SpatialVLM, stage_cfg: StageConfig) -> torch.optim.AdamW:
    """AdamW over ``vlm``'s trainable parameters, one group per (part, decay) pair; gates: own lr, no decay."""
    groups_of = param_groups(vlm)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in trainable_named(vlm).items():
        group = groups_of[name]
        decay = group != "gates" and p.ndim >= 2
        buckets.setdefault((group, decay), []).append(p)
    groups = []
    for (group, decay), ps in sorted(buckets.items()):
        lr = stage_cfg.lr_gates if group == "gates" and stage_cfg.lr_gates is not None else stage_cfg.lr
        wd = stage_cfg.weight_decay if decay else 0.0
        groups.append(
            {"params": ps, "lr": lr, "weight_decay": wd, "name": f"{group}{'' if decay else '/no_decay'}"}
        )
    return torch.optim.AdamW(groups, lr=stage_cfg.lr, betas=stage_cfg.betas, foreach=False)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(opt: torch.optim.Optimizer, total_steps: int, stage_cfg: StageConfig):
    warmup = int(stage_cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, total_steps, warmup, stage_cfg.min_lr_ratio)
    )

"""One training stage, start to finish (nanoGPT's train.py is the readability bar).

``train_stage`` reads like a table of contents: build the model for the stage, load what earlier stages
produced, pick the trainable set, plan the data, resume from the newest checkpoint, then step::

    for step in range(start, total):
        loss = train_step(...)      # grad accumulation, loss over the global batch's answer tokens
        check_finite(loss)          # NaN/inf: stop before the update; the last good checkpoint stays
        log + checkpoint

Determinism: on CPU the same config and seed give bit-identical weights whether or not the run was
interrupted, because every input of step ``s`` is a function of the checkpoint at ``s``: the trainable
weights, the optimiser and scheduler state, the RNG state, and the data plan (a function of ``s``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from spatialboost.errors import UserError
from spatialboost.train import checkpoint as ckpt
from spatialboost.train import distributed as dist_utils
from spatialboost.train.config import DataConfig, StageConfig, TrainConfig
from spatialboost.train.data import BatchPlan, load_train_data, make_collator, micro_batch_loader
from spatialboost.train.distributed import DistEnv
from spatialboost.train.metrics import MetricsLogger, read_metrics
from spatialboost.train.stages import (
    STAGES,
    build_encoder,
    build_vlm,
    checkpoints_dir,
    load_previous_outputs,
    load_trainable,
    make_optimizer,
    make_scheduler,
    set_stage_trainable,
    stage_dir,
    trainable_named,
)

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """The loss became NaN/inf; the run stopped before applying that update."""


@dataclass
class StageResult:
    stage: str
    steps: int
    output: Path  # final checkpoint dir
    trainable: dict[str, dict[str, int]]
    loss_start: float = math.nan
    loss_end: float = math.nan
    tokens_per_s: float = math.nan
    samples_per_s: float = math.nan
    resumed_from: int = 0
    sources: list[str] = field(default_factory=list)


def train_stage(cfg: TrainConfig, stage: str, env: DistEnv, tokenizer) -> StageResult:
    scfg = cfg.stages.get(stage)
    out_dir = stage_dir(cfg.run_dir, stage)
    vlm = build_vlm(cfg, tokenizer, stage)
    sources = load_previous_outputs(vlm, cfg, stage)
    trainable = set_stage_trainable(vlm, stage, scfg)
    plan, collate = plan_data(cfg.stage_data(stage), scfg, cfg.seed, vlm, tokenizer, env)
    total = total_steps(scfg, plan)
    start, resume_state = find_resume(out_dir, vlm, total)
    vlm.to(env.device)
    model = dist_utils.wrap_model(vlm, env, cfg.distributed)
    params = trainable_named(vlm)
    opt = make_optimizer(params, scfg)
    sched = make_scheduler(opt, total, scfg)
    if resume_state is not None:
        restore_optimizer(model, opt, sched, resume_state, cfg.distributed)
    metrics = MetricsLogger(out_dir, f"stage{STAGES[stage].index}-{stage}", env.is_main, cfg.log.tensorboard)
    metrics.truncate_after(start)
    batches = micro_batch_loader(plan, start, total, env.rank, collate, cfg.stage_data(stage).num_workers)
    bar = tqdm(total=total, initial=start, desc=f"stage {STAGES[stage].index} {stage}", unit="step",
               disable=not (env.is_main and cfg.log.progress), dynamic_ncols=True)  # fmt: skip
    amp = autocast_context(cfg.precision, env.device)
    vlm.train()
    for step in range(start, total):
        t0 = time.perf_counter()
        micro = [next(batches) for _ in range(scfg.grad_accum)]
        loss, tokens, samples = forward_backward(model, micro, plan.target_tokens(step), env, amp)
        check_finite(loss, step, out_dir)
        grad_norm = clip_and_step(params, opt, sched, scfg)
        dt = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / dt:,.0f}")
        if (step + 1) % cfg.log.every == 0 or step == start or step + 1 == total:
            lr = opt.param_groups[0]["lr"]
            metrics.log(step + 1, dict(loss=loss, lr=lr, grad_norm=grad_norm, tokens_per_s=tokens / dt,
                                       samples_per_s=samples / dt, step_time_s=dt))  # fmt: skip
        if (step + 1) % cfg.checkpoint.every == 0 or step + 1 == total:
            save_stage_checkpoint(cfg, stage, model, vlm, opt, sched, step + 1, total, loss, env)
    bar.close()
    metrics.close()
    dist_utils.barrier(env)
    return summarize(stage, out_dir, total, trainable, start, sources)


# ----------------------------------------------------------------------------------------------------
# Setup


def plan_data(dcfg: DataConfig, scfg: StageConfig, seed: int, vlm, tokenizer, env: DistEnv):
    from spatialboost.models.vlm import image_transform_for

    image_size = dcfg.image_size or vlm.encoder.spec.image_size
    data = load_train_data(
        dcfg, tokenizer, vlm.num_image_tokens(image_size), image_transform_for(vlm.encoder, image_size)
    )
    plan = BatchPlan(data, dcfg.multi_view_ratio, seed, scfg.batch_size, scfg.grad_accum, env.world_size)
    return plan, make_collator(dcfg, tokenizer.pad_token_id)


def total_steps(scfg: StageConfig, plan: BatchPlan) -> int:
    if scfg.max_steps > 0:
        return scfg.max_steps
    return max(1, int(scfg.epochs * plan.steps_per_epoch))


def find_resume(out_dir: Path, vlm, total: int) -> tuple[int, dict | None]:
    """Load the newest checkpoint's weights into ``vlm``; returns (start step, optimiser/RNG state)."""
    root = out_dir / "checkpoints"
    ckpt.clear_leftovers(root)
    last = ckpt.latest_checkpoint(root)
    if last is None:
        return 0, None
    weights, optim_state, state = ckpt.load_checkpoint(last)
    if state["total_steps"] != total:
        raise UserError(
            f"{last}: this stage was planned for {state['total_steps']} steps, the config now gives {total}; "
            f"use a new run_dir or restore the config saved in {out_dir.parent / 'config.yaml'}"
        )
    load_trainable(vlm, weights, source=str(last))
    log.info("resuming %s at step %d/%d", out_dir.name, state["step"], total)
    return state["step"], optim_state


def restore_optimizer(model, opt, sched, state: dict, strategy: str) -> None:
    if strategy == "fsdp" and dist_utils.unwrap(model) is model and _is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(
            model, opt, state["optimizer"], options=StateDictOptions(full_state_dict=True)
        )
    else:
        opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"])


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast on GPUs (auto/bf16); fp32 on CPU unless bf16 is asked for (it is ~100x slower)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        if device.type == "cpu":
            log.warning("bf16 autocast on CPU: expect matmuls far slower than fp32 on CPUs without AMX")
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


# ----------------------------------------------------------------------------------------------------
# One step


def forward_backward(
    model, micro: list[dict], global_tokens: int, env: DistEnv, amp
) -> tuple[float, int, int]:
    """Accumulate gradients of (summed answer-token loss / global answer tokens) over the micro-batches.

    Returns the global batch's mean token loss (reduced over processes), real tokens and samples seen.
    """
    scale = env.world_size / global_tokens  # DDP averages gradients over processes
    loss_sum = torch.zeros((), dtype=torch.float64)
    tokens = samples = 0
    for i, batch in enumerate(micro):
        samples += len(batch.pop("ids"))
        tokens += int(batch["attention_mask"].sum())
        batch = {
            k: v.to(env.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
        }
        with dist_utils.no_sync(model, i < len(micro) - 1), amp():
            out = model(**batch, return_logits=False)  # loss over the labelled positions only
        summed = out.loss * out.num_label_tokens  # the VLM returns the mean over its tokens
        (summed * scale).backward()
        loss_sum += summed.detach().double().cpu()
    counts = torch.tensor([float(loss_sum), tokens, samples], dtype=torch.float64)
    loss_total, tokens, samples = dist_utils.all_reduce_sum(counts, env).tolist()
    return loss_total / global_tokens, int(tokens), int(samples)


def check_finite(loss: float, step: int, out_dir: Path) -> None:
    if math.isfinite(loss):
        return
    last = ckpt.latest_checkpoint(out_dir / "checkpoints")
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    raise NonFiniteLossError(
        f"step {step + 1}: loss is {loss}; stopped before applying the update ({kept}). "
        "Lower the learning rate (or raise warmup) and re-run the same command to resume from it."
    )


def clip_and_step(params: dict, opt, sched, scfg: StageConfig) -> float:
    grads = [p for p in params.values() if p.grad is not None]
    if scfg.grad_clip > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(grads, scfg.grad_clip))
    else:
        norm = float(torch.linalg.vector_norm(torch.stack([g.grad.norm() for g in grads])))
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return norm


# ----------------------------------------------------------------------------------------------------
# Checkpoints and summary


def save_stage_checkpoint(cfg, stage, model, vlm, opt, sched, step, total, loss, env: DistEnv) -> None:
    """Gather the trainable weights + optimiser state (collective under FSDP); rank 0 writes."""
    weights = dist_utils.full_state(dict(trainable_named(vlm)))
    optim_state = _optimizer_state(model, opt, cfg.distributed)
    if env.is_main:
        state = {"stage": stage, "step": step, "total_steps": total, "done": step == total, "loss": loss}
        extra = _encoder_writer(cfg, vlm, weights) if stage == "encoder" else None
        path = ckpt.save_checkpoint(
            checkpoints_dir(cfg.run_dir, stage),
            step,
            weights,
            {"optimizer": optim_state, "scheduler": sched.state_dict(), "rng": ckpt.rng_state()},
            state,
            keep_last=cfg.checkpoint.keep_last,
            write_extra=extra,
        )
        log.debug("checkpoint %s", path)
    dist_utils.barrier(env)


def _optimizer_state(model, opt, strategy: str) -> dict:
    if strategy == "fsdp" and _is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, opt, options=opts)
    return opt.state_dict()


def _is_sharded(model) -> bool:
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def _encoder_writer(cfg, vlm, weights: dict[str, torch.Tensor]):
    """Writes a stage-3 checkpoint's ``encoder/``. Under FSDP the live encoder holds only shards, so an
    unsharded copy (rebuilt from config and seed, like every frozen weight) takes the gathered weights."""
    from spatialboost.models.export import save_encoder

    encoder = vlm.encoder
    if _is_sharded(vlm):
        encoder = _unsharded_encoders.get(vlm)
        if encoder is None:
            with torch.random.fork_rng(devices=[]):
                encoder = _unsharded_encoders[vlm] = build_encoder(cfg, "encoder")
        mine = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
        load_trainable(encoder, mine, source="gathered checkpoint weights")
    return lambda tmp: save_encoder(encoder, tmp / "encoder", include_base=False)


_unsharded_encoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # FSDP: one copy per VLM


def summarize(stage, out_dir: Path, total: int, trainable, start: int, sources: list[str]) -> StageResult:
    rows = read_metrics(out_dir)
    result = StageResult(stage, total, ckpt.latest_checkpoint(out_dir / "checkpoints"), trainable,
                         resumed_from=start, sources=sources)  # fmt: skip
    if rows:
        result.loss_start, result.loss_end = rows[0]["loss"], rows[-1]["loss"]
        timed = rows[1:] or rows  # the first step pays for warm-up
        result.tokens_per_s = sum(r["tokens_per_s"] for r in timed) / len(timed)
        result.samples_per_s = sum(r["samples_per_s"] for r in timed) / len(timed)
    return result

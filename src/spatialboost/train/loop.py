"""One training stage, start to finish (nanoGPT's train.py is the readability bar).

``train_stage`` reads like a table of contents: build the model for the stage, load what earlier stages
produced, pick the trainable set, plan the data, resume from the newest checkpoint, then step::

    for step in range(start, end):
        loss = train_step(...)      # grad accumulation, loss over the global batch's answer tokens
        check_finite(loss)          # NaN/inf: stop before the update; the last good checkpoint stays
        log + checkpoint

Determinism: on CPU the same config and seed give bit-identical weights whether or not the run was
interrupted, because every input of step ``s`` is a function of the checkpoint at ``s``: the trainable
weights, the optimiser and scheduler state, the RNG state, and the data plan (a function of ``s``) --
and because no op on the training path sums in an order chosen at run time (threaded atomic adds: see
``models.vlm.gather_patches``, issue 26), so the same holds on several threads of a loaded host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from tqdm import tqdm

from spatialboost.errors import UserError
from spatialboost.io import atomic_write_json
from spatialboost.models.export import save_encoder
from spatialboost.train import checkpoint as ckpt
from spatialboost.train import distributed as dist_utils
from spatialboost.train.config import DataConfig, StageConfig, TrainConfig
from spatialboost.train.data import BatchPlan, load_train_data, make_collator, micro_batch_loader
from spatialboost.train.distributed import DistEnv
from spatialboost.train.features import FeatureStore, build_feature_store, cache_key, dataset_images
from spatialboost.train.image_gain import describe, load_eval_dataset, measure_image_gain
from spatialboost.train.metrics import MetricsLogger, read_metrics
from spatialboost.train.stages import (
    STAGES,
    build_encoder,
    build_vlm,
    checkpoints_dir,
    finished_output,
    load_encoder_weights,
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
    data = cfg.stage_data(stage)  # resolved once: the stage's partial data over the top-level data
    out_dir = stage_dir(cfg.run_dir, stage)
    if stage == "encoder":
        check_stage2_image_gain(cfg)
    vlm = build_vlm(cfg, tokenizer, stage)
    sources = load_previous_outputs(vlm, cfg, stage)
    trainable = set_stage_trainable(vlm, stage, scfg)
    # a finished stage has nothing left to compute: return before planning its data (tokenizing a big stage-3 set
    # takes minutes)
    done = finished_record(cfg, stage)
    if done is not None:
        log.info("stage %s: finished at step %d in %s; nothing to do", stage, done, out_dir)
        return summarize(stage, out_dir, done, trainable, done, sources)
    plan, collate = plan_data(data, scfg, cfg.seed, vlm, tokenizer, env)
    if data.cache_features and STAGES[stage].encoder == "frozen":
        attach_feature_cache(cfg, data, vlm, plan.data, env)
    total = total_steps(scfg, plan)
    start, resume_state, end = find_resume(out_dir, vlm, total)
    vlm.to(env.device)
    model = dist_utils.wrap_distributed(vlm, env, cfg.distributed)
    params = trainable_named(vlm)
    opt = make_optimizer(vlm, scfg)
    sched = make_scheduler(opt, total, scfg)
    if resume_state is not None:
        restore_optimizer(model, opt, sched, resume_state, cfg.distributed)
    metrics = MetricsLogger(out_dir, f"stage{STAGES[stage].index}-{stage}", env.is_main, cfg.log.tensorboard)
    metrics.truncate_after(start)
    batches = micro_batch_loader(plan, start, total, env.rank, collate, data.num_workers)
    bar = tqdm(total=total, initial=start, desc=f"stage {STAGES[stage].index} {stage}", unit="step",
               disable=not (env.is_main and cfg.log.progress), dynamic_ncols=True)  # fmt: skip
    amp = autocast_context(cfg.precision, env.device)
    vlm.train()
    stop, gain = (
        False,
        None,
    )  # an early stop and its deciding image gain (a resumed finished stage runs no step)
    for step in range(start, end):
        t0 = time.perf_counter()
        micro = [next(batches) for _ in range(scfg.grad_accum)]
        loss, tokens, samples, anchor = forward_backward(model, micro, plan.target_tokens(step), env, amp)
        check_finite(loss, step, out_dir)
        grad_norm = clip_and_step(params, opt, sched, scfg)
        dt = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / dt:,.0f}")
        if (step + 1) % cfg.log.every == 0 or step == start or step + 1 == total:
            lr = opt.param_groups[0]["lr"]
            metrics.log(step + 1, dict(loss=loss, lr=lr, grad_norm=grad_norm, tokens_per_s=tokens / dt,
                                       samples_per_s=samples / dt, step_time_s=dt)
                        | ({} if anchor is None else {"cls_anchor": anchor}))  # fmt: skip
        if gain_due(cfg, stage, step + 1, total):
            stop, gain = measure_and_check(cfg, stage, data, vlm, tokenizer, metrics, step + 1, env)
        if stop or (step + 1) % cfg.checkpoint.every == 0 or step + 1 == total:
            save_stage_checkpoint(cfg, stage, model, vlm, opt, sched, step + 1, total, loss, env,
                                  stopped=stop_record(cfg, step + 1) if stop else None)  # fmt: skip
        if stop:
            end = step + 1
            log.info("stage %s: held-out A/B accuracy reached stages.instruct.stop_at_ab_accuracy=%g at step "
                     "%d/%d: stopped", stage, cfg.stages.instruct.stop_at_ab_accuracy, end, total)  # fmt: skip
            break
    bar.close()
    if env.is_main and stage in GAIN_STAGES:
        # an early stop's deciding measurement is the stage's final one (same weights, same step)
        final = record_image_gain(
            cfg, stage, data, vlm, tokenizer, metrics, end, measured=gain if stop else None
        )
        if (
            stage == "align"
            and scfg.train_llm
            and final
            and "all" in final
            and not reads_image(final, cfg.image_gain)
        ):
            log.warning("stage 1's reading warm-up ended at step %d with an LM that does not read the image (%s); "
                        "stages 2 and 3 cannot fix that. A longer warm-up lets it learn: CLIP-B/16 read on a seed "
                        "at stages.align.max_steps=800 that did not at 400 (docs/results.md, session 19)",
                        end, describe(final))  # fmt: skip
    metrics.close()
    dist_utils.barrier(env)
    return summarize(stage, out_dir, end, trainable, start, sources)


def finished_record(cfg: TrainConfig, stage: str) -> int | None:
    """The step a stage finished at when a re-run has nothing left to compute: its final checkpoint is written
    and, where a finished stage records one, its image gain too; else None (train, or finish recording)."""
    last = finished_output(cfg.run_dir, stage)
    if last is None:
        return None
    if (
        stage in GAIN_STAGES
        and cfg.image_gain.datasets
        and not (stage_dir(cfg.run_dir, stage) / GAIN_FILE).is_file()
    ):
        return None
    return int(ckpt.read_state(last)["step"])


# ----------------------------------------------------------------------------------------------------
# Does the LM read the image?

GAIN_STAGES = ("align", "instruct", "encoder")
GAIN_FILE = "image_gain.json"


def gain_due(cfg: TrainConfig, stage: str, step: int, total: int) -> bool:
    every = cfg.image_gain.every
    return bool(
        cfg.image_gain.datasets and every and stage in GAIN_STAGES and step % every == 0 and step < total
    )


def measure_and_check(
    cfg: TrainConfig, stage: str, dcfg: DataConfig, vlm, tokenizer, metrics, step: int, env: DistEnv
) -> tuple[bool, dict | None]:
    """Log the image gain now (rank 0 measures; its result, None on other ranks); the flag is True on every rank
    when stage 2 should stop here: its held-out A/B accuracy with the right images reached
    ``stages.instruct.stop_at_ab_accuracy``."""
    reached, result = torch.zeros((), device=env.device), None
    if env.is_main:
        result = log_image_gain(cfg, stage, dcfg, vlm, tokenizer, metrics, step)
        reached.fill_(float(reaches_stop_target(cfg, stage, result)))
    return bool(dist_utils.all_reduce_sum(reached, env).item()), result


def reaches_stop_target(cfg: TrainConfig, stage: str, result: dict) -> bool:
    target = cfg.stages.instruct.stop_at_ab_accuracy
    return bool(
        stage == "instruct" and target and "choice" in result and result["choice"]["acc_right"] >= target
    )


def stop_record(cfg: TrainConfig, step: int) -> dict:
    """What an early-stopped stage's final checkpoint records (find_resume ends the stage there)."""
    return {"step": step, "stop_at_ab_accuracy": cfg.stages.instruct.stop_at_ab_accuracy}


def measure_stage_gain(cfg: TrainConfig, stage: str, dcfg: DataConfig, vlm, tokenizer, step: int) -> dict:
    """The image gain of ``vlm`` on every ``image_gain.datasets`` (the first one's at the top level), read
    as the stage reads its data (``dcfg``)."""
    gcfg = cfg.image_gain
    vlm = dist_utils.unwrap(vlm)
    results = {}
    for root in gcfg.datasets:
        data = load_eval_dataset(root, tokenizer, vlm, dcfg)
        results[str(root)] = measure_image_gain(vlm, data, tokenizer, gcfg.max_samples, gcfg.batch_size)
    result = {"stage": stage, "step": step, "blind_model": cfg.blind, **next(iter(results.values()))}
    if len(results) > 1:
        result["per_dataset"] = results
    return result


def log_image_gain(
    cfg: TrainConfig, stage: str, dcfg: DataConfig, vlm, tokenizer, metrics, step: int
) -> dict:
    """Measure now and log the gains (all levels, A/B accuracy) to metrics.jsonl / TensorBoard."""
    result = measure_stage_gain(cfg, stage, dcfg, vlm, tokenizer, step)
    log.info("stage %s step %d: %s", stage, step, describe(result))
    flat = {f"image_gain/{k}": v["gain"] for k, v in result.items() if isinstance(v, dict) and "gain" in v}
    if "choice" in result:
        flat["image_gain/choice_acc_right"] = result["choice"]["acc_right"]
        flat["image_gain/choice_acc_other"] = result["choice"]["acc_other"]
    metrics.log(step, flat)
    return result


def record_image_gain(
    cfg: TrainConfig,
    stage: str,
    dcfg: DataConfig,
    vlm,
    tokenizer,
    metrics,
    step: int,
    measured: dict | None = None,
) -> dict | None:
    """Measure the image gain on ``image_gain.datasets`` once per finished stage (image_gain.json); ``measured``:
    a measurement of these weights already taken (and logged) at ``step``, written as it is."""
    path = stage_dir(cfg.run_dir, stage) / GAIN_FILE
    if not cfg.image_gain.datasets or path.is_file():
        return json.loads(path.read_text()) if path.is_file() else None
    result = measured or log_image_gain(cfg, stage, dcfg, vlm, tokenizer, metrics, step)
    atomic_write_json(path, result)
    return result


def recorded_gain(stage: str, *roots: str | Path | None) -> dict | None:
    """``stage``'s recorded image gain from the first run dir in ``roots`` that has one, or None."""
    for root in roots:
        path = stage_dir(root, stage) / GAIN_FILE if root else None
        if path is not None and path.is_file():
            return json.loads(path.read_text())
    return None


def stage2_image_gain(cfg: TrainConfig) -> dict | None:
    """Stage 2's recorded image gain (this run, else ``init_from``), or None."""
    return recorded_gain("instruct", cfg.run_dir, cfg.init_from)


def reads_image(gain: dict, gcfg) -> bool:
    """Does a measured image gain say the LM reads the image: ``min_gain`` nats per answer token, or an A/B
    accuracy ``min_choice_gap`` above other images' and beyond 2 standard errors."""
    choice = gain.get("choice")
    gap = choice["acc_right"] - choice["acc_other"] if choice else 0.0
    return gain["all"]["gain"] >= gcfg.min_gain or bool(
        choice and gap >= gcfg.min_choice_gap and gap > 2 * choice["stderr"]
    )


def reader_gain(*roots: str | Path | None) -> tuple[str, dict | None]:
    """(stage, its recorded image gain) of the LM stage 3 reads through, from the first run dir in ``roots``
    that has it: stage 2's, else stage 1's (a recipe without stage 2: the paper's frozen-LM stage 1, then stage
    3); ("instruct", None) when neither was measured."""
    for stage in ("instruct", "align"):
        gain = recorded_gain(stage, *roots)
        if gain is not None:
            return stage, gain
    return "instruct", None


def check_stage2_image_gain(cfg: TrainConfig) -> None:
    """Stage 3 tunes the encoder through the frozen LM: warn (or refuse) when that LM ignores the image (as
    stage 2 left it, or stage 1 where no stage 2 ran)."""
    stage, gain = reader_gain(cfg.run_dir, cfg.init_from)
    name = f"stage {STAGES[stage].index}"
    gcfg = cfg.image_gain
    if gain is None or "all" not in gain:
        log.warning(
            "stage 3: %s's image gain was not measured (set image_gain.datasets to held-out data); "
            "if the LM does not read the image, stage 3 can only drift the encoder",
            name,
        )
        return
    value = gain["all"]["gain"]
    choice = gain.get("choice")
    gap = choice["acc_right"] - choice["acc_other"] if choice else 0.0
    if reads_image(gain, gcfg):
        log.info("stage 3: %s reads the image: gain %.3f nats/token, A/B accuracy %+.1f points with the right "
                 "images", name, value, 100 * gap)  # fmt: skip
        return
    msg = (
        f"{name}'s VLM barely reads the image: image gain {value:.3f} ± {gain['all']['stderr']:.3f} "
        f"nats/answer token < image_gain.min_gain={gcfg.min_gain}"
        + (
            f" and A/B accuracy only {100 * gap:+.1f} points above other images' (< min_choice_gap)"
            if choice
            else ""
        )
        + f"; stage 3 can then only drift the encoder. Train {name} longer, use reference tokens "
        "(data.refs=[point,region]) with a reading warm-up (stages.align.train_llm) or a pre-trained LM"
    )
    if gcfg.on_low == "refuse":
        raise UserError(msg + " (or set image_gain.on_low=warn to go on)")
    log.warning("%s", msg)


# ----------------------------------------------------------------------------------------------------
# Setup


def plan_data(dcfg: DataConfig, scfg: StageConfig, seed: int, vlm, tokenizer, env: DistEnv):
    data = load_train_data(dcfg, tokenizer, vlm)
    plan = BatchPlan(data, dcfg.multi_view_ratio, seed, scfg.batch_size, scfg.grad_accum, env.world_size)
    return plan, make_collator(dcfg, tokenizer.pad_token_id)


def attach_feature_cache(cfg: TrainConfig, dcfg: DataConfig, vlm, data, env: DistEnv) -> None:
    """Frozen encoder: encode every image once (rank 0 writes the cache) and serve cached features."""
    parts = data.dataset.datasets
    paths = dataset_images(parts)
    cache_dir = Path(dcfg.feature_cache_dir or Path(cfg.run_dir) / "features")
    transform = parts[0].transform
    if env.is_main:
        store = build_feature_store(vlm.encoder, transform, paths, cache_dir)
    dist_utils.barrier(env)
    if not env.is_main:
        store = FeatureStore(cache_dir / cache_key(vlm.encoder, transform, paths))
    for part in parts:
        part.feature_store = store


def total_steps(scfg: StageConfig, plan: BatchPlan) -> int:
    if scfg.max_steps > 0:
        return scfg.max_steps
    return max(1, int(scfg.epochs * plan.steps_per_epoch))


def find_resume(out_dir: Path, vlm, total: int) -> tuple[int, dict | None, int]:
    """Load the newest checkpoint's weights into ``vlm``; returns (start step, optimiser/RNG state, end step):
    the end is ``total``, or the step a finished stage stopped early at."""
    root = out_dir / "checkpoints"
    ckpt.clear_leftovers(root)
    last = ckpt.latest_checkpoint(root)
    if last is None:
        return 0, None, total
    weights, optim_state, state = ckpt.load_checkpoint(last)
    if state["total_steps"] != total:
        raise UserError(
            f"{last}: this stage was planned for {state['total_steps']} steps, the config now gives {total}; "
            f"use a new run_dir or restore the config saved in {out_dir.parent / 'config.yaml'}"
        )
    load_trainable(vlm, weights, source=str(last))
    log.info("resuming %s at step %d/%d", out_dir.name, state["step"], total)
    return state["step"], optim_state, state["step"] if state.get("stopped") else total


def restore_optimizer(model, opt, sched, state: dict, strategy: str) -> None:
    if strategy == "fsdp" and dist_utils.unwrap(model) is model and _is_sharded(model):
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


class StepLoss(NamedTuple):
    loss: float  # the global batch's mean answer-token loss
    tokens: int  # real tokens seen (all processes)
    samples: int
    anchor: float | None = None  # stage 3's CLS anchor (unweighted, mean over micro-batches); None: off


def forward_backward(model, micro: list[dict], global_tokens: int, env: DistEnv, amp) -> StepLoss:
    """Accumulate gradients of (summed answer-token loss / global answer tokens) over the micro-batches,
    plus ``cls_anchor`` x the CLS anchor averaged over micro-batches when the VLM returns one.

    Returns the global batch's mean token loss (reduced over processes), real tokens and samples seen.
    """
    scale = env.world_size / global_tokens  # DDP averages gradients over processes
    loss_sum = torch.zeros((), dtype=torch.float64)
    anchor_sum = None
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
        objective = summed * scale
        if out.anchor is not None:
            objective = objective + dist_utils.unwrap(model).cls_anchor * out.anchor / len(micro)
            anchor_sum = float(out.anchor.detach()) + (anchor_sum or 0.0)
        objective.backward()
        loss_sum += summed.detach().double().cpu()
    counts = torch.tensor([float(loss_sum), tokens, samples], dtype=torch.float64)
    loss_total, tokens, samples = dist_utils.all_reduce_sum(counts, env).tolist()
    anchor = None if anchor_sum is None else anchor_sum / len(micro)  # this process's
    return StepLoss(loss_total / global_tokens, int(tokens), int(samples), anchor)


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


def save_stage_checkpoint(
    cfg, stage, model, vlm, opt, sched, step, total, loss, env: DistEnv, stopped: dict | None = None
) -> None:
    """Gather the trainable weights + optimiser state (collective under FSDP); rank 0 writes. ``stopped``: the
    stage ends here before ``total`` (``stop_record``), so this checkpoint is its final one."""
    weights = dist_utils.full_state(dict(trainable_named(vlm)))
    optim_state = _optimizer_state(model, opt, cfg.distributed)
    if env.is_main:
        state = {"stage": stage, "step": step, "total_steps": total, "done": step == total or stopped is not None,
                 "loss": loss} | ({"stopped": stopped} if stopped else {})  # fmt: skip
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
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, opt, options=opts)
    return opt.state_dict()


def _is_sharded(model) -> bool:
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def _encoder_writer(cfg, vlm, weights: dict[str, torch.Tensor]):
    """Writes a stage-3 checkpoint's ``encoder/``. Under FSDP the live encoder holds only shards, so an
    unsharded copy (rebuilt from config and seed, like every frozen weight) takes the gathered weights."""
    encoder = vlm.encoder
    if _is_sharded(vlm):
        encoder = _unsharded_encoders.get(vlm)
        if encoder is None:
            with torch.random.fork_rng(devices=[]):
                encoder = _unsharded_encoders[vlm] = build_encoder(cfg, "encoder")
        load_encoder_weights(encoder, weights, source="gathered checkpoint weights")
    return lambda tmp: save_encoder(encoder, tmp / "encoder", include_base=False)


_unsharded_encoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # FSDP: one copy per VLM


def summarize(stage, out_dir: Path, total: int, trainable, start: int, sources: list[str]) -> StageResult:
    rows = [r for r in read_metrics(out_dir) if "loss" in r]
    result = StageResult(stage, total, ckpt.latest_checkpoint(out_dir / "checkpoints"), trainable,
                         resumed_from=start, sources=sources)  # fmt: skip
    if rows:
        result.loss_start, result.loss_end = rows[0]["loss"], rows[-1]["loss"]
        timed = rows[1:] or rows  # the first step pays for warm-up
        result.tokens_per_s = sum(r["tokens_per_s"] for r in timed) / len(timed)
        result.samples_per_s = sum(r["samples_per_s"] for r in timed) / len(timed)
    return result

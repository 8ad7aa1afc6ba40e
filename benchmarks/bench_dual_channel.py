"""Forward latency of the dual-channel encoder vs its base (paper Eq. 1), CPU fp32.

    .venv/bin/python benchmarks/bench_dual_channel.py [--shapes vit-s14 vit-b16] [--batch 8] [--repeats 7] [--train]

Random-weight ViT-S/14 and ViT-B/16 shapes at 224x224. Base, fused boosted and naive copy-and-call
boosted runs are interleaved (one of each per repeat) so drift on a shared machine hits all of them;
medians and ratios are reported with the parameter overhead. ``--train`` also times forward+backward
with only the adapter trainable (the base: every parameter trainable, the usual fine-tuning cost is
not the comparison -- there the base runs with its weights frozen and inputs requiring grad).
Target: fused boosted / base <= 1.40 in inference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spatialboost.models.dual_channel import add_dual_channel, trainable_parameters
from spatialboost.models.encoders import create_encoder


def build(shape: str):
    base = create_encoder(shape, seed=0)
    fused = add_dual_channel(create_encoder(shape, seed=0))
    naive = add_dual_channel(create_encoder(shape, seed=0), fused=False)
    return {"base": base, "fused": fused, "naive": naive}


def time_inference(model, x) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one forward."""
    with torch.inference_mode():
        t, c = time.perf_counter(), time.process_time()
        model(x)
        return time.perf_counter() - t, time.process_time() - c


def time_train(model, x) -> tuple[float, float]:
    x = x.clone().requires_grad_(True)  # the base has nothing trainable; make backward reach every layer
    t, c = time.perf_counter(), time.process_time()
    out = model(x)
    (out.patch.mean() + out.cls.mean()).backward()
    return time.perf_counter() - t, time.process_time() - c


def bench(shape: str, batch: int, repeats: int, train: bool) -> None:
    models = build(shape)
    models["base"].requires_grad_(False)
    side = models["base"].spec.image_size
    x = torch.randn(batch, 3, side, side)
    timer = time_train if train else time_inference
    for m in models.values():  # warm-up
        timer(m, x)
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for name, m in models.items():
            w, c = timer(m, x)
            wall[name].append(w)
            cpu[name].append(c)
    med = {k: statistics.median(v) for k, v in wall.items()}
    # per-repeat ratios against the base run right before: robust to slow drift of a shared machine
    paired = {
        k: statistics.median([a / b for a, b in zip(wall[k], wall["base"], strict=True)])
        for k in ("fused", "naive")
    }
    cpu_ratio = {k: statistics.median(cpu[k]) / statistics.median(cpu["base"]) for k in ("fused", "naive")}
    n_base = sum(p.numel() for p in models["base"].parameters())
    n_extra = sum(p.numel() for p in trainable_parameters(models["fused"]).values())
    mode = "train fwd+bwd" if train else "inference"
    print(
        f"{shape:8s} {mode:14s} batch {batch} {side}x{side}: base {med['base'] * 1e3:7.1f} ms | "
        f"fused {med['fused'] * 1e3:7.1f} ms ({med['fused'] / med['base']:.2f}x) | "
        f"naive {med['naive'] * 1e3:7.1f} ms ({med['naive'] / med['base']:.2f}x) | "
        f"params +{100 * n_extra / n_base:.1f}% ({n_extra / 1e6:.2f}M on {n_base / 1e6:.2f}M)\n"
        f"{'':23s} median paired ratio: fused {paired['fused']:.2f}x, naive {paired['naive']:.2f}x; "
        f"CPU-time ratio: fused {cpu_ratio['fused']:.2f}x, naive {cpu_ratio['naive']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["vit-s14", "vit-b16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train", action="store_true", help="also time forward+backward")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for shape in args.shapes:
        bench(shape, args.batch, args.repeats, train=False)
        if args.train:
            bench(shape, args.batch, max(3, args.repeats // 2), train=True)


if __name__ == "__main__":
    main()

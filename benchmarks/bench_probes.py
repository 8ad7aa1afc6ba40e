"""Probe throughput: feature extraction images/s (frozen encoder, 224 px) and probe training time from the cache.

    .venv/bin/python benchmarks/bench_probes.py [--encoders tiny-vit vit-s14] [--images 64] [--size 224]

Random-weight encoders from the registry and random images with random targets: the numbers measure
compute, not accuracy. The cache is written to a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np

from spatialboost.eval.datasets.base import ProbeDataset, ProbeSample
from spatialboost.eval.features import extract_features
from spatialboost.eval.probes import CONFIG_FIELD, PROBES, ProbeConfigs, run_probe
from spatialboost.models.encoders import create_encoder


class RandomDataset(ProbeDataset):
    name = "random"
    tasks = ("depth", "seg", "cls")

    def __init__(self, n: int, size: int, split: str) -> None:
        self.n, self.size, self.split = n, size, split

    def __len__(self) -> int:
        return self.n

    def _load(self, index: int) -> ProbeSample:
        rng = np.random.default_rng(index + (0 if self.split == "train" else 10**6))
        s = self.size
        return ProbeSample(image=rng.integers(0, 255, (s, s, 3), dtype=np.uint8),
                           depth=rng.uniform(0.5, 8.0, (s, s)).astype(np.float32),
                           seg=rng.integers(0, 9, (s, s), dtype=np.uint8), label=int(rng.integers(0, 6)))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["tiny-vit", "vit-s14"])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfgs = ProbeConfigs()
    cfgs.depth.epochs = cfgs.seg.epochs = 5
    cfgs.cls_linear.epochs = 20
    for name in args.encoders:
        enc = create_encoder(name, seed=0)
        size = args.size - args.size % enc.spec.patch_size
        train, test = RandomDataset(args.images, size, "train"), RandomDataset(args.images // 4, size, "test")
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            fs_train = extract_features(enc, train, cache, image_size=size, batch_size=args.batch_size)
            dt = time.perf_counter() - t0
            fs_test = extract_features(enc, test, cache, image_size=size, batch_size=args.batch_size)
            print(f"{name:10s} features @{size}px: {len(train) / dt:7.1f} images/s (incl. resize + cache write; "
                  f"grid {fs_train.grid}, dim {fs_train.patch.shape[-1]})")  # fmt: skip
            t0 = time.perf_counter()
            extract_features(enc, train, cache, image_size=size)
            print(f"{name:10s} cache hit: {1000 * (time.perf_counter() - t0):.1f} ms")
            for probe in PROBES.names():
                t0 = time.perf_counter()
                run_probe(probe, fs_train, fs_test, cfgs, seed=0)
                epochs = getattr(getattr(cfgs, CONFIG_FIELD[probe]), "epochs", "-")
                print(f"{name:10s} probe {probe:10s}: {time.perf_counter() - t0:6.2f} s "
                      f"({len(train)} train images, {epochs} epochs)")  # fmt: skip


if __name__ == "__main__":
    main()

"""3D probe cost: multi-view scene rendering + feature extraction images/s, and each 3D probe's time.

    .venv/bin/python benchmarks/bench_probes3d.py [--encoder tiny-vit|DIR] [--scenes 16] [--train-scenes 32]
        [--size 64] [--seeds 1]

Uses the default ``Probe3DConfig`` (4 views per scene, RANSAC 1000 iterations, sem3d 20 epochs) on the built-in
synthetic multi-view scenes; the feature cache goes to a temporary folder. Timings are medians over seeds where
a probe runs more than once; the load of the machine is printed with them.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np

from spatialboost.eval.benches import Bench3D
from spatialboost.eval.probes3d import Probe3DConfig
from spatialboost.eval.runner import resolve_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="tiny-vit")
    ap.add_argument("--scenes", type=int, default=16, help="test scenes (corr, register, sem3d scoring)")
    ap.add_argument("--train-scenes", type=int, default=32, help="sem3d train scenes")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    enc = resolve_encoder(args.encoder)
    cfg = Probe3DConfig(num_train=args.train_scenes, num_test=args.scenes)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads {_threads()}")
    with tempfile.TemporaryDirectory() as cache:
        bench = Bench3D("synthetic", cfg, ["corr", "register", "sem3d"], args.size, cache)
        for split, ds in bench.splits.items():
            t0 = time.perf_counter()
            bench.features(enc, split)
            dt = time.perf_counter() - t0
            print(f"{split:5s}: {len(ds.scene_names)} scenes x {cfg.views} views rendered + encoded at {args.size} px: "
                  f"{len(ds) / dt:6.1f} images/s ({dt:.1f} s)")  # fmt: skip
        times: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            bench.seconds = dict.fromkeys(bench.seconds, 0.0)
            res = bench.run(enc, seed)
            for probe in res:
                times.setdefault(probe, []).append(bench.seconds[probe])
        pairs = res["corr"].protocol["pairs"]
        for probe, ts in times.items():
            note = {"corr": f"{pairs} view pairs", "register": f"{pairs} pairs x {cfg.ransac_iterations} RANSAC samples",
                    "sem3d": f"{res['sem3d'].protocol['train_points']} train / {res['sem3d'].protocol['test_points']} "
                             f"test points, {cfg.sem3d.epochs} epochs (first seed fuses the point features)"}[probe]  # fmt: skip
            print(f"probe {probe:8s}: {np.median(ts):6.2f} s median over {len(ts)} seed(s) ({note})")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()

"""Data-engine throughput and memory: rendered scenes/s, conversations/s (text alone), peak RSS vs dataset size.

    .venv/bin/python benchmarks/bench_datagen.py [--scenes 200] [--image-size 224] [--rss-sizes 1000,10000]

Figures printed as one JSON object. Targets (issue 2): >= 100 rendered scenes/s per core at 224x224 including
the text; >= 5,000 conversations/s for the text alone; peak RSS flat from 1k to 10k scenes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spatialboost.datagen.conversations import ConversationConfig, build_conversation
from spatialboost.datagen.dataset import WriteSpec, write_dataset
from spatialboost.datagen.relations import SceneGraph
from spatialboost.datagen.sources import GenerateConfig, SyntheticSource
from spatialboost.datagen.synthetic import SyntheticConfig, generate_scene


def bench_render_and_text(n: int, size: int) -> dict:
    """In memory: scene + render + scene graph + conversation, one process."""
    cfg = SyntheticConfig(image_size=size)
    generate_scene(0, cfg)  # warm-up (renderer context)
    t0 = time.perf_counter()
    for i in range(n):
        build_conversation(SceneGraph(generate_scene(i, cfg)), ConversationConfig(), random.Random(i))
    return {"scenes_per_s_in_memory": n / (time.perf_counter() - t0)}


def bench_text(n_scenes: int, n_convs: int, size: int) -> dict:
    """Conversations/s from ready scene graphs (the CoT text alone)."""
    graphs = [SceneGraph(generate_scene(i, SyntheticConfig(image_size=size))) for i in range(n_scenes)]
    for g in graphs:
        g.object_pixels(0)  # part of the per-scene precomputation
    cfg = ConversationConfig()
    t0 = time.perf_counter()
    for i in range(n_convs):
        build_conversation(graphs[i % n_scenes], cfg, random.Random(i))
    return {"conversations_per_s_text": n_convs / (time.perf_counter() - t0)}


def bench_write(n: int, size: int, workers: int) -> float:
    """Scenes/s of the full writer (render, text, PNG + npz encoding, hashes, atomic writes)."""
    cfg = GenerateConfig(scenes=n, shard_size=32)
    cfg.synthetic.image_size = size
    with tempfile.TemporaryDirectory() as tmp:
        spec = WriteSpec(Path(tmp) / "ds", n, 0, cfg.shard_size, cfg.conversation)
        t0 = time.perf_counter()
        write_dataset(SyntheticSource(cfg), spec, workers=workers, progress=False)
        return n / (time.perf_counter() - t0)


def rss_child(n: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenerateConfig(scenes=n, shard_size=64)
        cfg.synthetic.image_size = size
        spec = WriteSpec(Path(tmp) / "ds", n, 0, cfg.shard_size, cfg.conversation)
        write_dataset(SyntheticSource(cfg), spec, progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def bench_rss(sizes: list[int], image_size: int) -> dict:
    out = {}
    for n in sizes:
        res = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(n), "--image-size", str(image_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[f"peak_rss_mib_{n}_scenes"] = int(res.stdout.strip().splitlines()[-1]) / 1024
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--conversations", type=int, default=5000)
    p.add_argument("--rss-sizes", default="1000,10000")
    p.add_argument("--rss-image-size", type=int, default=64)
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child is not None:
        rss_child(args.rss_child, args.image_size)
        return
    cores = os.cpu_count() or 1
    res = {"image_size": args.image_size, "cores": cores}
    res.update(bench_text(50, args.conversations, args.image_size))
    res.update(bench_render_and_text(args.scenes, args.image_size))
    res["scenes_per_s_written_1_worker"] = bench_write(args.scenes, args.image_size, 1)
    res[f"scenes_per_s_written_{cores}_workers"] = bench_write(args.scenes, args.image_size, cores)
    if args.rss_sizes:
        res.update(bench_rss([int(x) for x in args.rss_sizes.split(",")], args.rss_image_size))
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()}, indent=2))


if __name__ == "__main__":
    main()

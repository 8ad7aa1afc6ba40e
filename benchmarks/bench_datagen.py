"""Data-engine throughput and memory: rendered scenes/s, conversations/s (text alone), peak RSS vs dataset size,
and how the full writer scales from 1 worker to W.

    .venv/bin/python benchmarks/bench_datagen.py --scenes 1000 [--small-scenes 100] [--workers 2] [--repeats 3]
        [--image-size 224] [--sections text,memory,scaling,rss] [--rss-sizes 1000,10000]

Figures printed as one JSON object. Targets (issue 2): >= 100 rendered scenes/s per core at 224x224 including
the text; >= 5,000 conversations/s for the text alone; peak RSS flat from 1k to 10k scenes. Issue 11: W = 2
workers write a 1,000-scene job >= 1.7x as fast as 1 worker, and a small job no slower. The scaling section runs 1 and W workers side by
side in this process (interleaved, the order alternating per repeat, a fresh directory each time) and reports
medians, the per-repeat ratios (their spread is the noise) and the load average before each timed run; this
process is warmed up first (imports, GL context), as a long CLI run is after its first shard.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
from spatialboost.datagen.questions.conversations import ConversationConfig, build_conversation
from spatialboost.datagen.questions.relations import SceneGraph
from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene
from spatialboost.datagen.sources import GenerateConfig, SyntheticSource


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


def bench_write(n: int, size: int, workers: int, shard_size: int = 16) -> tuple[float, float, int]:
    """(wall s, CPU s of this process and its helpers, helpers started) of the full writer (render, text,
    PNG + npz encoding, hashes, atomic writes) for ``n`` scenes."""
    cfg = GenerateConfig(scenes=n, shard_size=shard_size)
    cfg.synthetic.image_size = size
    logger, seen = logging.getLogger("spatialboost.datagen.dataset.writer"), _Messages()
    logger.addHandler(seen)
    logger.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec = WriteSpec(Path(tmp) / "ds", n, 0, cfg.shard_size, cfg.conversation)
            c0, t0 = _cpu_s(), time.perf_counter()
            write_dataset(SyntheticSource(cfg), spec, workers=workers, progress=False)
            wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    finally:
        logger.removeHandler(seen)
    started = [int(m.split()[1]) for m in seen.messages if m.startswith("started ")]
    return wall, cpu, sum(started)


class _Messages(logging.Handler):
    """Keeps the writer's log lines (how many helpers it started)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _startup_probe(size: int, results) -> None:
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene

    generate_scene(0, SyntheticConfig(image_size=size))  # imports done; GL context, shaders, first draw
    results.put(time.time())


def helper_startup_s(size: int) -> float:
    """Seconds from spawning a helper until it has drawn its first scene (what a job must amortise)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    t0 = time.time()
    proc = ctx.Process(target=_startup_probe, args=(size, results))
    proc.start()
    ready = results.get(timeout=120)
    proc.join()
    return ready - t0


def bench_scaling(n: int, size: int, workers: int, repeats: int, shard_size: int, target: float) -> dict:
    """1 vs ``workers`` workers on an ``n``-scene job, interleaved; medians and per-repeat ratios."""
    times: dict[int, list[float]] = {1: [], workers: []}
    cpu: dict[int, list[float]] = {1: [], workers: []}
    loads, helpers = [], []
    for r in range(repeats):
        for w in (1, workers) if r % 2 == 0 else (workers, 1):
            loads.append(round(os.getloadavg()[0], 2))
            wall, cpu_s, started = bench_write(n, size, w, shard_size)
            times[w].append(wall)
            cpu[w].append(cpu_s)
            if w == workers:
                helpers.append(started)
    ratios = [a / b for a, b in zip(times[1], times[workers], strict=True)]
    med1, medw = statistics.median(times[1]), statistics.median(times[workers])
    verdict = "met" if min(ratios) >= target else "not met" if max(ratios) < target else "within noise of"
    return {
        "load_before_each_run": loads,
        f"helpers_started_per_{workers}_worker_run": helpers,
        "scenes_per_s_1_worker": n / med1,
        f"scenes_per_s_{workers}_workers": n / medw,
        "seconds_1_worker": [round(t, 2) for t in times[1]],
        f"seconds_{workers}_workers": [round(t, 2) for t in times[workers]],
        "cpu_ms_per_scene_1_worker": 1000 * statistics.median(cpu[1]) / n,
        f"cpu_ms_per_scene_{workers}_workers": 1000 * statistics.median(cpu[workers]) / n,
        f"speedup_{workers}_vs_1_of_medians": med1 / medw,
        f"speedup_{workers}_vs_1_per_repeat": [round(x, 3) for x in ratios],
        "verdict": f"{verdict} target >= {target} (per-repeat range {min(ratios):.2f}-{max(ratios):.2f})",
    }


def scaling(args) -> dict:
    """The big job (target 1.7x) and a small one (never slower than 1 worker), after a warm-up."""
    bench_write(2 * args.shard_size, args.image_size, 1, args.shard_size)  # imports, GL context, caches
    out = {
        "scaling_shard_size": args.shard_size,
        "scaling_repeats": args.repeats,
        "helper_startup_s": round(statistics.median(helper_startup_s(args.image_size) for _ in range(3)), 3),
    }
    for n, target in ((args.scenes, 1.7), (args.small_scenes, 1.0)):
        if n > 0:
            res = bench_scaling(n, args.image_size, args.workers, args.repeats, args.shard_size, target)
            out.update({f"write_{n}_scenes_{k}": v for k, v in res.items()})
    return out


def host_info() -> dict:
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    from spatialboost.datagen.scenes.render import get_renderer

    return {
        "host": platform.node(),
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "renderer": get_renderer().backend,
        "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS"),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


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
    p.add_argument("--scenes", type=int, default=1000, help="scenes of the scaling job (target 1.7x)")
    p.add_argument("--small-scenes", type=int, default=100, help="a small job: never slower (0: skip)")
    p.add_argument("--workers", type=int, default=2, help="compared with 1 worker")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per worker count (interleaved)")
    p.add_argument("--shard-size", type=int, default=16, help="samples per shard (the CLI default)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--sections", default="text,memory,scaling,rss")
    p.add_argument("--memory-scenes", type=int, default=200, help="scenes rendered in memory")
    p.add_argument("--conversations", type=int, default=5000)
    p.add_argument("--rss-sizes", default="1000,10000")
    p.add_argument("--rss-image-size", type=int, default=64)
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child is not None:
        rss_child(args.rss_child, args.image_size)
        return
    sections = set(args.sections.split(","))
    res = {"image_size": args.image_size, **host_info()}
    if "text" in sections:
        res.update(bench_text(50, args.conversations, args.image_size))
    if "memory" in sections:
        res.update(bench_render_and_text(args.memory_scenes, args.image_size))
    if "scaling" in sections:
        res.update(scaling(args))
    if "rss" in sections and args.rss_sizes:
        res.update(bench_rss([int(x) for x in args.rss_sizes.split(",")], args.rss_image_size))
    res["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}, indent=2))


if __name__ == "__main__":
    main()

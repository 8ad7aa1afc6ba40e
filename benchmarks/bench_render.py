"""Synthetic scenes per second at 224x224 in one process, split into sampling / drawing / read-back / assembly.

    .venv/bin/python benchmarks/bench_render.py --scenes 300 --views 1

Sampling = objects, room, light and cameras (numpy); draw = GL draw calls until the rasteriser finishes;
read-back = framebuffer -> numpy arrays (flip, dtype casts); assembly = descriptions, visible-pixel counts,
SceneObjects. "generate_scene" is the end-to-end call others use (it does the same work in one go).
"""

from __future__ import annotations

import argparse
import statistics
import time

from spatialboost.datagen.scenes.render import get_renderer
from spatialboost.datagen.scenes.scene import Camera, View
from spatialboost.datagen.scenes.synthetic import (
    BACKGROUND,
    SyntheticConfig,
    assemble_scene,
    generate_scene,
    sample_layout,
)


def time_stages(seed: int, cfg: SyntheticConfig) -> dict[str, float]:
    """Seconds per stage for one scene."""
    renderer = get_renderer(cfg.tessellation)
    t0 = time.perf_counter()
    layout = sample_layout(seed, cfg)
    t1 = time.perf_counter()
    items = layout.draw_items()
    draw = read = 0.0
    views = []
    for T in layout.poses:
        a = time.perf_counter()
        floor = layout.room_items[0] if cfg.shadows else None
        renderer.draw(items, layout.K, T, cfg.image_size, cfg.image_size, layout.light, BACKGROUND, floor)
        renderer.finish()
        b = time.perf_counter()
        out = renderer.read()
        c = time.perf_counter()
        draw, read = draw + (b - a), read + (c - b)
        camera = Camera(layout.K, T, cfg.image_size, cfg.image_size)
        views.append(View(out.rgb, camera, out.depth, out.instance, out.semantic))
    t2 = time.perf_counter()
    assemble_scene(layout, views, cfg)
    t3 = time.perf_counter()
    return {
        "sampling": t1 - t0,
        "draw": draw,
        "read-back": read,
        "assembly": t3 - t2,
        "total (split)": t3 - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-shadows", action="store_true", help="skip the shadow pass")
    args = parser.parse_args()
    cfg = SyntheticConfig(image_size=args.size, views=args.views, shadows=not args.no_shadows)

    t = time.perf_counter()
    generate_scene(10_000_000, cfg)  # context creation, shader compile, mesh upload
    warmup = time.perf_counter() - t

    stages: dict[str, list[float]] = {}
    for seed in range(args.scenes):
        for name, seconds in time_stages(seed, cfg).items():
            stages.setdefault(name, []).append(seconds)
    end_to_end = []
    for seed in range(args.scenes):
        t = time.perf_counter()
        generate_scene(seed, cfg)
        end_to_end.append(time.perf_counter() - t)
    stages["generate_scene"] = end_to_end

    shadows = "no shadows" if args.no_shadows else "shadows"
    print(f"{args.scenes} scenes, {args.views} view(s), {args.size}x{args.size}, {shadows}, one process")
    print(f"{'stage':<16}{'mean ms':>10}{'median ms':>12}{'p95 ms':>10}")
    for name, xs in stages.items():
        xs_ms = sorted(1e3 * x for x in xs)
        p95 = xs_ms[int(0.95 * (len(xs_ms) - 1))]
        print(f"{name:<16}{statistics.mean(xs_ms):>10.2f}{statistics.median(xs_ms):>12.2f}{p95:>10.2f}")
    total = sum(end_to_end)
    print(
        f"generate_scene: {args.scenes / total:.1f} scenes/s ({args.scenes * args.views / total:.1f} views/s)"
    )
    print(f"first call (context + shaders + meshes): {1e3 * warmup:.1f} ms")


if __name__ == "__main__":
    main()

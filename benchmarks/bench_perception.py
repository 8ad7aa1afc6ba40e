"""Images/s per perception stage on CPU with the tiny random checkpoints: the plumbing overhead (pre- and
post-processing, batching, coordinate conversion), not model speed. Plus lifting and the oracle stages.

    python benchmarks/bench_perception.py [--images 16] [--size 240 320] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from spatialboost.datagen.real.lifting import lift_view
from spatialboost.datagen.real.perception import BackendConfig, build_backend
from spatialboost.datagen.real.perception.tiny import save_tiny


def timed(fn, n: int) -> tuple[float, object]:
    fn()  # warm-up (first call pays lazy initialisation)
    t = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - t), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=4)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    h, w = args.size
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.images)]
    keys = [str(i) for i in range(args.images)]
    vocab = ["chair", "table", "cup", "lamp", "box"]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            n: str(save_tiny(n, Path(tmp) / n)) for n in ("depth-pro", "sam2", "owlv2", "grounding-dino")
        }

        def cfg(name, **kw):
            return BackendConfig(model=paths[name], batch_size=args.batch_size, **kw)

        depth = build_backend("depth", "depth-pro", cfg("depth-pro"))
        ips, depths = timed(lambda: depth.predict(images, keys), args.images)
        print(f"depth-pro (tiny)       {ips:7.1f} images/s")
        for name in ("owlv2", "grounding-dino"):
            det = build_backend("detector", name, cfg(name, threshold=0.0, max_detections=5))
            ips, dets = timed(lambda det=det: det.detect(images, vocab, keys), args.images)
            print(f"{name + ' (tiny)':22s} {ips:7.1f} images/s")
        boxes = [np.stack([d.box for d in ds]) for ds in dets]
        seg = build_backend("segmenter", "sam2", cfg("sam2"))
        ips, masks = timed(lambda: seg.segment(images, boxes, keys), args.images)
        print(f"sam2 (tiny, 5 boxes)   {ips:7.1f} images/s")
        ips, _ = timed(
            lambda: [
                lift_view(im, d.depth, d.K, m, [x.label for x in ds], None, "b")
                for im, d, m, ds in zip(images, depths, masks, dets, strict=True)
            ],
            args.images,
        )
        print(f"lifting (5 objects)    {ips:7.1f} images/s")


if __name__ == "__main__":
    main()

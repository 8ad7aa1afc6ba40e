"""What the ``spatialboost generate`` sub-commands share (``cli.generate``: synthetic, ``cli.generate_images``:
real photos): refusing a bad ``--out`` and the options every source takes."""

from __future__ import annotations

import argparse
from pathlib import Path

from spatialboost.errors import UserError


def check_out_dir(path: Path, flag: str = "--out") -> None:
    """Refuse an output path that exists and is not a directory (one line, before any work)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a directory; choose a directory path")


def add_run_arguments(
    parser: argparse.ArgumentParser, config_help: str = "YAML config file (GenerateConfig)"
) -> None:
    """Options every source shares: which shards, how many workers, a config file."""
    parser.add_argument("--shard", help="write shards i, i+n, i+2n, ... of the dataset (i/n)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes writing shards: this one + W-1 spawned helpers, at most one per CPU and shard "
        "(output identical to 1)",
    )
    parser.add_argument("--config", type=Path, help=config_help)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")

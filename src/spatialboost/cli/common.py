"""What the commands share: ``load_command_config`` (every command's config, built one way), and for the
``spatialboost generate`` sub-commands (``cli.generate``: synthetic, ``cli.generate_images``: real photos) refusing
a bad ``--out`` and the options every source takes."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from spatialboost.config import load_config
from spatialboost.errors import UserError

C = TypeVar("C")


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


def load_command_config(
    cls: type[C], path: str | Path | None, overrides: list[str], flags: Mapping[str, Any] | None = None
) -> C:
    """The one way a command builds its config: the YAML file at ``path`` -> the defaults of ``cls`` ->
    ``flags`` (dotted config key -> the flag's value; ``None``, a flag not given, leaves the key alone) ->
    ``key.sub=value`` ``overrides`` -> validation of the whole tree (a ``ConfigError``: one line, exit 2)."""
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    return load_config(cls, path, overrides, values=given)

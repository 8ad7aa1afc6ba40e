"""``spatialboost generate synthetic|images``: write a sharded, resumable spatial CoT dataset.

``generate synthetic --scenes N --views V --seed S --out DIR [--shard i/n] [--workers W] [--config FILE]
[key=value ...]``; flags override the config file, ``key.sub=value`` overrides (e.g. ``synthetic.image_size=128``,
``conversation.order=reverse``) override both. ``generate synthetic --recipe spatialboost --out DIR [--scenes N]
[--image-size S]`` writes every dataset a training recipe reads (``datagen.recipes``) under ``DIR/<name>``. ``generate images`` is delegated to
``spatialboost.cli.generate_images`` (real photos).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spatialboost.cli import generate_images
from spatialboost.cli.common import add_run_arguments, check_out_dir, load_command_config
from spatialboost.datagen.dataset.writer import WriteSpec, parse_shard_spec, write_dataset
from spatialboost.datagen.recipes import DATA_RECIPES, write_recipe_data
from spatialboost.datagen.sources import GenerateConfig, SyntheticSource
from spatialboost.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = GenerateConfig()
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(parser))
    syn = sub.add_parser(
        "synthetic", help="procedural 3D scenes with exact ground truth (the default)",
        description="Procedural 3D scenes with exact ground truth -> a spatial conversation dataset.",
    )  # fmt: skip
    syn.add_argument("--out", required=True, type=Path, help="dataset directory (created, or resumed)")
    syn.add_argument("--scenes", type=int, help=f"number of samples (default: {d.scenes})")
    syn.add_argument("--views", type=int, help=f"views per single-view-share sample (default: {d.views})")
    syn.add_argument("--seed", type=int, help=f"base seed (default: {d.seed})")
    syn.add_argument(
        "--multiview-share", type=float,
        help=f"share of samples with 2..--max-views views (default: {d.multiview_share})",
    )  # fmt: skip
    syn.add_argument(
        "--max-views", type=int, help=f"most views of a multi-view sample (default: {d.max_views})"
    )
    syn.add_argument(
        "--image-size", type=int, help=f"square image side, pixels (default: {d.synthetic.image_size})"
    )
    syn.add_argument("--shard-size", type=int, help=f"samples per shard (default: {d.shard_size})")
    syn.add_argument(
        "--recipe", choices=DATA_RECIPES.names(),
        help="write every dataset this training recipe reads, each under OUT/<name> (e.g. `spatialboost`: main, "
        "reading, choices, heldout for `spatialboost train`); --scenes N then sets the size of main and the other "
        "main-scene datasets in proportion (choices: 4N; heldout: a tenth, at least 8), --image-size the rendered "
        "side; no other config options",
    )  # fmt: skip
    add_run_arguments(syn)
    syn.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. conversation.order=reverse"
    )
    images = sub.add_parser(
        "images", help="real photos (or RGB-D folders) through depth, detection and segmentation models",
        description=generate_images.DESCRIPTION,
    )  # fmt: skip
    generate_images.add_arguments(images)


def build_config(args: argparse.Namespace) -> GenerateConfig:
    """GenerateConfig from --config, then the flags, then key=value overrides."""
    flags = {
        "scenes": args.scenes,
        "views": args.views,
        "seed": args.seed,
        "multiview_share": args.multiview_share,
        "max_views": args.max_views,
        "synthetic.image_size": args.image_size,
        "shard_size": args.shard_size,
    }
    return load_command_config(GenerateConfig, args.config, args.overrides, flags)


def run(args: argparse.Namespace) -> int:
    if args.source == "images":
        return int(generate_images.run(args) or 0)
    if args.source != "synthetic":
        raise UserError("choose a source: `generate synthetic ...` or `generate images ...`")
    return run_synthetic(args)


def run_synthetic(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    if args.recipe:
        return run_recipe(args)
    cfg = build_config(args)
    shard = parse_shard_spec(args.shard)
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    spec = WriteSpec(args.out, cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
    manifest = write_dataset(SyntheticSource(cfg), spec, shard, args.workers, progress=not args.no_progress)
    c = manifest["counts"]
    log.info(
        "%s: %d/%d samples in %d/%d shards, %d views, %d turns %s",
        args.out,
        c["samples"],
        c["samples_planned"],
        c["shards"],
        c["shards_planned"],
        c["views"],
        c["turns"],
        c["turns_per_level"],
    )
    return 0


RECIPE_FIXED = ("views", "seed", "multiview_share", "max_views", "shard_size", "config", "shard", "overrides")


def run_recipe(args: argparse.Namespace) -> int:
    """``--recipe NAME``: the recipe's datasets under --out, at its sizes or --scenes."""
    fixed = [f"--{k.replace('_', '-')}" for k in RECIPE_FIXED if getattr(args, k, None)]
    if fixed:
        raise UserError(f"--recipe {args.recipe} fixes its datasets' configs: drop {', '.join(fixed)} "
                        "(only --scenes, --image-size, --workers and --no-progress apply)")  # fmt: skip
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    sizes = recipe_sizes(args.recipe, args.scenes)
    manifests = write_recipe_data(args.recipe, args.out, image_size=args.image_size, workers=args.workers,
                                  progress=not args.no_progress, sizes=sizes)  # fmt: skip
    for name, m in manifests.items():
        log.info(
            "%s: %d samples, %d turns", Path(args.out) / name, m["counts"]["samples"], m["counts"]["turns"]
        )
    return 0


def recipe_sizes(recipe: str, scenes: int | None) -> dict[str, int] | None:
    """--scenes N: N for the main dataset; the other datasets of the main scenes (seed 0) keep their ratio to it
    (stage 3's ``choices``: 4N), the others get a tenth (at least 8)."""
    if scenes is None:
        return None
    if scenes < 1:
        raise UserError(f"--scenes must be >= 1, got {scenes}")
    datasets = DATA_RECIPES.get(recipe).datasets
    main = datasets[0].scenes
    return {
        d.name: round(scenes * d.scenes / main) if d.seed == 0 else max(8, scenes // 10) for d in datasets
    }

"""``spatialboost generate images``: real photos (or RGB-D folders) -> perception -> Scenes -> the dataset writer.

    spatialboost generate images --input DIR --out DIR [--depth depth-pro|oracle|provided]
        [--detector owlv2|grounding-dino|oracle] [--segmenter sam2|oracle] [--model-path STAGE=PATH ...]
        [--vocab FILE] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--batch-size N]
        [--multiview] [--shard i/n] [--workers W] [--shard-size N] [--seed S]

``--input`` is a folder of photos, or an RGB-D folder in the layout of ``datagen.real.rgbd`` (``color/`` ...):
there ``--depth provided`` uses its depth + intrinsics, its instance masks replace detection and
segmentation when present (``--detector/--segmenter provided``), and ``oracle`` backends read the same
files (with ``--oracle-depth-noise`` / ``--oracle-erode`` to measure label noise). Sample i is the i-th good
file in sorted order (or the i-th sequence with ``--multiview``), so ``--shard`` and resuming behave exactly as
for ``generate synthetic``. Files that cannot be used are listed with their reason in ``manifest.json``
(``input_skipped``). The sample source itself (perception, per-stage caches, lifting) is
``datagen.image_source.ImageSource``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from spatialboost.cli.common import add_run_arguments, check_out_dir, load_command_config
from spatialboost.datagen.dataset.writer import WriteSpec, parse_shard_spec, write_dataset
from spatialboost.datagen.image_source import STAGES, ImagesConfig, ImageSource, Item, collect_items
from spatialboost.datagen.questions.conversations import ConversationConfig
from spatialboost.datagen.real.images import IMAGE_SUFFIXES, ImageLimits
from spatialboost.datagen.real.lifting import LiftConfig
from spatialboost.datagen.real.perception import DEPTH_BACKENDS, DETECTORS, SEGMENTERS, load_vocabulary
from spatialboost.errors import UserError

log = logging.getLogger(__name__)
DESCRIPTION = (
    "Real photos, or RGB-D folders (color/, depth/, intrinsic.txt, instance/ + labels.json, pose/), through "
    "depth, detection and segmentation models into the same spatial conversation dataset as `generate "
    "synthetic`. Files that cannot be used are skipped and listed with their reason in manifest.json "
    "(input_skipped). `oracle` and `provided` stages read an RGB-D folder's own ground truth."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, type=Path, help="folder of images, or an RGB-D folder (color/, depth/, ...)"
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset directory (created, or resumed)")
    parser.add_argument("--depth", default="depth-pro", help="depth-pro | oracle | provided")
    parser.add_argument("--detector", default="owlv2", help="owlv2 | grounding-dino | oracle | provided")
    parser.add_argument("--segmenter", default="sam2", help="sam2 | oracle | provided")
    parser.add_argument(
        "--model-path", action="append", default=[], metavar="STAGE=PATH",
        help="checkpoint (hub name or dir) per stage, e.g. depth=/ckpt/depth-pro (repeatable)",
    )  # fmt: skip
    parser.add_argument("--vocab", type=Path, help="object names, one per line (default: common objects)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (GPU)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per model call")
    parser.add_argument("--threshold", type=float, default=0.2, help="detector score threshold")
    parser.add_argument(
        "--multiview", action="store_true", help="RGB-D input: one fused sample per posed sequence"
    )
    parser.add_argument("--shard-size", type=int, default=16, help="samples per shard")
    parser.add_argument("--seed", type=int, default=0, help="base seed (conversations, RANSAC)")
    parser.add_argument("--oracle-depth-noise", type=float, default=0.0, help="oracle depth: relative sigma")
    parser.add_argument("--oracle-erode", type=int, default=0, help="oracle masks: erosion, pixels")
    add_run_arguments(parser, config_help="YAML config file (ImagesFileConfig: conversation, lift)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. conversation.order=reverse"
    )


@dataclass
class ImagesFileConfig:
    """What ``--config FILE`` and ``key=value`` overrides set for an images run (the flags set the rest)."""

    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    lift: LiftConfig = field(default_factory=LiftConfig)


def build_config(args: argparse.Namespace) -> tuple[ImagesFileConfig, ImagesConfig]:
    """What --config and key=value overrides set (conversations, lifting), and the images config the flags set
    (it identifies the dataset), both through ``load_command_config``."""
    file_cfg = load_command_config(ImagesFileConfig, args.config, args.overrides)
    vocabulary = load_vocabulary(args.vocab)
    oracle = {"depth_noise": args.oracle_depth_noise, "erode_px": args.oracle_erode, "seed": args.seed}
    flags = {
        "input": str(args.input.resolve()), "depth": args.depth, "detector": args.detector,
        "segmenter": args.segmenter, "model_paths": model_paths(args.model_path), "vocabulary": vocabulary,
        "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size, "threshold": args.threshold,
        "multiview": args.multiview, "oracle": oracle, "lift": file_cfg.lift,
    }  # fmt: skip
    return file_cfg, load_command_config(ImagesConfig, None, [], flags)


def model_paths(specs: list[str]) -> dict[str, str]:
    """``--model-path STAGE=PATH`` flags as {stage: path}."""
    paths = {}
    for spec in specs:
        stage, sep, path = spec.partition("=")
        if not sep or stage not in STAGES:
            raise UserError(f"--model-path {spec!r}: use STAGE=PATH with STAGE one of {list(STAGES)}")
        paths[stage] = path
    return paths


def _check_names(cfg: ImagesConfig) -> None:
    for stage, reg in (("depth", DEPTH_BACKENDS), ("detector", DETECTORS), ("segmenter", SEGMENTERS)):
        name = cfg.stage_name(stage)
        if name != "provided" and name not in reg:
            raise UserError(f"--{stage} {name!r}: choose one of {[*reg.names(), 'provided']}")


def check_ground_truth(cfg: ImagesConfig, items: list[Item]) -> None:
    """``oracle`` and ``provided`` stages read ground truth that only an RGB-D folder has: refuse a photo folder."""
    needs = [f"--{s} {cfg.stage_name(s)}" for s in STAGES if cfg.stage_name(s) in ("oracle", "provided")]
    if needs and not any(it.frames for it in items):
        raise UserError(
            f"{', '.join(needs)} read(s) ground truth from an RGB-D folder (color/, depth/, intrinsic.txt, "
            f"instance/; see spatialboost.datagen.real.rgbd), but --input {cfg.input} is a folder of plain photos; "
            "use the models (--depth depth-pro --detector owlv2 --segmenter sam2) for photos"
        )


def no_items_message(root: Path, skipped: list[dict[str, str]]) -> str:
    if not skipped:
        return (
            f"--input {root}: no files found (searched recursively; hidden files and folders are ignored); "
            f"put images there ({', '.join(IMAGE_SUFFIXES)})"
        )
    first = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
    return f"--input {root}: none of its {len(skipped)} file(s) is a usable image (first: {first})"


def run(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    fcfg, cfg = build_config(args)
    _check_names(cfg)
    shard = parse_shard_spec(args.shard)
    items, skipped = collect_items(args.input, args.multiview, ImageLimits())
    log.info("%d usable input(s), %d skipped", len(items), len(skipped))
    if not items:
        raise UserError(no_items_message(args.input, skipped))
    check_ground_truth(cfg, items)
    source = ImageSource(cfg, items, args.out / "cache", args.shard_size)
    spec = WriteSpec(args.out, len(items), args.seed, args.shard_size, fcfg.conversation)
    manifest = write_dataset(
        source, spec, shard, args.workers, progress=not args.no_progress, extra={"input_skipped": skipped}
    )
    c = manifest["counts"]
    log.info(
        "%s: %d/%d samples, %d skipped input file(s)",
        args.out,
        c["samples"],
        c["samples_planned"],
        len(skipped),
    )
    return 0

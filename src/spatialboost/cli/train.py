"""``spatialboost train --config FILE [key.sub=value ...]``: run one stage or the chain of three.

Examples::

    spatialboost train                                   # the default recipe `spatialboost` (configs/spatialboost.yaml)
    spatialboost train --config demo data.datasets=[runs/demo/data]   # the demo config shipped with the package
    spatialboost train --config configs/demo.yaml
    spatialboost train --config configs/demo.yaml stages.run=[encoder] stages.encoder.max_steps=50
    torchrun --nproc-per-node 2 -m spatialboost train --config configs/demo.yaml run_dir=runs/ddp

Re-running the same command resumes the run in ``run_dir``.
"""

from __future__ import annotations

import argparse
import logging

from spatialboost.cli.common import load_command_config
from spatialboost.config import config_path
from spatialboost.train.config import TrainConfig

log = logging.getLogger(__name__)
DEFAULT_RECIPE = "spatialboost"  # the packaged config `spatialboost train` runs without --config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=DEFAULT_RECIPE,
        help=f"YAML training config: a file (a source checkout has examples in configs/), or a config shipped "
        f"with the package: `{DEFAULT_RECIPE}` (the default recipe, reading data/{{main,reading,choices,heldout}} "
        f"from `spatialboost generate synthetic --recipe {DEFAULT_RECIPE} --out data`), `spatialboost-clip-b16` "
        "(the same data on CLIP-B/16, without the CLS anchor: CLIP's own val pick) or `demo` (tiny models)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")


def build_config(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from --config (a file or a packaged name), then key.sub=value overrides (no other flags)."""
    cfg = load_command_config(TrainConfig, config_path(args.config), args.overrides)
    for line in unchanged_stage_datasets(cfg, args.overrides):
        log.warning(line)
    return cfg


def unchanged_stage_datasets(cfg: TrainConfig, overrides: list[str]) -> list[str]:
    """A ``data.datasets=`` override changes the stages that inherit the top-level data, not a stage whose own
    ``data`` names its datasets (the `spatialboost` recipe's stages 1 and 3): one line per such stage."""
    given = {item.partition("=")[0].strip() for item in overrides}
    if "data.datasets" not in given:
        return []
    return [f"data.datasets was overridden, but stage {stage} still reads {cfg.stage_data(stage).datasets} "
            f"(its own stages.{stage}.data.datasets, from --config): override that too to change it"
            for stage in cfg.stages.run
            if "datasets" in (getattr(cfg.stages, stage).data or {})
            and f"stages.{stage}.data.datasets" not in given]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from spatialboost.train.pipeline import run_training

    cfg = build_config(args)  # ConfigError: one line, exit 2
    for r in run_training(cfg):
        log.info(
            "stage %s: %d steps, loss %.4f -> %.4f, %.0f tokens/s, %.1f samples/s -> %s",
            r.stage, r.steps, r.loss_start, r.loss_end, r.tokens_per_s, r.samples_per_s, r.output,
        )  # fmt: skip
    return 0

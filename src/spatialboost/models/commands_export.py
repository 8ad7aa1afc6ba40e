"""``spatialboost export RUN_DIR --out DIR``: the boosted encoder of a training run, standalone.

The run layout is documented in ``spatialboost.models.export``; the result loads with
``spatialboost.load_encoder(DIR)`` without the LLM.
"""

from __future__ import annotations

import argparse
import logging

from spatialboost.models.export import export_run

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", help="training run directory (with encoder/ or checkpoints/step-N/encoder/)"
    )
    parser.add_argument("--out", required=True, help="output directory for the standalone encoder")


def run(args: argparse.Namespace) -> int:
    out = export_run(args.run_dir, args.out)
    log.info("wrote %s (load it with spatialboost.load_encoder)", out)
    return 0

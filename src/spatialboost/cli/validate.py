"""``spatialboost validate DIR``: schema, files, shard hashes and every answer against the ground truth."""

from __future__ import annotations

import argparse
import logging
import sys

from spatialboost.datagen.dataset.validate import validate_dataset

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset directory written by `spatialboost generate`")
    parser.add_argument("--max-samples", type=int, default=None, help="check only the first N samples")
    parser.add_argument("--max-errors", type=int, default=50, help="failures to list (all are counted)")


def run(args: argparse.Namespace) -> int:
    errors, counts = validate_dataset(args.dataset, args.max_samples)
    if errors:
        for e in errors[: args.max_errors]:
            print(f"FAIL {e}", file=sys.stderr)
        print(f"{len(errors)} failure(s) in {counts['samples']} sample(s) of {args.dataset}", file=sys.stderr)
        return 1
    log.info(
        "%s: OK (%d samples, %d turns checked against the ground truth)",
        args.dataset,
        counts["samples"],
        counts["turns"],
    )
    return 0

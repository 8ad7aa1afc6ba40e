"""``spatialboost probe``: frozen-feature probes of an encoder (and its base), written as a report.

    spatialboost probe --encoder NAME|PATH [--baseline NAME|PATH]
        --task depth|seg|cls|all|corr|register|sem3d|all3d|robot
        --data synthetic|nyu:PATH|ade20k:PATH|voc:PATH|imagefolder:PATH|rgbd:PATH [--seeds 3] [--out DIR]
        [--image-size S] [--layers last|last4] [--rollouts N] [--config probe.yaml] [key.sub=value ...]

``all`` is the 2D set (depth, seg, cls); ``all3d`` the 3D set (corr, register, sem3d: multi-view synthetic
scenes or ``rgbd:PATH``); ``robot`` (Meta-World behaviour cloning, ``pip install 'spatialboost[robot]'``) is
opt-in: it renders every rollout step. Several tasks: ``tasks=[all,all3d]``.
Flags override the config file; ``key.sub=value`` overrides override both. Writes results.json, results.md,
bars.png, depth_grid.png (and corr_rotation.png) and the resolved config.yaml.
A boosted encoder directory given without --baseline brings its base along (re-run with the same seeds).
Report columns are named by the flag and the name given: ``encoder (NAME)``, ``baseline (NAME)`` (or
``baseline (base of NAME)``), and the difference column ``Δ encoder (NAME) vs baseline (NAME)``.
"""

from __future__ import annotations

import argparse
import logging

from spatialboost.cli.common import load_command_config
from spatialboost.config import save_config
from spatialboost.errors import UserError
from spatialboost.eval.benches import TASKS
from spatialboost.eval.job import run_job
from spatialboost.eval.report import claim_report_dir, markdown_table, write_report
from spatialboost.eval.report_benches import write_bench_sections
from spatialboost.eval.runner import ProbeConfig, pair_encoders

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", help="registered name, saved (boosted) encoder dir, or hub id/path")
    parser.add_argument("--baseline", help="the base encoder to compare with (same seeds, same job)")
    parser.add_argument("--task", choices=TASKS.names(), help="probe task (default all: 2D)")
    parser.add_argument(
        "--data", help="synthetic | nyu:PATH | ade20k:PATH | voc:PATH | imagefolder:PATH | rgbd:PATH"
    )
    parser.add_argument("--seeds", type=int, help="number of probe seeds (default 3)")
    parser.add_argument("--out", help="output directory (default probe-results)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out that spatialboost did not write (only its own files are replaced)",
    )
    parser.add_argument("--image-size", type=int, help="probe resolution in pixels (default: the encoder's)")
    parser.add_argument(
        "--layers", choices=["last", "last4"], help="features of the last block or the last four"
    )
    parser.add_argument("--rollouts", type=int, help="robot: evaluation episodes per evaluation (default 10)")
    parser.add_argument("--config", help="YAML file with ProbeConfig fields")
    parser.add_argument(
        "overrides", nargs="*", help="key.sub=value config overrides, e.g. probes.depth.epochs=10"
    )


def build_config(args: argparse.Namespace) -> ProbeConfig:
    """ProbeConfig from --config, then the flags, then key.sub=value overrides."""
    flags = {
        "encoder": args.encoder,
        "baseline": args.baseline,
        "seeds": args.seeds,
        "out": args.out,
        "tasks": None if args.task is None else [args.task],
        "data.spec": args.data,
        "features.image_size": args.image_size,
        "features.layers": args.layers,
        "robot.rollouts": args.rollouts,
    }
    cfg = load_command_config(ProbeConfig, args.config, args.overrides, flags)
    if not cfg.encoder:
        raise UserError("--encoder is required (a registered name or a saved encoder directory)")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    out = claim_report_dir(cfg.out, overwrite=args.overwrite)  # before any work: never into someone's folder
    if not cfg.features.cache_dir:
        out.subdir("feature-cache")
    encoders, pairs = pair_encoders(cfg.encoder, cfg.baseline or None, cfg.encoder_seed)
    results = run_job(encoders, cfg, pairs)
    write_report(results, out)
    write_bench_sections(results, out)
    save_config(cfg, out.path("config.yaml"))
    out.finish()
    log.info("probe results:\n%s", markdown_table(results.summary, headline_only=True))
    return 0

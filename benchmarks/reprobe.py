"""A second depth probe of a finished study's runs, on scenes the study never probed (issue 23).

The study probes each arm once per training seed, with the probe head's seed equal to the training seed, so a
single unlucky probe head moves one seed's number by several percent. This re-probes every named run's exported
encoder on the probe module's own synthetic benchmark (``spatialboost.eval.job``'s default scenes: other
scenes than the study's), each with ``--probe-seeds`` probe heads paired with the base's, and reports:

- per run and training seed: depth RMSE change against the base (mean over the probe seeds) and its verdict
  by the project's noise rule (``spatialboost.noise``, paired over the probe seeds);
- per run: the mean ± std of those changes over the training seeds;
- per pair of runs: run A's change minus run B's, per training seed, with the paired verdict over the
  training seeds (the runs share each seed's stages 1+2, so the seed's own effect cancels).

    .venv/bin/python benchmarks/reprobe.py --study DIR --base dinov2-small-offline \\
        --runs llm-dual-choices-points-lr2e-05-g0-s400-dinov2-s-anchor0.1,llm-dual-choices-points-lr2e-05-g0-s400-dinov2-s \\
        [--probe-seeds 3] [--epochs 30] [--scenes 256] [--image-size 112]

The base is probed once per probe seed and shared by every run. Writes ``STUDY/reprobe.json``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import torch

from spatialboost.eval.job import run_job
from spatialboost.eval.runner import FeatureConfig, ProbeConfig, ProbeDataConfig
from spatialboost.io import atomic_write_json
from spatialboost.noise import verdict


def run_encoders(study: Path, runs: list[str]) -> dict[str, dict[int, Path]]:
    """run name -> training seed -> its exported encoder folder (runs without a finished encoder are left out)."""
    found: dict[str, dict[int, Path]] = {}
    for seed_dir in sorted((study / "runs").glob("seed*")):
        seed = int(seed_dir.name.removeprefix("seed"))
        for run in runs:
            if (seed_dir / run / "encoder").is_dir():
                found.setdefault(run, {})[seed] = seed_dir / run / "encoder"
    return found


def depth_rows(summary: dict) -> dict[str, dict]:
    """encoder label -> its depth RMSE row (mean, std, per-probe-seed values and seeds)."""
    return {r["encoder"]: r for r in summary["rows"] if r["probe"] == "depth" and r["metric"] == "rmse"}


def change_row(changes: dict[int, float]) -> dict:
    """Per-training-seed changes as a noise-rule row (paired with another run's over the same seeds)."""
    seeds = sorted(changes)
    values = [changes[s] for s in seeds]
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.mean(values), "std": std, "values": values, "seeds": seeds, "metric": "rmse"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, required=True)
    ap.add_argument("--base", required=True, help="the study's base encoder (a registered name or a folder)")
    ap.add_argument("--runs", required=True, help="comma-separated run names under STUDY/runs/seedN/")
    ap.add_argument("--probe-seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30, help="depth probe epochs")
    ap.add_argument("--scenes", type=int, default=256, help="probe train and test scenes, each")
    ap.add_argument("--image-size", type=int, default=112, help="the study's encoder input side, px")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    found = run_encoders(args.study, [r for r in args.runs.split(",") if r])
    if not found:
        raise SystemExit(f"{args.study}/runs: none of the named runs has an exported encoder")
    encoders: dict[str, str | Path] = {"base": args.base}
    for run, seeds in found.items():
        encoders.update({f"{run} seed{s}": path for s, path in seeds.items()})
    cfg = ProbeConfig(tasks=["depth"], seeds=args.probe_seeds,
                      data=ProbeDataConfig(num_train=args.scenes, num_test=args.scenes),
                      features=FeatureConfig(image_size=args.image_size))  # fmt: skip
    cfg.probes.depth.epochs = args.epochs
    t0 = time.perf_counter()
    results = run_job(encoders, cfg, pairs={label: "base" for label in encoders if label != "base"})
    rows = depth_rows(results.summary)
    base = rows["base"]
    report: dict = {"base": base, "runs": {}, "pairs": {}, "config": vars(args) | {"study": str(args.study)}}
    print(f"depth RMSE, base {base['mean']:.4f} ± {base['std']:.4f} over {base['n']} probe seeds")
    changes: dict[str, dict[int, float]] = {}
    for run, seeds in found.items():
        for s in sorted(seeds):
            row = rows[f"{run} seed{s}"]
            changes.setdefault(run, {})[s] = (row["mean"] - base["mean"]) / base["mean"]
            print(f"  {run} seed{s}: {changes[run][s]:+.1%} ({verdict(base, row)})")
        r = report["runs"][run] = change_row(changes[run])
        print(f"{run}: {r['mean']:+.1%} ± {r['std']:.1%} over training seeds {r['seeds']}")
    for a, b in itertools.combinations(changes, 2):
        shared = sorted(set(changes[a]) & set(changes[b]))
        if len(shared) < 2:
            continue
        ra, rb = (change_row({s: changes[x][s] for s in shared}) for x in (a, b))
        diffs = [x - y for x, y in zip(ra["values"], rb["values"], strict=True)]
        report["pairs"][f"{a} - {b}"] = {"seeds": shared, "differences": diffs, "verdict": verdict(rb, ra)}
        print(f"{a} - {b}: {statistics.mean(diffs):+.1%} ± {statistics.stdev(diffs):.1%} "
              f"({', '.join(f'{d:+.1%}' for d in diffs)}): {verdict(rb, ra)} for {a}")  # fmt: skip
    report["seconds"] = time.perf_counter() - t0
    atomic_write_json(args.study / "reprobe.json", report)


if __name__ == "__main__":
    main()

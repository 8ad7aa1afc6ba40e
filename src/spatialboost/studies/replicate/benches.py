"""The benches' probes in the study (issue 12: the 3D and robot probes of ``eval.benches``): table A's arms gain
their columns.

``StudyConfig.bench_tasks`` lists task names of ``spatialboost.eval.benches.TASKS`` that run on the 3D and robot
benches (``all3d``, ``corr``, ``register``, ``sem3d``, ``robot``; ``spatialboost replicate --bench-tasks
all3d,robot``). They run after the 2D probes on the arms of table ``BENCH_TABLE`` (base, dual-channel, tuned, full
FT, LoRA), every seed, on the held-out test scenes, with the study seed as the probe seed; their metrics land in the
arm's json beside the 2D ones (by probe name) and, as the summary's per-arm ``benches`` columns, in a second table
A. Sizes follow the study preset (``bench_configs``); the quick preset only checks the mechanics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spatialboost.eval.benches import build_benches
from spatialboost.eval.probes3d import Probe3DConfig
from spatialboost.eval.robot import RobotConfig
from spatialboost.eval.runner import ProbeConfig
from spatialboost.noise import verdict
from spatialboost.studies.replicate.columns import on_seeds, seed_stats
from spatialboost.studies.replicate.study import TABLES, Sizes

BENCH_TABLE = "A"
# (probe, metric) -> column of the bench table; lower is better for RTE and RRE
COLUMNS = {
    ("corr", "recall@0.2m"): "corr recall@0.2m",
    ("register", "rr@0.2m"): "reg. recall@0.2m",
    ("register", "rte"): "RTE (m)",
    ("register", "rre"): "RRE (deg)",
    ("sem3d", "acc"): "3D sem. acc",
    ("sem3d", "miou"): "3D sem. mIoU",
    ("robot", "success"): "robot success",
}


def bench_arms() -> tuple[str, ...]:
    return next(t.arms for t in TABLES if t.key == BENCH_TABLE)


def bench_configs(sizes: Sizes):
    """``(Probe3DConfig, RobotConfig)`` for a study preset: the eval defaults, shrunk for the quick preset."""

    p3d, robot = Probe3DConfig(), RobotConfig()
    if sizes.probe_test < 16:  # the quick preset: mechanics only
        p3d.num_train, p3d.num_test, p3d.ransac_iterations, p3d.sem3d.epochs = 2, 2, 50, 2
        robot = RobotConfig(tasks=["reach-v3"], demos=1, horizon=6, require_success=False, epochs=2, evals=1,
                            rollouts=1, blind=False)  # fmt: skip
    return p3d, robot


class BenchProbes:
    """The benches of the study's bench tasks, built once per study (demos, scenes, caches) and run per arm and
    seed."""

    def __init__(self, tasks: list[str], sizes: Sizes, cache_dir: str | Path) -> None:

        p3d, robot = bench_configs(sizes)
        cfg = ProbeConfig(probes3d=p3d, robot=robot)  # synthetic scenes, the last block's features
        self.benches = build_benches(tasks, cfg, sizes.image_size, cache_dir)

    def run(self, encoder, seed: int) -> dict[str, dict[str, float]]:
        out = {}
        for bench in self.benches:
            out.update({probe: res.metrics for probe, res in bench.run(encoder, seed).items()})
        return out

    def info(self) -> dict[str, Any]:
        return {b.kind: b.info() for b in self.benches}


def bench_columns(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean +- std over seeds of every bench column the records have (records without them are left out)."""
    cols = {}
    for (probe, metric), col in COLUMNS.items():
        have = [r for r in records if metric in r["metrics"].get(probe, {})]
        if have:
            values = [r["metrics"][probe][metric] for r in have]
            cols[col] = seed_stats(values, [r["seed"] for r in have]) | {"metric": metric}
    return cols


def bench_verdicts(base: dict[str, Any], arm: dict[str, Any]) -> str:
    """The bench columns where ``arm`` differs from ``base`` beyond noise, paired over the arm's seeds (the
    2D columns' rule, ``spatialboost.noise.verdict``), each said better or worse; "none"; or why it cannot say."""
    said = []
    for col, a in arm.items():
        if col not in base:
            continue
        if a["n"] < 2:
            return "1 seed: no noise estimate"
        word = verdict(on_seeds(base[col], a["seeds"]), a, a["metric"])
        said += [f"{col} {word}"] if word != "within noise" else []
    return ", ".join(said) or "none"


def bench_table(summary: dict[str, Any]) -> list[str]:
    """Markdown lines of table A's 3D and robot columns, or nothing when no arm has them."""
    arms = summary["arms"]
    names = [n for n in bench_arms() if arms.get(n, {}).get("benches")]
    if not names:
        return []
    cols = [c for c in COLUMNS.values() if any(c in arms[n]["benches"] for n in names)]
    head = ["arm", "seeds", *cols, "beyond noise vs base"]
    lines = [f"## Table {BENCH_TABLE} (continued): 3D and robot probes (paper Tables 3 and 4)", "",
             "Paper: registration recall 22.6 -> 78.8% and 3D semantic mIoU 6.9 -> 54.9 (OpenCLIP, Lexicon3D on "
             "ScanNet); CortexBench +5 to +8 points. Here: synthetic 4-view scenes (corr: mutual-NN patch matches "
             "within 0.2 m; registration: RMSE <= 0.2 m; sem3d: linear head on fused point features) and Meta-World "
             "behaviour cloning (success, best of the evaluations); RTE, RRE: lower is better.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    base = arms.get("base", {}).get("benches")
    for n in names:
        a = arms[n]
        cells = [_cell(a["benches"][c]) if c in a["benches"] else "" for c in cols]
        said = bench_verdicts(base, a["benches"]) if base and n != "base" else ""
        lines.append(
            f"| {a['label']} | {max(c['n'] for c in a['benches'].values())} | "
            + " | ".join(cells)
            + f" | {said} |"
        )
    return [*lines, ""]


def _cell(col: dict[str, Any]) -> str:
    return f"{col['mean']:.4f} ± {col['std']:.4f}" if col["n"] > 1 else f"{col['mean']:.4f}"

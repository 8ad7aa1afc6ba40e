"""Probe reports: results.json, a Markdown table (mean +- std, delta vs base) and matplotlib plots.

Plots (Agg backend, PNG): ``bars.png`` -- one panel per headline metric, a bar per encoder with the
seed std as error bar; ``depth_grid.png`` -- rows of test images with columns image, ground truth and each
encoder's depth prediction (seed 0), on one colour scale per row.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from spatialboost.io import atomic_open, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

HEADLINE = {
    "depth": ["rmse", "absrel", "delta1"],
    "seg": ["miou", "pixel_acc"],
    "cls-linear": ["top1"],
    "cls-knn": ["top1"],
    "corr": ["recall@0.1m", "recall@0.2m", "recall@0.4m"],  # the default thresholds (eval.probes3d)
    "register": ["rr@0.2m", "rte", "rre"],
    "sem3d": ["acc", "miou"],
    "robot": ["success"],
}
LOWER_IS_BETTER = {"rmse", "absrel", "log10", "log10_rmse", "rte", "rre", "rmse_median"}
METRIC_ORDER = [
    "rmse",
    "absrel",
    "log10",
    "log10_rmse",
    "delta1",
    "delta2",
    "delta3",
    "miou",
    "pixel_acc",
    "top1",
]


def _rows_by_key(summary: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["encoder"], r["probe"], r["metric"]): r for r in summary["rows"]}


def _metric_keys(summary: dict[str, Any]) -> list[tuple[str, str]]:
    keys = {(r["probe"], r["metric"]) for r in summary["rows"]}
    probe_order = list(HEADLINE)
    return sorted(keys, key=lambda k: (probe_order.index(k[0]) if k[0] in probe_order else 99,
                                       METRIC_ORDER.index(k[1]) if k[1] in METRIC_ORDER else 99, k))  # fmt: skip


def markdown_table(summary: dict[str, Any], headline_only: bool = False) -> str:
    """Rows = probe/metric; columns = encoders (mean +- std over seeds) and, per pair, delta vs base."""
    rows = _rows_by_key(summary)
    encoders = list(summary["encoders"])
    pairs = summary.get("pairs", {})
    head = ["probe", "metric", *encoders, *(f"Δ {b} vs {a}" for b, a in pairs.items())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for probe, metric in _metric_keys(summary):
        if headline_only and metric not in HEADLINE.get(probe, []):
            continue
        arrow = "↓" if metric in LOWER_IS_BETTER else "↑"
        cells = [probe, f"{metric} {arrow}"]
        for enc in encoders:
            r = rows.get((enc, probe, metric))
            cells.append("-" if r is None else f"{r['mean']:.4f} ± {r['std']:.4f}")
        for boosted, base in pairs.items():
            a, b = rows.get((base, probe, metric)), rows.get((boosted, probe, metric))
            cells.append("-" if a is None or b is None else _delta(a["mean"], b["mean"], arrow == "↓"))
        lines.append("| " + " | ".join(cells) + " |")
    n = len(summary.get("seeds", []))
    layers = summary.get("config", {}).get("features", {}).get("layers", "?")
    lines.append("")
    lines.append(f"mean ± std over {n} seed(s); layers={layers}; data={summary['dataset']['spec']} "
                 f"(train {summary['dataset']['n_train']}, test {summary['dataset']['n_test']}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def _delta(base: float, boosted: float, lower_better: bool) -> str:
    d = boosted - base
    rel = f" ({100 * d / abs(base):+.1f}%)" if base else ""
    better = (d < 0) if lower_better else (d > 0)
    mark = "" if d == 0 else (" better" if better else " worse")
    return f"{d:+.4f}{rel}{mark}"


def write_report(results: Any, out: str | Path, plots: bool = True) -> dict[str, Path]:
    """results.json, results.md and (optionally) bars.png / depth_grid.png into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md"}
    atomic_write_json(paths["json"], results.summary)
    atomic_write_text(paths["md"], "# Frozen-feature probes\n\n" + markdown_table(results.summary))
    if plots:
        paths["bars"] = plot_bars(results.summary, out / "bars.png")
        grid = plot_depth_grid(results.previews, list(results.summary["encoders"]), out / "depth_grid.png")
        if grid is not None:
            paths["depth_grid"] = grid
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_bars(summary: dict[str, Any], path: str | Path) -> Path:
    """Before/after bars with seed-std error bars, one panel per headline metric."""
    plt = _figure()
    rows = _rows_by_key(summary)
    encoders = list(summary["encoders"])
    keys = [k for k in _metric_keys(summary) if k[1] in HEADLINE.get(k[0], [])]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(2.6 * max(1, len(keys)), 3.0), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (probe, metric) in zip(axes[0], keys, strict=False):
        vals = [rows.get((e, probe, metric)) for e in encoders]
        means = [v["mean"] if v else np.nan for v in vals]
        stds = [v["std"] if v else 0.0 for v in vals]
        ax.bar(range(len(encoders)), means, yerr=stds, capsize=4, color=colors[: len(encoders)])
        ax.set_xticks(range(len(encoders)), encoders, rotation=20)
        ax.set_title(f"{probe}: {metric}", fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_depth_grid(previews: dict[str, Any], encoders: list[str], path: str | Path) -> Path | None:
    """Rows of (image, ground truth, each encoder's prediction); None when no depth probe ran."""
    test = previews.get("test")
    preds = [e for e in encoders if e in previews]
    if test is None or not preds:
        return None
    plt = _figure()
    k = len(test["image"])
    cols = 2 + len(preds)
    fig, axes = plt.subplots(k, cols, figsize=(2.2 * cols, 2.2 * k), squeeze=False)
    for i in range(k):
        gt = test["depth"][i]
        vmax = float(np.percentile(gt[gt > 0], 99)) if (gt > 0).any() else 1.0
        panels = [
            ("image", test["image"][i], None),
            ("ground truth", np.where(gt > 0, gt, np.nan), "magma_r"),
        ]
        panels += [(e, previews[e][i], "magma_r") for e in preds]
        for ax, (title, img, cmap) in zip(axes[i], panels, strict=True):
            ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=vmax if cmap else None)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)

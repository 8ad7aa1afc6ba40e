"""Probe reports: results.json, a Markdown table (mean +- std, delta vs base) and matplotlib plots.

The noise rule (``delta_text``): a delta is called "better" or "worse" only when
``|delta| > NOISE_K * sqrt(std_base**2 + std_boosted**2)`` (``spatialboost.noise``) with ``NOISE_K = 2`` and ``std`` the sample std
(ddof=1) over the probe seeds of each encoder (for accuracies plus each side's binomial standard error
over the test images, ``sampling_se``); otherwise it is "within noise". With one seed there is no
noise estimate, and the delta gets no verdict. The rule uses the seed spread of single runs, not the
standard error of the means, so it is conservative (at 3 seeds it is stricter than a two-sided Welch t-test
at 5%) and a reader can check it from the table's own ``mean ± std`` cells.

Plots (Agg backend, PNG): ``bars.png`` -- one panel per headline metric, a bar per encoder with the seed std
as error bar, the y axis zoomed on the bars (not from 0) and the title saying which direction is better;
``depth_grid.png`` -- rows of test images with columns image, ground truth and each encoder's depth
prediction (seed 0), on one colour scale per row with a colour bar in metres.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rcParams
from matplotlib.figure import Figure

from spatialboost.eval.specs import SPECS, headline, metric_order
from spatialboost.io import OutputDir, atomic_open
from spatialboost.noise import NOISE_RULE, lower_is_better, verdict

log = logging.getLogger(__name__)

# probes in report order, their headline metrics and the 2D metrics' table order: eval.specs (SPECS, headline,
# metric_order), read on each use; other metrics follow by name


def _rows_by_key(summary: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["encoder"], r["probe"], r["metric"]): r for r in summary["rows"]}


def _metric_keys(summary: dict[str, Any]) -> list[tuple[str, str]]:
    keys = {(r["probe"], r["metric"]) for r in summary["rows"]}
    probe_order, metrics = list(SPECS), metric_order()
    return sorted(keys, key=lambda k: (probe_order.index(k[0]) if k[0] in probe_order else 99,
                                       metrics.index(k[1]) if k[1] in metrics else 99, k))  # fmt: skip


PAIRED_RULE = (
    "3D probes (corr has no seed noise): a Δ must also exceed 2 standard errors of the paired per-unit "
    "difference (seed 0, the same view pairs / test scenes; the table in the 3D section)"
)


def markdown_table(summary: dict[str, Any], headline_only: bool = False) -> str:
    """Rows = probe/metric; columns = encoders (mean +- std over seeds) and, per pair, delta vs base."""
    rows = _rows_by_key(summary)
    encoders = list(summary["encoders"])
    pairs = summary.get("pairs", {})
    head = ["probe", "metric", *encoders, *(f"Δ {b} vs {a}" for b, a in pairs.items())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for probe, metric in _metric_keys(summary):
        if headline_only and metric not in headline(probe):
            continue
        found = [rows.get((enc, probe, metric)) for enc in encoders]
        row = next((r for r in found if r), None)  # its direction: the row's own (its probe's spec)
        cells = [probe, f"{metric} {'↓' if lower_is_better(metric, row) else '↑'}"]
        cells += ["-" if r is None else _mean_std(r) for r in found]
        for boosted, base in pairs.items():
            a, b = rows.get((base, probe, metric)), rows.get((boosted, probe, metric))
            cells.append("-" if a is None or b is None else delta_text(a, b))
        lines.append("| " + " | ".join(cells) + " |")
    n = len(summary.get("seeds", []))
    layers = summary.get("config", {}).get("features", {}).get("layers", "?")
    lines.append("")
    lines.append(f"mean ± std over {n} seed(s); layers={layers}; data={summary['dataset']['spec']} "
                 f"(train {summary['dataset']['n_train']}, test {summary['dataset']['n_test']}). "
                 f"↓ lower is better, ↑ higher is better.")  # fmt: skip
    skipped = sum(len(v) for v in summary["dataset"].get("skipped", {}).values())
    if skipped:
        lines.append(f"{skipped} input item(s) skipped while reading the data (listed in results.json, "
                     "dataset.skipped).")  # fmt: skip
    if pairs:
        lines.append(NOISE_RULE + ".")
        if any("per_unit" in r.get("protocol", {}) for r in summary["rows"]):
            lines.append(PAIRED_RULE + ".")
    if summary.get("depth_protocol"):
        lines.append(f"Depth protocol: {summary['depth_protocol']}.")
    return "\n".join(lines) + "\n"


def _mean_std(row: dict[str, Any]) -> str:
    """'mean ± std'; a single seed has no std to show (not '± 0.0000')."""
    if row.get("n", 2) < 2:
        return f"{row['mean']:.4f} (1 seed)"
    return f"{row['mean']:.4f} ± {row['std']:.4f}"


def beyond_noise(base: dict[str, Any], boosted: dict[str, Any]) -> bool | None:
    """The module's noise rule on two rows (mean, std, n); None when either has a single seed."""
    if min(base.get("n", 0), boosted.get("n", 0)) < 2:
        return None
    seeds_say = verdict(base, boosted) != "within noise"

    paired = paired_difference(base, boosted)  # 3D probes: the data's noise too
    return seeds_say if paired is None else seeds_say and paired["beyond_noise"]


def delta_text(base: dict[str, Any], boosted: dict[str, Any]) -> str:
    """'+0.0200 (+2.5%) worse' / '... within noise' / '... (1 seed: no noise estimate)'."""
    d = boosted["mean"] - base["mean"]
    rel = f" ({100 * d / abs(base['mean']):+.1f}%)" if base["mean"] else ""
    beyond = beyond_noise(base, boosted)
    if beyond is None:
        return f"{d:+.4f}{rel} (1 seed: no noise estimate)"
    if not beyond:
        return f"{d:+.4f}{rel} within noise"
    return f"{d:+.4f}{rel} {verdict(base, boosted)}"


REPORT_KIND = "probe report"  # the OutputDir kind of a probe --out directory
REPORT_FILES = ("results.json", "results.md", "bars.png", "depth_grid.png", "config.yaml")


def claim_report_dir(out: str | Path, overwrite: bool = False) -> OutputDir:
    """The probe output directory, refused if it holds files spatialboost did not write (see OutputDir)."""
    return OutputDir.claim(out, REPORT_KIND, overwrite=overwrite, legacy=_legacy_report_files)


def write_report(results: Any, out: OutputDir, plots: bool = True) -> dict[str, Path]:
    """results.json, results.md and (optionally) bars.png / depth_grid.png into ``out`` (then finished)."""
    paths = {
        "json": out.write_json("results.json", results.summary),
        "md": out.write_text("results.md", "# Frozen-feature probes\n\n" + markdown_table(results.summary)),
    }
    if plots:
        paths["bars"] = plot_bars(results.summary, out.path("bars.png"))
        encoders = list(results.summary["encoders"])
        if has_depth_previews(results.previews, encoders):
            paths["depth_grid"] = plot_depth_grid(results.previews, encoders, out.path("depth_grid.png"))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def _legacy_report_files(path: Path) -> list[str] | None:
    """A report an earlier version wrote (no marker): results.json with a probe summary in it."""
    try:
        summary = json.loads((path / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not {"rows", "encoders", "runs"} <= set(summary):
        return None
    return [name for name in REPORT_FILES if (path / name).is_file()]


def paired_difference(base: dict[str, Any], boosted: dict[str, Any]) -> dict[str, Any] | None:
    """Mean per-unit difference (boosted - base) of one metric row pair and its standard error, from the
    ``per_unit`` values the 3D probes record (seed 0); None when the rows have none for this metric."""
    metric = base.get("metric", "")
    units_a = base.get("protocol", {}).get("per_unit", {})
    units_b = boosted.get("protocol", {}).get("per_unit", {})
    a, b = units_a.get("values", {}).get(metric), units_b.get("values", {}).get(metric)
    if a is None or b is None or len(a) != len(b) or len(a) < 2:
        return None
    d = np.asarray(b, float) - np.asarray(a, float)
    se = float(np.std(d, ddof=1) / np.sqrt(len(d)))
    return {"metric": metric, "unit": units_a.get("unit", "unit"), "n": len(d), "mean": float(d.mean()), "se": se,
            "beyond_noise": bool(abs(d.mean()) > 2 * se)}  # fmt: skip


def save_png(fig: Figure, path: Path) -> Path:
    """``fig`` as a PNG at ``path``. Figures are built with matplotlib's object API (``Figure``), not pyplot:
    saving renders with Agg and no global backend or figure registry is touched."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_bars(summary: dict[str, Any], path: str | Path) -> Path:
    """Before/after bars with seed-std error bars, one panel per headline metric (``bars_figure``)."""
    return save_png(bars_figure(summary), Path(path))


def has_depth_previews(previews: dict[str, Any], encoders: list[str]) -> bool:
    return previews.get("test") is not None and any(e in previews for e in encoders)


def bars_figure(summary: dict[str, Any]) -> Figure:
    """One panel per headline metric: a bar per encoder, seed std as error bar, the y axis zoomed on the
    bars and their error bars (an axis from 0 hides a few-percent difference), the better direction in the
    title."""
    rows = _rows_by_key(summary)
    encoders = list(summary["encoders"])
    keys = [k for k in _metric_keys(summary) if k[1] in headline(k[0])]
    fig = Figure(figsize=(2.8 * max(1, len(keys)), 3.2))
    axes = fig.subplots(1, max(1, len(keys)), squeeze=False)
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    n = len(summary.get("seeds", []))
    for ax, (probe, metric) in zip(axes[0], keys, strict=False):
        vals = [rows.get((e, probe, metric)) for e in encoders]
        means = np.array([v["mean"] if v else np.nan for v in vals])
        stds = np.array([v["std"] if v else 0.0 for v in vals])
        ax.bar(range(len(encoders)), means, yerr=stds, capsize=4, color=colors[: len(encoders)])
        ax.set_ylim(*_zoomed_limits(means, stds))
        ax.set_xticks(range(len(encoders)), encoders, rotation=20)
        row = next((v for v in vals if v), None)
        direction = "lower is better" if lower_is_better(metric, row) else "higher is better"
        ax.set_title(f"{probe}: {metric}\n({direction})", fontsize=9)
    fig.suptitle(f"mean ± std over {n} seed(s); y axis not from 0", fontsize=8)
    fig.tight_layout()
    return fig


def _zoomed_limits(means: np.ndarray, stds: np.ndarray) -> tuple[float, float]:
    """y limits around mean ± std of every bar with a margin; not below 0 for non-negative metrics."""
    ok = np.isfinite(means)
    if not ok.any():
        return 0.0, 1.0
    lo, hi = float((means - stds)[ok].min()), float((means + stds)[ok].max())
    span = max(hi - lo, 1e-3 * max(abs(hi), 1e-9), 1e-9)
    lo, hi = lo - 0.6 * span, hi + 0.3 * span
    if (means[ok] >= 0).all():
        lo = max(lo, 0.0)
    return lo, hi


def plot_depth_grid(previews: dict[str, Any], encoders: list[str], path: str | Path) -> Path | None:
    """Rows of (image, ground truth, each encoder's prediction); None when no depth probe ran."""
    fig = depth_grid_figure(previews, encoders)
    return None if fig is None else save_png(fig, Path(path))


def depth_grid_figure(previews: dict[str, Any], encoders: list[str]) -> Figure | None:
    """The depth grid: per row one colour scale (0 .. the ground truth's 99th percentile) and a colour bar
    labelled in metres; None when no depth probe ran."""
    test = previews.get("test")
    preds = [e for e in encoders if e in previews]
    if test is None or not preds:
        return None
    k = len(test["image"])
    cols = 2 + len(preds)
    fig = Figure(figsize=(2.2 * cols + 0.8, 2.2 * k))
    axes = fig.subplots(k, cols, squeeze=False)
    for i in range(k):
        gt = test["depth"][i]
        vmax = float(np.percentile(gt[gt > 0], 99)) if (gt > 0).any() else 1.0
        panels = [
            ("image", test["image"][i], None),
            ("ground truth", np.where(gt > 0, gt, np.nan), "magma_r"),
        ]
        panels += [(e, previews[e][i], "magma_r") for e in preds]
        shown = None
        for ax, (title, img, cmap) in zip(axes[i], panels, strict=True):
            im = ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=vmax if cmap else None)
            shown = im if cmap else shown
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title, fontsize=9)
        bar = fig.colorbar(shown, ax=list(axes[i]), fraction=0.025, pad=0.01)
        bar.set_label("depth (m)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return fig

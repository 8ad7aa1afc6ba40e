"""Report sections of the benches (``eval.benches``: the 3D and robot probes): appended to results.md, plus
``corr_rotation.png``.

The numbers are in ``results.json`` (``rows``, like every probe); these sections add what a reader needs to
judge them: the data and thresholds, the encoder-independent references (the view pairs' overlap, the
blind robot policy), the noise of a success rate, and the time each part took.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from spatialboost.eval.report import paired_difference, save_png
from spatialboost.io import OutputDir

log = logging.getLogger(__name__)


def _rows(summary: dict[str, Any], probe: str) -> list[dict[str, Any]]:
    return [r for r in summary["rows"] if r["probe"] == probe]


def section_3d(summary: dict[str, Any]) -> str:
    info = summary.get("benches", {}).get("3d")
    if not info:
        return ""
    cfg = info["config"]
    lines = ["## 3D probes", ""]
    for split, s in info["splits"].items():
        lines.append(f"- {split}: {s['scenes']} scenes, {s['views']} views (`{s['identity']}`)"
                     + (f"; skipped {len(s['skipped'])}: {s['skipped'][:3]}" if s["skipped"] else ""))  # fmt: skip
    lines.append(f"- probe resolution {info['image_size']} px; corr thresholds {cfg['thresholds']} m, rotation bins "
                 f"{cfg['rotation_bins']} deg; RANSAC {cfg['ransac_iterations']} iterations, inlier "
                 f"{cfg['inlier_threshold']} m, registration recall RMSE <= {cfg['rr_threshold']} m; sem3d voxel "
                 f"{cfg['sem3d']['voxel']} m, <= {cfg['sem3d']['max_points']} points per scene.")  # fmt: skip
    corr = {r["encoder"]: r["protocol"] for r in _rows(summary, "corr")}
    if corr:
        p = next(iter(corr.values()))
        lines.append(f"- correspondence: {p['pairs']} view pairs, per rotation bin {p['pairs_per_bin']}; overlap (share "
                     f"of patches with a partner within {p['overlap_threshold']} m in the other view, set by the data "
                     "and the patch grid) and mutual-NN matches per pair: "
                     + "; ".join(f"{e} {q['overlap']:.3f}, {q['matches_per_pair']:.1f}" for e, q in corr.items()) + ".")  # fmt: skip
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in info["seconds"].items())
    lines += [f"- time (all encoders and seeds): {secs}.", *paired_lines(summary), ""]
    return "\n".join(lines)


def paired_differences(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per encoder pair: the paired difference of every 3D metric row that has per-unit values."""
    rows = {(r["encoder"], r["probe"], r["metric"]): r for r in summary["rows"]}
    out = []
    for boosted, base in summary.get("pairs", {}).items():
        for (enc, probe, metric), row in rows.items():
            other = rows.get((boosted, probe, metric))
            if enc != base or other is None:
                continue
            diff = paired_difference(row, other)
            if diff is not None:
                out.append({"pair": f"{boosted} vs {base}", "probe": probe, **diff})
    return out


def paired_lines(summary: dict[str, Any]) -> list[str]:
    diffs = paired_differences(summary)
    if not diffs:
        return []
    lines = ["", "Paired differences (seed 0; mean ± standard error over the same view pairs / test scenes; "
             "beyond noise = more than 2 SE):", "", "| pair | probe | metric | Δ | SE | units | verdict |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for d in diffs:
        verdict = "beyond noise" if d["beyond_noise"] else "within noise"
        lines.append(f"| {d['pair']} | {d['probe']} | {d['metric']} | {d['mean']:+.4f} | {d['se']:.4f} | "
                     f"{d['n']} {d['unit']}s | {verdict} |")  # fmt: skip
    return [*lines, ""]


def section_robot(summary: dict[str, Any]) -> str:
    info = summary.get("benches", {}).get("robot")
    if not info:
        return ""
    cfg = info["config"]
    n = cfg["rollouts"]
    lines = ["## Robot probe (Meta-World behaviour cloning)", ""]
    for task, t in info["tasks"].items():
        lines.append(
            f"- {task}: {t['episodes']} expert demos ({t['frames']} frames), horizon {t['horizon']} steps"
        )
    lines.append(f"- policy: MLP {cfg['layers']} x {cfg['hidden']} on the CLS feature" + (" + proprioception" if cfg["proprio"] else "")
                 + f", {cfg['epochs']} epochs; {cfg['evals']} evaluations of {n} rollouts each; `success` = best "
                 "evaluation, `success_final` = last.")  # fmt: skip
    lines.append(f"- noise: one evaluation of {n} rollouts has a binomial standard error up to {0.5 / np.sqrt(n):.3f} "
                 "(at 50% success); differences below about twice that are not resolved by this run.")  # fmt: skip
    blind = info.get("blind") or {}
    if blind:
        vals = {
            p: [res[p]["success"] for res in blind.values() if p in res] for p in next(iter(blind.values()))
        }
        cells = ", ".join(
            f"{p} {np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}" for p, v in vals.items()
        )
        lines.append(f"- blind reference (proprioception only, same seeds): {cells}.")
    sps = info.get("rollout_steps_per_s")
    lines.append(f"- time: demos {info['demo_seconds']:.1f} s (0 = cached); rollouts {info['rollout_seconds']:.1f} s for "
                 f"{int(info['rollout_steps'])} steps" + (f" ({sps:.1f} steps/s: render, encode, act)" if sps else "")
                 + f"; blind rollouts {info.get('blind_seconds', 0.0):.1f} s for {int(info.get('blind_steps', 0))} steps.")  # fmt: skip
    lines.append(f"- versions: {info['versions']}.")
    return "\n".join(lines) + "\n"


def plot_corr_rotation(summary: dict[str, Any], path: str | Path) -> Path | None:
    """Correspondence recall by viewpoint change, one line per encoder (seed-std error bars)."""
    rows = [r for r in _rows(summary, "corr") if " rot[" in r["metric"]]
    if not rows:
        return None
    bins = sorted({r["metric"].split(" ", 1)[1] for r in rows}, key=lambda b: float(b[4:].split(",")[0]))
    fig = Figure(figsize=(4.2, 3.0))
    ax = fig.subplots()
    for enc in summary["encoders"]:
        got = {r["metric"].split(" ", 1)[1]: r for r in rows if r["encoder"] == enc}
        ax.errorbar(range(len(bins)), [got[b]["mean"] if b in got else np.nan for b in bins],
                    yerr=[got[b]["std"] if b in got else 0.0 for b in bins], marker="o", capsize=3, label=enc)  # fmt: skip
    ax.set_xticks(range(len(bins)), [b[3:] for b in bins])
    ax.set_xlabel("rotation between the views (deg)")
    ax.set_ylabel(rows[0]["metric"].split(" ")[0])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, Path(path))


def write_bench_sections(results: Any, out: OutputDir, plots: bool = True) -> dict[str, Path]:
    """Append the 3D/robot sections to ``results.md`` (written by ``report.write_report``) and plot, both
    through the report's ``OutputDir`` (so the files are recorded as ours)."""
    text = section_3d(results.summary) + section_robot(results.summary)
    paths: dict[str, Path] = {}
    if text:
        md = out.root / "results.md"
        paths["md"] = out.write_text("results.md", (md.read_text() if md.is_file() else "") + "\n" + text)
    if plots:
        path = plot_corr_rotation(results.summary, out.path("corr_rotation.png"))
        if path is not None:
            paths["corr_rotation"] = path
    return paths

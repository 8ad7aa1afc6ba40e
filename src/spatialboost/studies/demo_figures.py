"""The demo's pictures and its results page (``spatialboost.studies.demo``).

- ``depth_errors.png``: 4 held-out probe scenes, one row each: image, ground-truth depth, the base's and the
  boosted encoder's depth *as the linear depth probe predicts it* (seed 0 of the probe table, the same
  protocol and test images), and the two absolute error maps. The four depth columns share one colour
  bar and the two error columns another, both in metres, over all rows.
- ``pca.png``: the patch features of the same scenes, base vs boosted, along the top 3 principal components
  of the base's patch tokens (fitted over the 4 scenes together) shown as RGB: one basis and one colour
  range for both, so a colour means the same direction in either (each encoder's tokens centred on their mean).
- ``losses.png``: the training loss of each stage (``metrics.jsonl``).
- ``demo.html``: the printed table and lines, and these pictures (``report.html`` links it).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from spatialboost.eval.report import save_png
from spatialboost.io import atomic_write_text
from spatialboost.models.encoder_base import VisionEncoder

SCENES = (
    4  # held-out scenes shown (the depth probe keeps this many test predictions: DepthProbeConfig.preview)
)


def write_figures(
    out: Path, probes: Any, run_dir: Path, encoders: dict[str, VisionEncoder]
) -> dict[str, Path]:
    """The PNGs above into ``out`` (each only where its data exists); name -> path."""
    paths: dict[str, Path] = {}
    test = probes.previews.get("test")
    if test is not None and all(name in probes.previews for name in encoders):
        paths["depth probes and their errors"] = plot_depth_errors(
            test, {n: probes.previews[n] for n in encoders}, out / "depth_errors.png"
        )
        paths["patch features (PCA)"] = plot_pca(test["image"][:SCENES], encoders, out / "pca.png")
    losses = stage_losses(run_dir)
    if losses:
        paths["stage losses"] = plot_losses(losses, out / "losses.png")
    return paths


# --- depth and its errors --------------------------------------------------------------------------------------


def plot_depth_errors(test: dict[str, np.ndarray], preds: dict[str, np.ndarray], path: Path) -> Path:
    """Rows = scenes; depth columns on one colour bar, |error| columns on another (metres)."""
    k = min(SCENES, len(test["image"]), *(len(p) for p in preds.values()))
    gt = [np.where(test["depth"][i] > 0, test["depth"][i], np.nan) for i in range(k)]  # metres; 0 = no depth
    errors = {n: [np.abs(p[i] - gt[i]) for i in range(k)] for n, p in preds.items()}
    dmax = float(np.nanpercentile(np.stack(gt), 99))
    emax = float(np.nanpercentile(np.stack([e for es in errors.values() for e in es]), 99)) or 1e-3
    cols = 2 + 2 * len(preds)
    fig = Figure(figsize=(2.0 * cols + 1.2, 2.0 * k + 0.6))
    axes = fig.subplots(k, cols, squeeze=False)
    depth_im = error_im = None
    for i in range(k):
        panels = [("image", test["image"][i], None, None), ("ground truth", gt[i], "magma_r", dmax)]
        panels += [(f"{n} probe", p[i], "magma_r", dmax) for n, p in preds.items()]
        panels += [(f"|{n} - truth|", errors[n][i], "viridis", emax) for n in preds]
        for ax, (title, img, cmap, vmax) in zip(axes[i], panels, strict=True):
            im = ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=vmax)
            depth_im = im if cmap == "magma_r" else depth_im
            error_im = im if cmap == "viridis" else error_im
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(
        "Held-out scenes: linear depth probe (seed 0, the table's protocol) on frozen features", fontsize=10
    )
    n = len(preds)
    for im, group, label in (
        (depth_im, axes[:, 1 : 2 + n], "depth (m)"),
        (error_im, axes[:, 2 + n :], "absolute error (m)"),
    ):
        bar = fig.colorbar(
            im, ax=group.ravel().tolist(), location="bottom", fraction=0.03, pad=0.02, aspect=30
        )
        bar.set_label(label, fontsize=8)
    return save_png(fig, path)


# --- PCA of the patch features ---------------------------------------------------------------------------------


@torch.no_grad()
def patch_features(encoder: VisionEncoder, images: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(k, H, W, 3) uint8 images as the encoder sees them -> ((k, N, D) patch tokens, grid)."""
    spec = encoder.spec
    side = min(images.shape[1], images.shape[2]) // spec.patch_size * spec.patch_size
    x = torch.from_numpy(images[:, :side, :side].astype(np.float32) / 255.0).permute(
        0, 3, 1, 2
    )  # (k, 3, S, S)
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    out = encoder(x)
    return out.patch.float().numpy(), out.grid


def pca_basis(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top 3 principal directions (3, D) of (k, N, D) tokens, and the 1st / 99th percentiles (3,) of the
    centred tokens along them (the colour range)."""
    flat = tokens.reshape(-1, tokens.shape[-1]).astype(np.float64)
    flat -= flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    proj = flat @ vt[:3].T  # (k*N, 3)
    return vt[:3], np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)


def pca_rgb(
    tokens: np.ndarray, grid: tuple[int, int], basis: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """(k, N, D) tokens, centred on their own mean, along ``basis`` -> (k, h, w, 3) RGB in [0, 1]."""
    directions, lo, hi = basis
    flat = tokens.reshape(-1, tokens.shape[-1]).astype(np.float64)
    proj = (flat - flat.mean(axis=0)) @ directions.T
    rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
    return rgb.reshape(len(tokens), *grid, 3)


def plot_pca(images: np.ndarray, encoders: dict[str, VisionEncoder], path: Path) -> Path:
    """One PCA basis, the first encoder's (the base), for every encoder: the same colour, the same direction."""
    feats = {name: patch_features(enc, images) for name, enc in encoders.items()}
    basis = pca_basis(next(iter(feats.values()))[0])
    maps = {name: pca_rgb(tokens, grid, basis) for name, (tokens, grid) in feats.items()}
    k, cols = len(images), 1 + len(maps)
    fig = Figure(figsize=(2.0 * cols, 2.0 * k + 0.4))
    axes = fig.subplots(k, cols, squeeze=False)
    for i in range(k):
        panels = [("image", images[i])] + [(f"{n} features", m[i]) for n, m in maps.items()]
        for ax, (title, img) in zip(axes[i], panels, strict=True):
            ax.imshow(img, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title, fontsize=9)
    first = next(iter(maps))
    fig.suptitle(
        f"Patch features on the top 3 principal components of the {first} features, as RGB", fontsize=10
    )
    return save_png(fig, path)


# --- the stage losses ------------------------------------------------------------------------------------------


def stage_losses(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """stage -> (steps, losses) from each stage's metrics.jsonl (stages that logged none are left out)."""
    from spatialboost.train.metrics import read_metrics
    from spatialboost.train.stages import STAGES, stage_dir

    out = {}
    for stage in STAGES:
        rows = [r for r in read_metrics(stage_dir(run_dir, stage)) if "loss" in r and "step" in r]
        if rows:
            out[stage] = ([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    return out


def plot_losses(losses: dict[str, tuple[list[int], list[float]]], path: Path) -> Path:
    fig = Figure(figsize=(3.6 * len(losses), 2.8))
    axes = fig.subplots(1, len(losses), squeeze=False)
    for ax, (stage, (steps, values)) in zip(axes[0], losses.items(), strict=True):
        ax.plot(steps, values, marker="." if len(steps) < 20 else None)
        ax.set_title(f"stage {stage}", fontsize=9)
        ax.set_xlabel("optimiser step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("training loss (nats / answer token)", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


# --- the page --------------------------------------------------------------------------------------------------


def write_page(path: Path, text: str, pictures: dict[str, Path]) -> Path:
    """demo.html: the demo's printed figures (pre-formatted) and its pictures, relative to the page."""
    images = "".join(
        f"<h2>{html.escape(name)}</h2><img src='{html.escape(p.relative_to(path.parent).as_posix())}' "
        f"alt='{html.escape(name)}' style='max-width:100%'>"
        for name, p in pictures.items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>SpatialBoost demo</title></head><body>"
        f"<h1>SpatialBoost demo: base vs boosted</h1><pre>{html.escape(text)}</pre>{images}"
        "<p><a href='report.html'>the generated dataset</a></p></body></html>\n"
    )
    atomic_write_text(path, page)
    return path

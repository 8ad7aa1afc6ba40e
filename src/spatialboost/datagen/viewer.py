"""A static HTML report of a dataset: images with depth and instance overlays, conversations by level.

Images are inlined as base64 PNG, so the page is one self-contained file.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from spatialboost.datagen.dataset import encode_png, iter_records, load_sample_gt, read_manifest
from spatialboost.datagen.scene import View
from spatialboost.io import atomic_write_text

LEVEL_ORDER = ("pixel", "object", "scene", "caption")
_STYLE = """body{font-family:sans-serif;margin:20px;background:#fafafa}.s{background:#fff;border:1px solid #ddd;
margin:0 0 24px;padding:12px}img{image-rendering:pixelated;width:224px;margin:2px}h3{margin:4px 0}
.lv{margin:6px 0}.q{color:#124}.a{color:#333;margin-left:1em}.tag{font-size:11px;color:#888}"""


def _img(rgb: np.ndarray, title: str) -> str:
    data = base64.b64encode(encode_png(rgb)).decode("ascii")
    return f'<img title="{html.escape(title)}" src="data:image/png;base64,{data}">'


def depth_image(depth: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 colour map (near = bright), invalid pixels black."""
    from matplotlib import colormaps

    valid = depth > 0
    out = np.zeros((*depth.shape, 3), np.uint8)
    if valid.any():
        lo, hi = float(depth[valid].min()), float(depth[valid].max())
        t = 1.0 - (depth - lo) / max(hi - lo, 1e-6)
        out = (colormaps["magma"](t)[..., :3] * 255).astype(np.uint8)
        out[~valid] = 0
    return out


def instance_overlay(rgb: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """RGB blended with a fixed colour per instance id (background untouched)."""
    palette = np.random.default_rng(0).integers(40, 256, (int(instance.max()) + 1, 3)).astype(np.float32)
    out = rgb.astype(np.float32)
    mask = instance > 0
    out[mask] = 0.45 * out[mask] + 0.55 * palette[instance[mask]]
    return out.astype(np.uint8)


def _view_html(k: int, view: View) -> str:
    parts = [_img(view.rgb, f"view {k + 1}")]
    if view.depth is not None:
        parts.append(_img(depth_image(view.depth), f"view {k + 1} depth"))
    if view.instance is not None:
        parts.append(_img(instance_overlay(view.rgb, view.instance), f"view {k + 1} instances"))
    return "<div>" + "".join(parts) + "</div>"


def sample_html(dataset_dir: Path, record: dict) -> str:
    scene = load_sample_gt(dataset_dir, record)
    facts = scene.meta["facts"]
    conv = record["conversations"]
    by_level: dict[str, list[str]] = {}
    for i, fact in enumerate(facts):
        q = html.escape(conv[2 * i]["value"].replace("<image>\n", ""))
        a = html.escape(conv[2 * i + 1]["value"])
        item = f'<div class="q">Q{i + 1}: {q} <span class="tag">{fact["template"]}</span></div><div class="a">{a}</div>'
        by_level.setdefault(fact["level"], []).append(item)
    levels = "".join(
        f'<div class="lv"><h3>{lv}</h3>{"".join(by_level[lv])}</div>' for lv in LEVEL_ORDER if lv in by_level
    )
    views = "".join(_view_html(k, v) for k, v in enumerate(scene.views))
    head = f"<h2>{html.escape(record['id'])} <span class='tag'>{len(scene.views)} view(s), {len(scene.objects)} object(s)</span></h2>"
    return f'<div class="s">{head}{views}{levels}</div>'


def write_report(dataset_dir: str | Path, out: str | Path, max_samples: int = 16) -> int:
    """Write the HTML report of the first ``max_samples`` samples; returns how many were written."""
    root = Path(dataset_dir)
    manifest = read_manifest(root)
    bodies = []
    for record in iter_records(root):
        if len(bodies) >= max_samples:
            break
        bodies.append(sample_html(root, record))
    c = manifest["counts"]
    summary = html.escape(
        f"{c['samples']} samples, {c['views']} views, {c['turns']} turns {c['turns_per_level']}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>SpatialBoost dataset {html.escape(root.name)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(str(root))}</h1><p>{summary}</p>"
        + "".join(bodies)
        + "</body></html>\n"
    )
    atomic_write_text(out, page)
    return len(bodies)

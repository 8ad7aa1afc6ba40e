"""A static HTML report of a dataset: images with depth and instance panels, conversations by level.

Images are inlined as base64 PNG, so the page is one self-contained file. Each view shows three panels:

- the RGB image;
- depth on the magma scale, near = bright, invalid pixels black, with a colour bar in metres (per view);
- instances: every object filled with its own colour from the image (mean of its lit half) (so "the red cylinder" is red
  here too), outlined in white and numbered by instance id; background greyed. A legend per sample maps
  each id to the object's description and says which objects the view hides (the ones a caption's count
  leaves out: ``relations.SceneGraph.visible`` is what the answers use).

``write_report(dir, out, max_samples, start)`` shows samples ``start .. start + max_samples - 1`` and says
"showing samples a-b of N" with the command that shows the next page.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from spatialboost.constants import IMAGE_TOKEN
from spatialboost.datagen.dataset.writer import encode_png, load_sample_gt
from spatialboost.datagen.questions.relations import SceneGraph
from spatialboost.datagen.scenes.scene import Scene
from spatialboost.dataset_format import iter_records, read_manifest
from spatialboost.errors import UserError
from spatialboost.io import atomic_write_text

log = logging.getLogger(__name__)

LEVEL_ORDER = ("pixel", "object", "scene", "caption")
DEPTH_CMAP = "magma"
_STYLE = """body{font-family:sans-serif;margin:16px 24px;background:#fafafa;max-width:none}
.s{background:#fff;border:1px solid #ddd;margin:0 0 24px;padding:12px}
.views{display:flex;flex-wrap:wrap;gap:12px}.view{flex:1 1 100%}
.panels{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:8px}
.panel img{width:100%;image-rendering:pixelated;display:block}.cap{font-size:12px;color:#555;margin:2px 0}
.cbar{display:flex;align-items:center;gap:4px;font-size:11px;color:#555}.cbar img{flex:1;height:10px}
.legend{font-size:12px;margin:4px 0}.sw{display:inline-block;width:10px;height:10px;border:1px solid #888;
margin:0 3px 0 8px;vertical-align:middle}.hidden{color:#a33}h3{margin:6px 0 2px}.lv{margin:6px 0}
.q{color:#124}.a{color:#333;margin-left:1em}.tag{font-size:11px;color:#888}.note{background:#fff8e0;
border:1px solid #e8d9a0;padding:6px 10px}"""
_KEY = """<div class="note"><b>How to read this page.</b> Each view: <b>RGB</b> | <b>depth</b> (metres, magma
scale: near = bright, far = dark, black = no depth; the bar under it gives the range of that view) |
<b>instances</b> (each object filled with its own colour from the image, outlined in white, numbered by instance id;
the legend maps ids to objects and lists the objects the view hides). Questions are grouped by level:
pixel -> object -> scene -> caption.</div>"""


def _png_b64(rgb: np.ndarray) -> str:
    return base64.b64encode(encode_png(rgb)).decode("ascii")


def _img(rgb: np.ndarray, title: str) -> str:
    return f'<img title="{html.escape(title)}" alt="{html.escape(title)}" src="data:image/png;base64,{_png_b64(rgb)}">'


def depth_range(depth: np.ndarray) -> tuple[float, float] | None:
    """(near, far) metres over the valid pixels, None when there are none."""
    valid = depth > 0
    if not valid.any():
        return None
    return float(depth[valid].min()), float(depth[valid].max())


def depth_image(depth: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 colour map (near = bright), invalid pixels black."""
    out = np.zeros((*depth.shape, 3), np.uint8)
    rng = depth_range(depth)
    if rng is not None:
        lo, hi = rng
        t = 1.0 - (depth - lo) / max(hi - lo, 1e-6)
        out = (colormaps[DEPTH_CMAP](t)[..., :3] * 255).astype(np.uint8)
        out[~(depth > 0)] = 0
    return out


def depth_colorbar(near: float, far: float) -> str:
    """An HTML colour bar for ``depth_image``: near (bright) on the left, far (dark) on the right, metres."""
    t = np.linspace(1.0, 0.0, 256)  # near -> far, as in depth_image
    bar = (colormaps[DEPTH_CMAP](t)[:, :3] * 255).astype(np.uint8)
    bar = np.repeat(bar[None], 4, axis=0)  # (4, 256, 3)
    return (
        f'<div class="cbar"><span>{near:.2f} m</span><img alt="depth colour bar" '
        f'src="data:image/png;base64,{_png_b64(bar)}"><span>{far:.2f} m</span></div>'
    )


def object_colors(rgb: np.ndarray, instance: np.ndarray) -> dict[int, np.ndarray]:
    """Each instance id >= 1 -> its own colour in the image (float RGB, 0..255): the mean of its lit half
    (pixels at or above the object's median brightness), so shading does not darken it."""
    ids = instance.ravel()
    out = {}
    flat = rgb.reshape(-1, 3).astype(np.float64)
    for k in np.unique(ids[ids > 0]):
        px = flat[ids == k]
        luma = px @ np.array([0.299, 0.587, 0.114])
        out[int(k)] = px[luma >= np.median(luma)].mean(0)
    return out


def instance_overlay(rgb: np.ndarray, instance: np.ndarray, labels: bool = True) -> np.ndarray:
    """Objects filled with their own colour (object_colors) and outlined in white; background greyed; ids drawn."""
    gray = rgb.astype(np.float32).mean(-1, keepdims=True)
    out = np.repeat(0.35 * gray + 0.65 * 235.0, 3, axis=-1)  # pale grey background
    colors = object_colors(rgb, instance)
    for k, c in colors.items():
        out[instance == k] = c
    edge = np.zeros(instance.shape, bool)
    edge[:-1] |= instance[:-1] != instance[1:]
    edge[1:] |= instance[:-1] != instance[1:]
    edge[:, :-1] |= instance[:, :-1] != instance[:, 1:]
    edge[:, 1:] |= instance[:, :-1] != instance[:, 1:]
    out[edge & (instance > 0)] = 255.0
    image = out.clip(0, 255).astype(np.uint8)
    if labels and min(instance.shape) >= 96:
        image = _draw_ids(image, instance, colors)
    return image


def _draw_ids(image: np.ndarray, instance: np.ndarray, colors: dict[int, np.ndarray]) -> np.ndarray:
    """The id of each object at its pixel nearest to the mask centroid, black on light / white on dark."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    for k, c in colors.items():
        ys, xs = np.nonzero(instance == k)
        i = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        fill = (0, 0, 0) if c @ np.array([0.299, 0.587, 0.114]) > 140 else (255, 255, 255)
        draw.text((int(xs[i]) - 3, int(ys[i]) - 5), str(k), fill=fill)
    return np.asarray(im)


def _swatch(c: np.ndarray | None) -> str:
    if c is None:
        return '<span class="sw" style="background:#fff"></span>'
    r, g, b = (int(round(v)) for v in c)
    return f'<span class="sw" style="background:rgb({r},{g},{b})"></span>'


def legend_html(scene: Scene, k: int, graph: SceneGraph | None = None) -> str:
    """View ``k``'s legend: a swatch, id and description per visible object, then the objects it hides."""
    view = scene.views[k]
    visible = set((graph or SceneGraph(scene)).visible(k))
    colors = object_colors(view.rgb, view.instance) if view.instance is not None else {}
    shown, hidden = [], []
    for o in scene.objects:
        entry = f"{_swatch(colors.get(o.id))}{o.id} {html.escape(o.description)}"
        (shown if o.id in visible else hidden).append(entry)
    text = f"{len(shown)} of {len(scene.objects)} object(s) visible:" + "".join(shown)
    if hidden:
        text += ' <span class="hidden">| hidden in this view:' + "".join(hidden) + "</span>"
    return f'<div class="legend">{text}</div>'


def _view_html(k: int, scene: Scene, graph: SceneGraph) -> str:
    view = scene.views[k]
    panels = [f'<div class="panel">{_img(view.rgb, f"view {k + 1}")}<div class="cap">RGB</div></div>']
    if view.depth is not None:
        rng = depth_range(view.depth)
        bar = depth_colorbar(*rng) if rng else '<div class="cap">no valid depth</div>'
        panels.append(
            f'<div class="panel">{_img(depth_image(view.depth), f"view {k + 1} depth")}'
            f'<div class="cap">depth, metres (near = bright)</div>{bar}</div>'
        )
    if view.instance is not None:
        panels.append(
            f'<div class="panel">{_img(instance_overlay(view.rgb, view.instance), f"view {k + 1} instances")}'
            '<div class="cap">instances (own colours, ids as in the legend)</div></div>'
        )
    title = f"<div class='tag'>view {k + 1}</div>" if len(scene.views) > 1 else ""
    return (
        f'<div class="view">{title}<div class="panels">{"".join(panels)}</div>'
        f"{legend_html(scene, k, graph)}</div>"
    )


def sample_html(dataset_dir: Path, record: dict) -> str:
    scene = load_sample_gt(dataset_dir, record)
    graph = SceneGraph(scene)
    facts = scene.meta["facts"]
    conv = record["conversations"]
    by_level: dict[str, list[str]] = {}
    for i, fact in enumerate(facts):
        q = html.escape(conv[2 * i]["value"].replace(f"{IMAGE_TOKEN}\n", ""))
        a = html.escape(conv[2 * i + 1]["value"])
        item = f'<div class="q">Q{i + 1}: {q} <span class="tag">{fact["template"]}</span></div><div class="a">{a}</div>'
        by_level.setdefault(fact["level"], []).append(item)
    levels = "".join(
        f'<div class="lv"><h3>{lv}</h3>{"".join(by_level[lv])}</div>' for lv in LEVEL_ORDER if lv in by_level
    )
    views = "".join(_view_html(k, scene, graph) for k in range(len(scene.views)))
    n_vis = ", ".join(str(len(graph.visible(k))) for k in range(len(scene.views)))
    head = (
        f"<h2>{html.escape(record['id'])} <span class='tag'>{len(scene.views)} view(s), "
        f"{len(scene.objects)} object(s) in the scene, visible per view: {n_vis}</span></h2>"
    )
    return f'<div class="s">{head}<div class="views">{views}</div>{levels}</div>'


def write_report(
    dataset_dir: str | Path,
    out: str | Path,
    max_samples: int = 16,
    start: int = 0,
    links: list[tuple[str, str]] | None = None,
) -> int:
    """Write the HTML report of samples ``start .. start + max_samples - 1``; returns how many were shown
    (a sample that cannot be read is skipped, logged and listed on the page; none readable is an error).
    ``links``: (href, text) pairs listed under the title (the demo links its results page)."""
    if max_samples < 1 or start < 0:
        raise UserError(f"--max-samples must be >= 1 and --start >= 0, got {max_samples} and {start}")
    root = Path(dataset_dir)
    manifest = read_manifest(root)
    bodies, skipped = [], []
    for i, record in enumerate(iter_records(root)):
        if len(bodies) + len(skipped) >= max_samples:
            break
        if i >= start:
            body, why = _sample_or_skip(root, record)
            if why is None:
                bodies.append(body)
            else:
                skipped.append(why)
    if skipped and not bodies:
        raise UserError(f"{root}: no sample on the page could be read: {skipped[0]}"
                        + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else "")
                        + f"; `spatialboost validate {root}` lists every problem")  # fmt: skip
    c = manifest["counts"]
    summary = html.escape(
        f"{c['samples']} samples, {c['views']} views, {c['turns']} turns {c['turns_per_level']}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>SpatialBoost dataset {html.escape(root.name)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(str(root))}</h1>{_links_html(links)}<p>{summary}</p>"
        f"<p><b>{html.escape(showing_line(root, start, len(bodies) + len(skipped), c['samples'], max_samples))}</b>"
        f"</p>{_skipped_html(root, skipped)}{_KEY}" + "".join(bodies) + "</body></html>\n"
    )
    atomic_write_text(out, page)
    return len(bodies)


def _links_html(links: list[tuple[str, str]] | None) -> str:
    items = "".join(f"<li><a href='{html.escape(h)}'>{html.escape(t)}</a></li>" for h, t in links or [])
    return f"<ul>{items}</ul>" if items else ""


def showing_line(root: Path, start: int, shown: int, total: int, page: int) -> str:
    """'showing samples 1-16 of 64; next page: ...' (or 'all N samples')."""
    if shown == total:
        return f"showing all {total} samples"
    text = (
        f"showing samples {start + 1}-{start + shown} of {total}" if shown else f"no samples from {start + 1}"
    )
    if start + shown < total:
        text += f"; next page: spatialboost view {root} --start {start + shown} --max-samples {page}"
    return text + f"; all at once: --start 0 --max-samples {total}"


def _sample_or_skip(root: Path, record: dict) -> tuple[str, str | None]:
    """(the sample's HTML, None), or ("", why it was skipped) for a sample that cannot be read (a missing or
    corrupt file, a path leading outside the dataset): the page shows the rest and lists the skipped ones."""
    try:
        return sample_html(root, record), None
    except (OSError, ValueError, KeyError, TypeError, UserError) as e:
        rid = record.get("id") if isinstance(record, dict) else None
        why = f"sample {rid}: cannot read it ({e})"
        log.warning("%s: %s; skipped", root, why)
        return "", why


def _skipped_html(root: Path, skipped: list[str]) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
    hint = html.escape(f"`spatialboost validate {root}` lists every problem of the dataset.")
    return f"<div class='skipped'><b>{len(skipped)} sample(s) skipped:</b><ul>{items}</ul>{hint}</div>"

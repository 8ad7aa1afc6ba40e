"""Provided geometry: RGB-D folders (ScanNet-style), their exporter, and multi-view fusion.

Folder layout (one sequence = one folder; ``--input`` may be one sequence or a folder of sequences)::

    SEQ/
      color/<frame>.jpg|png       RGB images (any size)
      depth/<frame>.png           16-bit PNG, z-depth in millimetres, 0 = invalid (same size as color)
      intrinsic.txt               3x3 (or 4x4) K of the colour image, whitespace separated; or
      intrinsic/<frame>.txt       one per frame when they differ
      pose/<frame>.txt            optional: 4x4 cam_to_world, OpenCV camera (x right, y down, z forward)
      instance/<frame>.png        optional: 16-bit PNG instance ids, 0 = none
      labels.json                 optional: {"<instance id>": "<class name>"} (ids shared by all frames)

Frames are matched by file stem. Any missing piece (depth, K, masks) is estimated by the model backends.
Every path is confined to its sequence folder (``io.confined``): a piece that leads outside it is never read,
and is skipped and recorded like a bad file.
``export_scene`` writes a synthetic ``Scene`` in this layout (the oracle for tests and the label-noise study).
Multi-view: ``fuse_views`` merges posed frames into one world-frame cloud per instance id;
``UnposedReconstructor`` is the seam for VGGT-style reconstruction from unposed images.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from spatialboost.datagen.real.images import ImageLimits, load_rgb
from spatialboost.datagen.real.lifting import (
    LiftConfig,
    LiftedObject,
    clean_object_points,
    describe,
    gravity_frame,
    scene_object,
)
from spatialboost.datagen.real.perception.colors import dominant_color
from spatialboost.datagen.real.perception.oracle import GroundTruth
from spatialboost.datagen.scenes.geometry import camera_to_world, unproject_depth
from spatialboost.datagen.scenes.scene import Camera, Scene, View
from spatialboost.errors import UserError
from spatialboost.io import (
    Refusal,
    Tree,
    UnsafePathError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    confined,
    walk_tree,
)

log = logging.getLogger(__name__)

DEPTH_SCALE = 1000.0  # depth PNG units per metre (millimetres)
COLOR_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class Frame:
    """One frame of an RGB-D sequence; any of the optional pieces may be missing."""

    key: str  # "<sequence>/<stem>", unique in a run
    color: Path
    depth: Path | None = None
    K: np.ndarray | None = None  # (3, 3)
    pose: np.ndarray | None = None  # (4, 4) cam_to_world
    instance: Path | None = None
    labels: dict[int, str] = field(default_factory=dict)


def is_sequence(path: Path) -> bool:
    """``path`` has a ``color/`` folder (a symlink named ``color`` counts: ``read_sequence`` confines it)."""
    color = path / "color"
    return color.is_symlink() or color.is_dir()


def find_sequences(root: str | Path, refused: list[Refusal] | None = None) -> list[Path]:
    """``root`` itself when it is a sequence, else its sequence subfolders (sorted, resolved); UserError when none.

    Sub-folders are listed with ``io.walk_tree``: a directory symlink is not followed and goes to ``refused``
    (with its reason) when given, else to the log."""
    root = Path(root).resolve()
    if is_sequence(root):
        return [root]
    tree = walk_tree(root, recursive=False) if root.is_dir() else Tree()
    _refuse(refused, [r for r in tree.refused if r.rel.endswith("/")])
    seqs = [e.path for e in tree.dirs if is_sequence(e.path)]
    if not seqs:
        links = f"; {len(tree.refused)} symlink(s) not followed" if tree.refused else ""
        raise UserError(
            f"{root}: no RGB-D sequence found (expected color/ [depth/ intrinsic.txt ...]; see rgbd.py){links}"
        )
    return seqs


def _refuse(refused: list[Refusal] | None, found: list[Refusal]) -> None:
    if refused is not None:
        refused += found
        return
    for r in found:
        log.warning("skipped %s: %s", r.rel, r.reason)


def _read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise UserError(f"{path}: not a whitespace-separated matrix ({e})") from None
    if shape == (3, 3) and m.shape == (4, 4):
        m = m[:3, :3]
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise UserError(f"{path}: expected a finite {shape[0]}x{shape[1]} matrix, got shape {m.shape}")
    return m


def read_sequence(seq: str | Path, key_prefix: str = "", refused: list[Refusal] | None = None) -> list[Frame]:
    """The frames of one sequence folder, sorted by stem.

    Every path is confined to ``seq`` (``io.confined``): a piece that leads outside it (a symlinked
    ``color/``, ``depth/<frame>.png`` or ``intrinsic.txt``) is never read; it goes to ``refused`` (named
    ``key_prefix + path``, with the reason) when given, else to the log, and counts as missing."""
    seq = Path(seq).resolve()
    found: list[Refusal] = []

    def piece(rel: str) -> Path | None:
        try:
            p = confined(seq, rel)
        except UnsafePathError as e:
            found.append(Refusal(key_prefix + rel, e.reason))
            return None
        return p if p.is_file() else None

    try:
        tree = walk_tree(seq, "color", recursive=False)
    except UnsafePathError as e:
        _refuse(refused, [Refusal(f"{key_prefix}color/", e.reason)])
        return []
    found += [Refusal(key_prefix + r.rel, r.reason) for r in tree.refused]
    shared_K_path, labels_path = piece("intrinsic.txt"), piece("labels.json")
    shared_K = _read_matrix(shared_K_path, (3, 3)) if shared_K_path else None
    labels = {int(k): str(v) for k, v in json.loads(labels_path.read_text()).items()} if labels_path else {}
    frames = []
    for color in (e for e in tree.files if Path(e.rel).suffix.lower() in COLOR_SUFFIXES):
        stem = Path(color.rel).stem
        K_path, pose_path = piece(f"intrinsic/{stem}.txt"), piece(f"pose/{stem}.txt")
        frames.append(
            Frame(
                key=f"{key_prefix}{stem}",
                color=color.path,
                depth=piece(f"depth/{stem}.png"),
                K=_read_matrix(K_path, (3, 3)) if K_path else shared_K,
                pose=_read_matrix(pose_path, (4, 4)) if pose_path else None,
                instance=piece(f"instance/{stem}.png"),
                labels=labels,
            )
        )
    _refuse(refused, found)
    return frames


def read_depth_png(path: Path, scale: float = DEPTH_SCALE) -> np.ndarray:
    """16-bit depth PNG -> (H, W) float32 metres, 0 = invalid."""
    with Image.open(path) as im:
        a = np.asarray(im)
    if a.dtype not in (np.uint16, np.int32, np.uint8) or a.ndim != 2:
        raise UserError(
            f"{path}: depth must be a single-channel 16-bit PNG in millimetres (got {a.dtype} {a.shape})"
        )
    return (a.astype(np.float32) / scale).astype(np.float32)


def read_instance_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int32)


def ground_truth(frame: Frame) -> GroundTruth:
    """What the frame's folder provides, as an oracle's ground truth (missing pieces stay None)."""
    return GroundTruth(
        depth=read_depth_png(frame.depth) if frame.depth else None,
        K=frame.K,
        instance=read_instance_png(frame.instance) if frame.instance else None,
        labels=dict(frame.labels),
    )


def load_frame_rgb(frame: Frame, limits: ImageLimits | None = None) -> np.ndarray:
    return load_rgb(frame.color, limits or ImageLimits())


# ----------------------------------------------------------------------------------------------- export


def _png_bytes(a: np.ndarray) -> bytes:
    buf = BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def export_scene(scene: Scene, out: str | Path) -> Path:
    """Write ``scene``'s views as one sequence folder ``out/<scene_id>`` (color, depth mm, K, poses, instances)."""
    seq = Path(out) / scene.scene_id
    for i, view in enumerate(scene.views):
        stem = f"{i:06d}"
        atomic_write_bytes(seq / "color" / f"{stem}.png", _png_bytes(view.rgb))
        if view.depth is not None:
            mm = np.clip(np.round(view.depth.astype(np.float64) * DEPTH_SCALE), 0, 65535).astype(np.uint16)
            atomic_write_bytes(seq / "depth" / f"{stem}.png", _png_bytes(mm))
        if view.instance is not None:
            atomic_write_bytes(seq / "instance" / f"{stem}.png", _png_bytes(view.instance.astype(np.uint16)))
        atomic_write_text(seq / "intrinsic" / f"{stem}.txt", _matrix_text(view.camera.K))
        atomic_write_text(seq / "pose" / f"{stem}.txt", _matrix_text(view.camera.cam_to_world))
    atomic_write_json(seq / "labels.json", {str(o.id): o.name for o in scene.objects})
    return seq


def _matrix_text(m: np.ndarray) -> str:
    return "\n".join(" ".join(f"{v:.10g}" for v in row) for row in np.asarray(m)) + "\n"


# ----------------------------------------------------------------------------------------------- multi-view


@dataclass
class PosedView:
    """One view ready for fusion: metric z-depth, K, pose and an instance map (ids shared across views)."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres
    K: np.ndarray  # (3, 3)
    cam_to_world: np.ndarray  # (4, 4), the input's world frame
    instance: np.ndarray  # (H, W) int32
    labels: dict[int, str] = field(default_factory=dict)


def fuse_views(
    views: Sequence[PosedView],
    scene_id: str,
    cfg: LiftConfig | None = None,
    up_hint: Sequence[float] = (0, 0, 1),
) -> Scene:
    """Posed views -> one Scene: per instance id one fused world cloud; gravity from a floor fit in the input's
    world frame (``up_hint`` = its up direction, +z for ScanNet / the synthetic engine)."""
    cfg = cfg or LiftConfig()
    rng = np.random.default_rng(cfg.seed)
    clouds: dict[int, list[np.ndarray]] = {}
    colors: dict[int, list[np.ndarray]] = {}
    background = []
    for v in views:
        valid = v.depth > 0
        pts_cam = unproject_depth(v.depth, v.K)
        bg = valid & (v.instance == 0)
        background.append(camera_to_world(pts_cam[bg][:: max(1, bg.sum() // 4000)], v.cam_to_world))
        for k in np.unique(v.instance[valid & (v.instance > 0)]):
            m = valid & (v.instance == k)
            pts = clean_object_points(pts_cam[m], cfg, rng)
            clouds.setdefault(int(k), []).append(camera_to_world(pts, v.cam_to_world))
            colors.setdefault(int(k), []).append(v.rgb[m])
    first = views[0].cam_to_world
    T, info = gravity_frame(
        np.concatenate(background), np.asarray(up_hint, float), first[:3, 3], first[:3, 0], cfg, rng
    )
    lifted, ids = [], []
    for k in sorted(clouds):
        pts = np.concatenate(clouds[k])
        if len(pts) < cfg.min_object_points:
            continue
        pixels = np.concatenate(colors[k])[None]  # (1, M, 3) as an image row
        label = views[0].labels.get(k, "object")
        lifted.append(
            LiftedObject(label, pts @ T[:3, :3].T + T[:3, 3], dominant_color(pixels), extra={"source_id": k})
        )
        ids.append(k)
    new_views = [_view_in(v, T) for v in views]
    descriptions = describe(lifted, new_views[0].camera.cam_to_world)
    objects = [scene_object(k, o, d) for k, o, d in zip(ids, lifted, descriptions, strict=True)]
    for o in objects:
        o.visible_pixels = [int((v.instance == o.id).sum()) for v in views]
    classes = ["void", *sorted({o.name for o in objects})]
    meta = {**info, "views": len(views), "fusion": "posed"}
    return Scene(scene_id, new_views, objects, classes, source="rgbd", meta=meta)


def _view_in(v: PosedView, T: np.ndarray) -> View:
    instance = np.where(np.isin(v.instance, list(v.labels)) | (v.instance > 0), v.instance, 0).astype(
        np.int32
    )
    camera = Camera(np.asarray(v.K, np.float64), T @ v.cam_to_world, v.depth.shape[1], v.depth.shape[0])
    return View(rgb=v.rgb, camera=camera, depth=v.depth.astype(np.float32), instance=instance)


class UnposedReconstructor(Protocol):
    """Unposed images -> per-view metric z-depth, K and cam_to_world (one shared world frame)."""

    def reconstruct(
        self, images: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]: ...


VGGT_INSTALL_HINT = (
    "multi-view reconstruction from unposed images needs VGGT, which is neither in transformers nor on PyPI: "
    "install it from source (pip install git+https://github.com/facebookresearch/vggt) and its weights "
    "(facebook/VGGT-1B), or provide poses (pose/<frame>.txt) and depth (depth/<frame>.png) instead"
)


def vggt_reconstructor(model: str = "facebook/VGGT-1B", device: str = "cpu") -> UnposedReconstructor:
    """A VGGT-backed reconstructor when the ``vggt`` package is installed, else a UserError saying what to
    install."""
    if importlib.util.find_spec("vggt") is None:
        raise UserError(VGGT_INSTALL_HINT)
    return _VGGT(model, device)


class _VGGT:
    """Adapter over the ``vggt`` package (not importable here; exercised only where it is installed)."""

    def __init__(self, model: str, device: str) -> None:
        # lazy: optional dependency (VGGT), needed only to reconstruct unposed images
        from vggt.models.vggt import VGGT

        self.device = device
        self.net = VGGT.from_pretrained(model).to(device).eval()

    def reconstruct(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        # lazy: optional dependency (VGGT), needed only to reconstruct unposed images
        from vggt.utils.pose_enc import pose_encoding_to_extri_intri

        x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in images]).to(
            self.device
        )
        with torch.no_grad():
            pred = self.net(x)
        extri, intri = pose_encoding_to_extri_intri(pred["pose_enc"], x.shape[-2:])
        out = []
        for i in range(len(images)):
            w2c = np.eye(4)
            w2c[:3] = extri[0, i].cpu().numpy()  # world -> camera (OpenCV)
            depth = pred["depth"][0, i, ..., 0].cpu().numpy().astype(np.float32)
            out.append((depth, intri[0, i].cpu().numpy().astype(np.float64), np.linalg.inv(w2c)))
        return out

"""``ImageSource``: real photos (or RGB-D folders) -> perception -> lifted ``Scene`` per sample, for the dataset
writer; ``ImagesConfig`` is what identifies an images dataset, ``collect_items`` the usable inputs of a folder.

The command (``spatialboost generate images``, ``cli.generate_images``) builds these from its flags. Perception
runs batched per shard, and per-stage caches (``cache/{depth,detections,masks}/<image sha>-<backend config>.npz``,
written atomically) mean a crash after depth never recomputes depth. Backends are built lazily, so the source
pickles to spawned workers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spatialboost.config import to_dict
from spatialboost.datagen.dataset.writer import encode_npz
from spatialboost.datagen.real import rgbd
from spatialboost.datagen.real.images import ImageEntry, ImageLimits, ImageRejected, load_rgb, scan_folder
from spatialboost.datagen.real.lifting import LiftConfig, lift_view
from spatialboost.datagen.real.perception import BackendConfig, GroundTruth, build_backend
from spatialboost.datagen.real.perception.base import boxes_of
from spatialboost.errors import UserError
from spatialboost.io import atomic_write_bytes, sha256_bytes, sha256_file, walk_tree

STAGES = ("depth", "detector", "segmenter")


@dataclass
class ImagesConfig:
    """What identifies an images dataset (recorded in config.json; a different one is refused)."""

    input: str
    depth: str = "depth-pro"
    detector: str = "owlv2"
    segmenter: str = "sam2"
    model_paths: dict[str, str] = field(default_factory=dict)
    vocabulary: list[str] = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 4
    threshold: float = 0.2
    multiview: bool = False
    oracle: dict[str, float] = field(default_factory=dict)
    lift: LiftConfig = field(default_factory=LiftConfig)

    def backend_config(self, stage: str):
        options = dict(self.oracle) if self.stage_name(stage) == "oracle" else {}
        return BackendConfig(
            model=self.model_paths.get(stage, ""), device=self.device, dtype=self.dtype,
            batch_size=self.batch_size, threshold=self.threshold, options=options,
        )  # fmt: skip

    def stage_name(self, stage: str) -> str:
        return {"depth": self.depth, "detector": self.detector, "segmenter": self.segmenter}[stage]


@dataclass
class Item:
    """One sample's input: a photo, or RGB-D frame(s)."""

    rel: str
    sha: str
    frames: list[Any] = field(default_factory=list)  # rgbd.Frame list when the input is RGB-D
    entry: ImageEntry | None = None


class ImageSource:
    """``SampleSource`` over real images; backends are built lazily (so the source pickles to workers)."""

    name = "images"

    def __init__(self, cfg: ImagesConfig, items: list[Item], cache_dir: Path, shard_size: int = 16) -> None:
        self.cfg, self.items, self.cache_dir, self.shard_size = cfg, items, cache_dir, shard_size
        self.multiview = cfg.multiview
        self._backends: dict[str, Any] = {}
        self._truth: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_backends": {}, "_truth": {}}

    def config(self) -> dict[str, Any]:
        return {**to_dict(self.cfg), "items": [[it.rel, it.sha] for it in self.items]}

    # -- backends and ground truth
    def truth(self, key: str):
        if key not in self._truth:
            frame = self._frame(key)
            self._truth = {key: rgbd.ground_truth(frame) if frame is not None else GroundTruth()}
        return self._truth[key]

    def _frame(self, key: str):
        for it in self.items:
            for f in it.frames:
                if f.key == key:
                    return f
        return None

    def backend(self, stage: str):
        if stage not in self._backends:
            kind = stage
            self._backends[stage] = build_backend(
                kind, self.cfg.stage_name(stage), self.cfg.backend_config(stage), self.truth
            )
        return self._backends[stage]

    # -- per-stage caches
    def _stage_key(self, stage: str) -> str:
        """Backend-config fingerprint of a stage, chained: masks depend on detections, detections on the vocabulary."""
        key = self.cfg.backend_config(stage).fingerprint(self.cfg.stage_name(stage))
        if stage == "detector":
            key += "-" + sha256_bytes("\n".join(self.cfg.vocabulary).encode())[:8]
        if stage == "segmenter":
            key += "-" + self._stage_key("detector")
        return key

    def _cache_path(self, stage: str, sha: str) -> Path:
        return self.cache_dir / stage / f"{sha[:24]}-{self._stage_key(stage)}.npz"

    def _load_cache(self, stage: str, sha: str) -> dict[str, np.ndarray] | None:
        p = self._cache_path(stage, sha)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            return None  # a torn or corrupt cache file is recomputed

    def _save_cache(self, stage: str, sha: str, arrays: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self._cache_path(stage, sha), encode_npz(arrays))

    # -- perception, batched over the items given
    def perceive(self, frames: list[tuple[str, str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """(key, sha, rgb) per frame -> {depth, K, boxes, labels, scores, masks}, every stage cached."""
        out = [dict() for _ in frames]
        self._stage_depth(frames, out)
        self._stage_detect(frames, out)
        self._stage_segment(frames, out)
        return out

    def _run_missing(self, stage, frames, out, compute) -> None:
        missing = []
        for i, (_, sha, _) in enumerate(frames):
            cached = self._load_cache(stage, sha)
            if cached is None:
                missing.append(i)
            else:
                out[i].update(cached)
        if missing:
            results = compute([frames[i] for i in missing], [out[i] for i in missing])
            for i, arrays in zip(missing, results, strict=True):
                self._save_cache(stage, frames[i][1], arrays)
                out[i].update(arrays)

    def _stage_depth(self, frames, out) -> None:
        if self.cfg.depth == "provided":
            for (key, _, _), o in zip(frames, out, strict=True):
                gt = self.truth(key)
                if gt.depth is None or gt.K is None:
                    raise UserError(f"{key}: --depth provided needs depth/<frame>.png and intrinsics")
                o.update(depth=gt.depth, K=np.asarray(gt.K, np.float64))
            return

        def compute(fr, _):
            res = self.backend("depth").predict([f[2] for f in fr], [f[0] for f in fr])
            return [{"depth": r.depth, "K": r.K} for r in res]

        self._run_missing("depth", frames, out, compute)

    def _stage_detect(self, frames, out) -> None:
        if self.cfg.detector == "provided":
            return  # masks and labels come from the instance maps in _stage_segment

        def compute(fr, _):
            dets = self.backend("detector").detect(
                [f[2] for f in fr], self.cfg.vocabulary, [f[0] for f in fr]
            )
            return [_detections_to_arrays(d) for d in dets]

        self._run_missing("detector", frames, out, compute)

    def _stage_segment(self, frames, out) -> None:
        if self.cfg.segmenter == "provided" or self.cfg.detector == "provided":
            for (key, _, rgb), o in zip(frames, out, strict=True):
                o.update(_provided_masks(self.truth(key), rgb.shape[:2]))
            return

        def compute(fr, outs):
            masks = self.backend("segmenter").segment(
                [f[2] for f in fr], [o["boxes"] for o in outs], [f[0] for f in fr]
            )
            return [{"masks": np.packbits(m, axis=-1), "mask_width": np.int64(m.shape[-1])} for m in masks]

        self._run_missing("segmenter", frames, out, compute)
        for o in out:
            if "mask_width" in o:
                o["masks"] = np.unpackbits(o.pop("masks"), axis=-1, count=int(o.pop("mask_width"))).astype(
                    bool
                )

    # -- SampleSource
    def make_scene(self, index: int, seed: int, sample_id: str):
        item = self.items[index]
        lift = dataclasses.replace(self.cfg.lift, seed=seed % 2**32)
        meta = {
            "input": item.rel,
            "sha256": item.sha,
            "backends": {s: self.cfg.stage_name(s) for s in STAGES},
        }
        if item.frames and self.cfg.multiview:
            return self._fused_scene(item, sample_id, lift, meta)
        self._prefetch(index)
        key, rgb = self._key_rgb(item)
        p = self.perceive([(key, item.sha, rgb)])[0]  # every stage is cached by now: no model call
        labels = [str(x) for x in p["labels"]]
        return lift_view(rgb, p["depth"], p["K"], p["masks"], labels, p["scores"], sample_id, lift, meta)

    def _key_rgb(self, item: Item) -> tuple[str, np.ndarray]:
        return (
            (item.frames[0].key, load_rgb(item.frames[0].color))
            if item.frames
            else (item.rel, load_rgb(item.entry))
        )

    def _prefetch(self, index: int) -> None:
        """Run the models once, batched, for this item and the next ``batch_size - 1`` of its shard."""
        end = min(
            len(self.items), index + self.cfg.batch_size, (index // self.shard_size + 1) * self.shard_size
        )
        todo = [i for i in range(index, end) if not self._fully_cached(self.items[i])]
        frames = []
        for i in todo:
            key, rgb = self._key_rgb(self.items[i])
            frames.append((key, self.items[i].sha, rgb))
        if frames:
            self.perceive(frames)

    def _fully_cached(self, item: Item) -> bool:
        stages = [s for s in STAGES if self.cfg.stage_name(s) not in ("provided",)]
        if self.cfg.detector == "provided":
            stages = [s for s in stages if s == "depth"]
        return all(self._cache_path(s, item.sha).is_file() for s in stages)

    def _fused_scene(self, item: Item, sample_id: str, lift: LiftConfig, meta: dict):
        views = []
        for f in item.frames:
            if f.pose is None:
                raise UserError(f"{f.key}: --multiview needs pose/<frame>.txt ({rgbd.VGGT_INSTALL_HINT})")
            rgb = load_rgb(f.color)
            gt = self.truth(f.key)
            p = self.perceive([(f.key, sha256_file(f.color), rgb)])[0]
            inst = gt.instance if gt.instance is not None else _masks_to_instance(p["masks"])
            views.append(rgbd.PosedView(rgb, p["depth"], p["K"], f.pose, inst, gt.labels or _labels_of(p)))
        scene = rgbd.fuse_views(views, sample_id, lift)
        scene.meta.update(meta)
        return scene


def _detections_to_arrays(dets) -> dict[str, np.ndarray]:
    return {
        "boxes": boxes_of(dets),
        "labels": np.array([d.label for d in dets], dtype=np.str_).reshape(-1),
        "scores": np.array([d.score for d in dets], np.float64).reshape(-1),
    }


def _provided_masks(gt, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    if gt.instance is None:
        raise UserError("--detector/--segmenter provided need instance/<frame>.png (+ labels.json)")
    ids = [k for k in np.unique(gt.instance) if k > 0]
    masks = np.stack([gt.instance == k for k in ids]) if ids else np.zeros((0, *hw), bool)
    labels = np.array([gt.labels.get(int(k), "object") for k in ids], dtype=np.str_).reshape(-1)
    return {"masks": masks, "labels": labels, "scores": np.ones(len(ids)), "boxes": np.zeros((len(ids), 4))}


def _masks_to_instance(masks: np.ndarray) -> np.ndarray:
    inst = np.zeros(masks.shape[1:], np.int32)
    for j in np.argsort([-m.sum() for m in masks]):
        inst[masks[j]] = j + 1
    return inst


def _labels_of(p: dict) -> dict[int, str]:
    return {j + 1: str(lab) for j, lab in enumerate(p["labels"])}


# ----------------------------------------------------------------------------------------------- inputs


def collect_items(
    root: Path, multiview: bool, limits: ImageLimits
) -> tuple[list[Item], list[dict[str, str]]]:
    """Usable inputs in sorted order, and the skipped files with their reasons (among them what leads outside
    ``root``: ``io.walk_tree`` / ``io.confined``, never read)."""
    if not root.is_dir():
        what = "exists and is not a directory" if root.exists() else "no such directory"
        raise UserError(f"--input {root}: {what}")
    if rgbd.is_sequence(root) or any(rgbd.is_sequence(d.path) for d in walk_tree(root, recursive=False).dirs):
        return _rgbd_items(root.resolve(), multiview, limits)
    good, skipped = scan_folder(root, limits)
    items, skips = [], [{"file": s.rel, "reason": s.reason} for s in skipped]
    for entry in good:
        try:
            load_rgb(entry, limits)  # full decode once: truncated data is refused here, not mid-shard
        except ImageRejected as e:
            skips.append({"file": entry.rel, "reason": str(e)})
            continue
        items.append(Item(entry.rel, sha256_file(entry.path), entry=entry))
    return items, sorted(skips, key=lambda s: s["file"])


def _rgbd_items(root: Path, multiview: bool, limits: ImageLimits) -> tuple[list[Item], list[dict[str, str]]]:
    items, skips, refused = [], [], []
    for seq in rgbd.find_sequences(root, refused):
        prefix = "" if seq == root else f"{seq.name}/"
        frames = []
        for f in rgbd.read_sequence(seq, key_prefix=prefix, refused=refused):
            try:
                load_rgb(f.color, limits)
            except ImageRejected as e:
                skips.append({"file": f.key, "reason": str(e)})
                continue
            frames.append(f)
        if multiview and frames:
            items.append(Item(prefix or seq.name, "".join(sha256_file(f.color)[:8] for f in frames), frames))
        else:
            items += [Item(f.key, sha256_file(f.color), [f]) for f in frames]
    skips += [{"file": r.rel, "reason": r.reason} for r in refused]
    return items, sorted(skips, key=lambda s: s["file"])

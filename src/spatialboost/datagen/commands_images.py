"""``spatialboost generate images``: real photos (or RGB-D folders) -> perception -> Scenes -> the dataset writer.

    spatialboost generate images --input DIR --out DIR [--depth depth-pro|oracle|provided]
        [--detector owlv2|grounding-dino|oracle] [--segmenter sam2|oracle] [--model-path STAGE=PATH ...]
        [--vocab FILE] [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--batch-size N]
        [--multiview] [--shard i/n] [--workers W] [--shard-size N] [--seed S]

``--input`` is a folder of photos, or an RGB-D folder in the layout of ``datagen.rgbd`` (``color/`` ...):
there ``--depth provided`` uses its depth + intrinsics, its instance masks replace detection and
segmentation when present (``--detector/--segmenter provided``), and ``oracle`` backends read the same
files (with ``--oracle-depth-noise`` / ``--oracle-erode`` to measure label noise). Sample i is the i-th good
file in sorted order (or the i-th sequence with ``--multiview``), so ``--shard`` and resuming behave exactly as
for ``generate synthetic``. Files that cannot be used are listed with their reason in ``manifest.json``
(``input_skipped``). Per-stage caches (``cache/{depth,detections,masks}/<image sha>-<backend config>.npz``,
written atomically) mean a crash after depth never recomputes depth; perception runs batched per shard.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spatialboost.datagen.conversations import ConversationConfig
from spatialboost.datagen.images import (
    IMAGE_SUFFIXES,
    ImageEntry,
    ImageLimits,
    ImageRejected,
    load_rgb,
    scan_folder,
)
from spatialboost.datagen.lifting import LiftConfig, lift_view
from spatialboost.errors import UserError
from spatialboost.io import atomic_write_bytes, sha256_bytes, sha256_file

log = logging.getLogger(__name__)
STAGES = ("depth", "detector", "segmenter")
DESCRIPTION = (
    "Real photos, or RGB-D folders (color/, depth/, intrinsic.txt, instance/ + labels.json, pose/), through "
    "depth, detection and segmentation models into the same spatial conversation dataset as `generate "
    "synthetic`. Files that cannot be used are skipped and listed with their reason in manifest.json "
    "(input_skipped). `oracle` and `provided` stages read an RGB-D folder's own ground truth."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spatialboost.datagen.commands_generate import add_run_arguments

    parser.add_argument(
        "--input", required=True, type=Path, help="folder of images, or an RGB-D folder (color/, depth/, ...)"
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset directory (created, or resumed)")
    parser.add_argument("--depth", default="depth-pro", help="depth-pro | oracle | provided")
    parser.add_argument("--detector", default="owlv2", help="owlv2 | grounding-dino | oracle | provided")
    parser.add_argument("--segmenter", default="sam2", help="sam2 | oracle | provided")
    parser.add_argument(
        "--model-path", action="append", default=[], metavar="STAGE=PATH",
        help="checkpoint (hub name or dir) per stage, e.g. depth=/ckpt/depth-pro (repeatable)",
    )  # fmt: skip
    parser.add_argument("--vocab", type=Path, help="object names, one per line (default: common objects)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (GPU)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per model call")
    parser.add_argument("--threshold", type=float, default=0.2, help="detector score threshold")
    parser.add_argument(
        "--multiview", action="store_true", help="RGB-D input: one fused sample per posed sequence"
    )
    parser.add_argument("--shard-size", type=int, default=16, help="samples per shard")
    parser.add_argument("--seed", type=int, default=0, help="base seed (conversations, RANSAC)")
    parser.add_argument("--oracle-depth-noise", type=float, default=0.0, help="oracle depth: relative sigma")
    parser.add_argument("--oracle-erode", type=int, default=0, help="oracle masks: erosion, pixels")
    add_run_arguments(parser, config_help="YAML config file (ImagesFileConfig: conversation, lift)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. conversation.order=reverse"
    )


@dataclass
class ImagesFileConfig:
    """What ``--config FILE`` and ``key=value`` overrides set for an images run (the flags set the rest)."""

    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    lift: LiftConfig = field(default_factory=LiftConfig)


def file_config(args: argparse.Namespace) -> ImagesFileConfig:
    from spatialboost.config import load_config

    return load_config(ImagesFileConfig, args.config, list(args.overrides))


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
        from spatialboost.datagen.perception import BackendConfig

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
        from spatialboost.config import to_dict

        return {**to_dict(self.cfg), "items": [[it.rel, it.sha] for it in self.items]}

    # -- backends and ground truth
    def truth(self, key: str):
        from spatialboost.datagen import rgbd
        from spatialboost.datagen.perception import GroundTruth

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
        from spatialboost.datagen.perception import build_backend

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
        from spatialboost.datagen.dataset import encode_npz

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
        import dataclasses

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
        from spatialboost.datagen import rgbd

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
    from spatialboost.datagen.perception.base import boxes_of

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
    """Usable inputs in sorted order, and the skipped files with their reasons."""
    from spatialboost.datagen import rgbd

    if not root.is_dir():
        what = "exists and is not a directory" if root.exists() else "no such directory"
        raise UserError(f"--input {root}: {what}")
    if rgbd.is_sequence(root) or any(rgbd.is_sequence(p) for p in root.iterdir() if p.is_dir()):
        return _rgbd_items(root, multiview, limits)
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
    from spatialboost.datagen import rgbd

    items, skips = [], []
    for seq in rgbd.find_sequences(root):
        prefix = "" if seq == root else f"{seq.name}/"
        frames = []
        for f in rgbd.read_sequence(seq, key_prefix=prefix):
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
    return items, skips


def images_config(args: argparse.Namespace, vocabulary: list[str], lift: LiftConfig) -> ImagesConfig:
    model_paths = {}
    for spec in args.model_path:
        stage, sep, path = spec.partition("=")
        if not sep or stage not in STAGES:
            raise UserError(f"--model-path {spec!r}: use STAGE=PATH with STAGE one of {list(STAGES)}")
        model_paths[stage] = path
    oracle = {"depth_noise": args.oracle_depth_noise, "erode_px": args.oracle_erode, "seed": args.seed}
    return ImagesConfig(
        input=str(args.input.resolve()), depth=args.depth, detector=args.detector, segmenter=args.segmenter,
        model_paths=model_paths, vocabulary=vocabulary, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size, threshold=args.threshold, multiview=args.multiview, oracle=oracle,
        lift=lift,
    )  # fmt: skip


def _check_names(cfg: ImagesConfig) -> None:
    from spatialboost.datagen.perception import DEPTH_BACKENDS, DETECTORS, SEGMENTERS

    for stage, reg in (("depth", DEPTH_BACKENDS), ("detector", DETECTORS), ("segmenter", SEGMENTERS)):
        name = cfg.stage_name(stage)
        if name != "provided" and name not in reg:
            raise UserError(f"--{stage} {name!r}: choose one of {[*reg.names(), 'provided']}")


def check_ground_truth(cfg: ImagesConfig, items: list[Item]) -> None:
    """``oracle`` and ``provided`` stages read ground truth that only an RGB-D folder has: refuse a photo folder."""
    needs = [f"--{s} {cfg.stage_name(s)}" for s in STAGES if cfg.stage_name(s) in ("oracle", "provided")]
    if needs and not any(it.frames for it in items):
        raise UserError(
            f"{', '.join(needs)} read(s) ground truth from an RGB-D folder (color/, depth/, intrinsic.txt, "
            f"instance/; see spatialboost.datagen.rgbd), but --input {cfg.input} is a folder of plain photos; "
            "use the models (--depth depth-pro --detector owlv2 --segmenter sam2) for photos"
        )


def no_items_message(root: Path, skipped: list[dict[str, str]]) -> str:
    if not skipped:
        return (
            f"--input {root}: no files found (searched recursively; hidden files and folders are ignored); "
            f"put images there ({', '.join(IMAGE_SUFFIXES)})"
        )
    first = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
    return f"--input {root}: none of its {len(skipped)} file(s) is a usable image (first: {first})"


def run(args: argparse.Namespace) -> int:
    from spatialboost.datagen.commands_generate import check_out_dir
    from spatialboost.datagen.dataset import WriteSpec, parse_shard_spec, write_dataset
    from spatialboost.datagen.perception import load_vocabulary

    check_out_dir(args.out)
    fcfg = file_config(args)
    cfg = images_config(args, load_vocabulary(args.vocab), fcfg.lift)
    _check_names(cfg)
    shard = parse_shard_spec(args.shard)
    items, skipped = collect_items(args.input, args.multiview, ImageLimits())
    log.info("%d usable input(s), %d skipped", len(items), len(skipped))
    if not items:
        raise UserError(no_items_message(args.input, skipped))
    check_ground_truth(cfg, items)
    source = ImageSource(cfg, items, args.out / "cache", args.shard_size)
    spec = WriteSpec(args.out, len(items), args.seed, args.shard_size, fcfg.conversation)
    manifest = write_dataset(
        source, spec, shard, args.workers, progress=not args.no_progress, extra={"input_skipped": skipped}
    )
    c = manifest["counts"]
    log.info(
        "%s: %d/%d samples, %d skipped input file(s)",
        args.out,
        c["samples"],
        c["samples_planned"],
        len(skipped),
    )
    return 0

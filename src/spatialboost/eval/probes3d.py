"""The 3D probes (paper Table 3, Lexicon3D / Probe3D protocols) on frozen patch features of posed views.

All three read the cached features of a ``MultiViewDataset`` split (``eval.features``: patch tokens plus the
depth and class maps at the probe resolution S) and the views' cameras; frames and units follow
``datagen.scenes.geometry``; the helpers are in ``eval.geometry3d``.

- ``corr`` (Probe3D's multi-view correspondence, El Banani et al. 2024): for every pair of views of a test
  scene, mutual nearest neighbours of the valid patches' features (cosine); a match is correct when the
  ground-truth 3D points of the two patch centres lie within a threshold (metres). ``recall@Xm`` is the
  fraction of correct matches per pair, averaged over pairs (a pair without matches counts 0); the
  ``recall@Xm rot[a,b)`` rows bin the pairs by their relative rotation (degrees) at the middle threshold
  (bins without pairs are left out). The protocol records the matches per pair and the ``overlap``: the
  share of view-a patches with any view-b patch within the middle threshold (a property of the data and
  the patch grid: a matcher that matched every patch could not beat it).
- ``register`` (Lexicon3D's geometric understanding): the pair's matches lifted with depth, relative pose
  by Kabsch inside RANSAC (3-point samples from a seeded generator, refit on the inliers). ``rr`` is
  registration recall: the RMSE of view a's patch-centre points moved by the estimate vs the ground truth
  is <= ``rr_threshold``; ``rte`` (m) and ``rre`` (degrees) are the mean translation and rotation errors
  over all pairs (a pair with < 3 matches gets the identity).
- ``sem3d`` (Lexicon3D's 3D semantic understanding): each scene's point cloud is lifted from every view's
  depth (voxel-subsampled, at most ``max_points`` points, labels from the class maps); every point gets
  the mean of the patch features (bilinear on the patch grid) of the views that see it (projection +
  depth test, Lexicon3D's multi-view fusion); a linear head on points is trained on the train scenes and
  scored on the held-out test scenes: point accuracy ``acc`` and ``miou`` (classes present in prediction or
  target, as ``eval.metrics``).

Each probe also records, in its protocol (``per_unit``), its metrics per unit: per view pair (``corr``,
``register``; ``rmse_median`` excepted) or per test scene (``sem3d``, whose pooled-point numbers they
approximate). The report compares two encoders on the same units (mean difference +- its standard error,
the data's noise): ``corr`` has no seed noise at all, and the seed spread of the others misses the data's.

Thresholds default to our synthetic rooms (cameras 1.8-2.7 m from the objects, 64 px images, 8 px
patches: a patch spans about 0.3 m at 2.5 m); the paper's 0.05 m registration threshold is for ScanNet at
full resolution. Every threshold is a config field, recorded with the numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spatialboost.config import ConfigError
from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.datagen.scenes.geometry import (
    camera_to_world,
    project_points,
    unproject_depth,
    world_to_camera,
)
from spatialboost.eval.datasets.multiview import MultiViewDataset
from spatialboost.eval.features import FeatureSet
from spatialboost.eval.geometry3d import (
    alignment_rmse,
    mutual_nearest_neighbours,
    patch_points,
    probe_intrinsics,
    ransac_kabsch,
    relative_pose,
    rotation_angle_deg,
    voxel_keep,
)
from spatialboost.eval.metrics import confusion_matrix, segmentation_metrics_from_confusion
from spatialboost.eval.probes import ProbeResult, ProbeTrainConfig, fit_linear_classifier
from spatialboost.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Sem3DConfig(ProbeTrainConfig):
    epochs: int = 20
    lr: float = 1e-2
    batch_size: int = 1024  # points
    voxel: float = 0.1  # metres: one point per occupied voxel
    max_points: int = 4000  # per scene (a fixed per-scene subsample; the same for every encoder)
    visibility: float = 0.1  # a view sees a point when |depth - z| <= visibility * z


@dataclass
class Probe3DConfig:
    views: int = 4  # synthetic: views per scene; rgbd: evenly spaced frames per sequence (0 = all)
    num_train: int = 32  # synthetic scenes for sem3d's head
    num_test: int = 16  # synthetic scenes every 3D probe is scored on
    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.4])  # metres, corr recall
    rotation_bins: list[float] = field(default_factory=lambda: [0.0, 15.0, 30.0, 60.0, 180.0])  # degrees
    ransac_iterations: int = 1000
    inlier_threshold: float = 0.2  # metres
    rr_threshold: float = 0.2  # metres: registration recall's RMSE bound
    sem3d: Sem3DConfig = field(default_factory=Sem3DConfig)

    def validate(self) -> None:
        if self.views < 0 or self.views == 1 or self.num_train < 1 or self.num_test < 1:
            raise ConfigError("probes3d.views must be 0 or >= 2 and probes3d.num_train/num_test >= 1")
        if (
            not self.thresholds
            or min(self.thresholds) <= 0
            or self.inlier_threshold <= 0
            or self.rr_threshold <= 0
        ):
            raise ConfigError("probes3d thresholds must be > 0 metres")
        if sorted(self.rotation_bins) != list(self.rotation_bins) or len(self.rotation_bins) < 2:
            raise ConfigError("probes3d.rotation_bins must be >= 2 increasing angles in degrees")
        if self.ransac_iterations < 1:
            raise ConfigError("probes3d.ransac_iterations must be >= 1")


@dataclass
class SceneFeatures:
    """A multi-view split's cached features plus its cameras at the probe resolution."""

    fs: FeatureSet
    K: np.ndarray  # (n, 3, 3) at S x S
    poses: np.ndarray  # (n, 4, 4) cam_to_world
    scenes: list[list[int]]  # view indices per scene
    memo: dict = field(default_factory=dict)  # derived per-split data (sem3d's point sets), seed-independent

    @classmethod
    def build(cls, fs: FeatureSet, ds: MultiViewDataset) -> SceneFeatures:
        cams = [ds.camera(i) for i in range(len(ds))]
        K = np.stack([probe_intrinsics(c.K, c.height, c.width, fs.image_size) for c in cams])
        return cls(fs, K, np.stack([c.cam_to_world for c in cams]), ds.scenes())

    def pairs(self) -> list[tuple[int, int]]:
        return [p for views in self.scenes for p in combinations(views, 2)]

    def points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Camera-frame patch-centre points (N, 3) of view i and their validity (N,)."""
        return patch_points(np.asarray(self.fs.depth[i]), self.K[i], self.fs.grid)


Probe3D = Any  # (train: SceneFeatures | None, test: SceneFeatures, cfg: Probe3DConfig, seed) -> ProbeResult
PROBES_3D: Registry[Probe3D] = Registry("3D probe")
NEEDS_TRAIN = {"sem3d"}


def _pair_matches(sf: SceneFeatures, a: int, b: int):
    """Mutual-NN matches of views a, b: camera-frame points in a and b (M, 3) each, and the world points."""
    pa, va = sf.points(a)
    pb, vb = sf.points(b)
    ia, ib, _ = mutual_nearest_neighbours(np.asarray(sf.fs.patch[a], np.float32)[va],
                                          np.asarray(sf.fs.patch[b], np.float32)[vb])  # fmt: skip
    wa, wb = camera_to_world(pa[va], sf.poses[a]), camera_to_world(pb[vb], sf.poses[b])
    return pa[va][ia], pb[vb][ib], wa, wb, ia, ib


def _bin_label(lo: float, hi: float) -> str:
    return f"rot[{lo:g},{hi:g})"


@PROBES_3D.register("corr")
def correspondence_probe(train, test: SceneFeatures, cfg: Probe3DConfig, seed: int) -> ProbeResult:
    ths = list(cfg.thresholds)
    mid = len(ths) // 2
    per_pair, angles, overlaps, counts = [], [], [], []
    for a, b in test.pairs():
        _, _, wa, wb, ia, ib = _pair_matches(test, a, b)
        dist = np.linalg.norm(wa[ia] - wb[ib], axis=1)
        per_pair.append([float(np.mean(dist < t)) if len(dist) else 0.0 for t in ths])
        counts.append(len(dist))
        nearest = (
            np.linalg.norm(wa[:, None] - wb[None], axis=2).min(1) if len(wa) and len(wb) else np.zeros(0)
        )
        overlaps.append(float(np.mean(nearest < ths[mid])) if len(nearest) else 0.0)
        angles.append(rotation_angle_deg(relative_pose(test.poses[a], test.poses[b])))
    rec, angles = np.array(per_pair).reshape(-1, len(ths)), np.array(angles)
    units = {f"recall@{t:g}m": rec[:, k].tolist() for k, t in enumerate(ths)}
    bins = list(zip(cfg.rotation_bins[:-1], cfg.rotation_bins[1:], strict=True))
    for (
        lo,
        hi,
    ) in bins:  # bins without pairs are left out (the same for every encoder: the pairs are the data's)
        sel = (angles >= lo) & (angles < hi)
        if sel.any():
            units[f"recall@{ths[mid]:g}m {_bin_label(lo, hi)}"] = rec[sel, mid].tolist()
    metrics = {k: float(np.mean(v)) for k, v in units.items()}
    proto = _protocol("corr-mnn-cosine", test, seed, thresholds=ths, rotation_bins=list(cfg.rotation_bins),
                      pairs=len(angles), pairs_per_bin=[int(((angles >= lo) & (angles < hi)).sum()) for lo, hi in bins],
                      matches_per_pair=float(np.mean(counts)), overlap=float(np.mean(overlaps)),
                      overlap_threshold=ths[mid], per_unit={"unit": "view pair", "values": units})  # fmt: skip
    return ProbeResult(metrics=metrics, protocol=proto)


@PROBES_3D.register("register")
def registration_probe(train, test: SceneFeatures, cfg: Probe3DConfig, seed: int) -> ProbeResult:
    rmse, rte, rre = [], [], []
    for k, (a, b) in enumerate(test.pairs()):
        p, q, _, _, _, _ = _pair_matches(test, a, b)
        rng = np.random.default_rng([seed, k])
        T, _ = ransac_kabsch(p, q, cfg.ransac_iterations, cfg.inlier_threshold, rng)
        T_gt = relative_pose(test.poses[a], test.poses[b])
        pa, va = test.points(a)
        rmse.append(alignment_rmse(T, T_gt, pa[va]))
        rte.append(float(np.linalg.norm(T[:3, 3] - T_gt[:3, 3])))
        rre.append(rotation_angle_deg(T[:3, :3].T @ T_gt[:3, :3]))
    rmse_a = np.array(rmse)
    units = {
        f"rr@{cfg.rr_threshold:g}m": (rmse_a <= cfg.rr_threshold).astype(float).tolist(),
        "rte": rte,
        "rre": rre,
    }
    metrics = {**{k: float(np.mean(v)) for k, v in units.items()}, "rmse_median": float(np.median(rmse_a))}
    proto = _protocol("register-ransac-kabsch", test, seed, iterations=cfg.ransac_iterations,
                      inlier_threshold=cfg.inlier_threshold, rr_threshold=cfg.rr_threshold, pairs=len(rmse),
                      per_unit={"unit": "view pair", "values": units})  # fmt: skip
    return ProbeResult(metrics=metrics, protocol=proto)


# --- sem3d -----------------------------------------------------------------------------------------------


def scene_cloud(sf: SceneFeatures, views: list[int], cfg: Sem3DConfig, scene_seed: int):
    """World points (M, 3) and labels (M,) lifted from every view's depth and class map, voxel-subsampled."""
    pts, labels = [], []
    for v in views:
        depth, seg = np.asarray(sf.fs.depth[v]), np.asarray(sf.fs.seg[v])
        keep = (depth > 0) & (seg != SEG_IGNORE_INDEX)
        pts.append(camera_to_world(unproject_depth(depth, sf.K[v])[keep], sf.poses[v]))
        labels.append(seg[keep].astype(np.int64))
    points, labels_a = np.concatenate(pts), np.concatenate(labels)
    keep = voxel_keep(points, cfg.voxel)
    if len(keep) > cfg.max_points:
        keep = np.sort(np.random.default_rng(scene_seed).choice(keep, cfg.max_points, replace=False))
    return points[keep], labels_a[keep]


def fuse_features(
    sf: SceneFeatures, views: list[int], points: np.ndarray, cfg: Sem3DConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(M, C) mean patch feature over the views that see each point, and the mask of points seen at all."""
    size, (h, w) = sf.fs.image_size, sf.fs.grid
    total = np.zeros((len(points), sf.fs.patch.shape[-1]), np.float64)
    count = np.zeros(len(points))
    for v in views:
        uv, z = project_points(world_to_camera(points, sf.poses[v]), sf.K[v])
        px = np.floor(np.nan_to_num(uv, nan=-1.0)).astype(np.int64)
        inside = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < size) & (px[:, 1] >= 0) & (px[:, 1] < size)
        depth = np.asarray(sf.fs.depth[v])
        d = np.where(inside, depth[np.clip(px[:, 1], 0, size - 1), np.clip(px[:, 0], 0, size - 1)], 0.0)
        seen = inside & (d > 0) & (np.abs(d - z) <= cfg.visibility * z)
        if not seen.any():
            continue
        grid = torch.from_numpy(np.array(sf.fs.patch[v], np.float32).T.reshape(1, -1, h, w))  # (1, C, h, w)
        at = torch.from_numpy((2.0 * uv[seen] / size - 1.0).astype(np.float32)).view(1, 1, -1, 2)
        feats = F.grid_sample(grid, at, mode="bilinear", align_corners=False)[0, :, 0].T  # (m, C)
        total[seen] += feats.numpy()
        count[seen] += 1
    return (total / np.maximum(count, 1)[:, None]).astype(np.float32), count > 0


def point_set(
    sf: SceneFeatures, cfg: Sem3DConfig, scene_offset: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused point features (P, C), labels (P,) and scene index (P,) of every scene of a split (memoised)."""
    key = ("sem3d", cfg.voxel, cfg.max_points, cfg.visibility, scene_offset)
    if key not in sf.memo:
        sf.memo[key] = _point_set(sf, cfg, scene_offset)
    return sf.memo[key]


def _point_set(
    sf: SceneFeatures, cfg: Sem3DConfig, scene_offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, ks = [], [], []
    for k, views in enumerate(sf.scenes):
        points, labels = scene_cloud(sf, views, cfg, scene_offset + k)
        feats, seen = fuse_features(sf, views, points, cfg)
        xs.append(feats[seen])
        ys.append(labels[seen])
        ks.append(np.full(int(seen.sum()), k))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ks)


@PROBES_3D.register("sem3d")
def sem3d_probe(train: SceneFeatures, test: SceneFeatures, cfg: Probe3DConfig, seed: int) -> ProbeResult:
    scfg = cfg.sem3d
    x_tr, y_tr, _ = point_set(train, scfg)
    x_te, y_te, scene = point_set(test, scfg, scene_offset=len(train.scenes))
    num_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    head, history = fit_linear_classifier(x_tr, y_tr, num_classes, scfg, seed)
    with torch.inference_mode():
        pred = head(torch.from_numpy(x_te)).argmax(1).numpy()
    seg = segmentation_metrics_from_confusion(confusion_matrix(pred, y_te, num_classes, SEG_IGNORE_INDEX))
    metrics = {"acc": seg["pixel_acc"], "miou": seg["miou"]}
    per_scene = {"acc": [], "miou": []}
    for k in range(len(test.scenes)):
        m = segmentation_metrics_from_confusion(
            confusion_matrix(pred[scene == k], y_te[scene == k], num_classes)
        )
        per_scene["acc"].append(m["pixel_acc"])
        per_scene["miou"].append(m["miou"])
    proto = _protocol("sem3d-linear-points", test, seed, num_classes=num_classes, train_points=len(y_tr),
                      test_points=len(y_te), final_train_loss=history[-1],
                      per_unit={"unit": "test scene", "values": per_scene},
                      **{k: v for k, v in vars(scfg).items()})  # fmt: skip
    return ProbeResult(metrics=metrics, protocol=proto, head=head)


def _protocol(head: str, sf: SceneFeatures, seed: int, **extra: Any) -> dict[str, Any]:
    return {"head": head, "seed": seed, "image_size": sf.fs.image_size, "grid": list(sf.fs.grid),
            "scenes": len(sf.scenes), "views": len(sf.fs), **extra}  # fmt: skip


def run_probe_3d(
    name: str, train: SceneFeatures | None, test: SceneFeatures, cfg: Probe3DConfig, seed: int
) -> ProbeResult:
    if name in NEEDS_TRAIN and train is None:
        raise ValueError(f"3D probe {name} needs a train split")
    return PROBES_3D.get(name)(train, test, cfg, seed)

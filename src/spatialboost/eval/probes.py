"""Probes: light heads trained on cached frozen features, chosen by name from ``PROBES``.

Each probe is ``(train: FeatureSet, test: FeatureSet, cfg, seed) -> ProbeResult``: it fits a head on the
train split and scores the test split. Deterministic given ``seed`` (zero-initialised heads, batch order
from a seeded ``torch.Generator``; no global RNG). ``@register_probe(name, Config)`` registers a probe with its
config class; ``ProbeConfigs`` (a probe job's ``probes`` section) is derived from them at the end of the module,
one field per 2D ``ProbeSpec`` in spec order, named ``ProbeSpec.config_field`` (``probes.cls_linear.epochs``).

- ``depth``: per-patch linear head on patch tokens (+ CLS), ``bins`` (softmax over K depth-bin centres,
  linear in [0, max_depth], SILog loss) or ``log-regression`` (log-depth, MSE on valid pixels); the per-patch
  outputs are upsampled bilinearly to pixels before the softmax/loss. Metrics are per-image and averaged.
- ``seg``: per-patch linear classifier on patch tokens, logits upsampled bilinearly, cross-entropy with the
  ignore index; mIoU/pixel accuracy from the test-set confusion matrix.
- ``cls-linear``: linear classifier on CLS (optionally + mean patch token), cross-entropy.
- ``cls-knn``: DINO's weighted kNN: cosine similarity, k nearest, votes weighted by exp(sim / T).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spatialboost.config import ConfigError
from spatialboost.constants import SEG_IGNORE_INDEX
from spatialboost.eval.features import FeatureSet
from spatialboost.eval.heads import DenseLinearHead, LinearHead, feature_stats, silog_loss
from spatialboost.eval.metrics import (
    confusion_matrix,
    depth_metrics,
    segmentation_metrics_from_confusion,
    top1_accuracy,
)
from spatialboost.eval.specs import SPECS, probe_spec
from spatialboost.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class ProbeTrainConfig:
    epochs: int = 30
    lr: float = 1e-2
    batch_size: int = 8
    weight_decay: float = 1e-4
    train_upsample: int = (
        4  # dense heads: loss at this x the patch grid (nearest-sampled targets); 0 = full S
    )

    def validate(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ConfigError("probe epochs, batch_size and lr must be > 0")


@dataclass
class DepthProbeConfig(ProbeTrainConfig):
    mode: Literal["bins", "log-regression"] = "log-regression"  # bins: DINOv2's classification-regression
    bins: int = 128
    use_cls: bool = True
    max_depth: float = 0.0  # metres; 0 = 1.05 x the 99.9th percentile of the train depths
    silog_lambda: float = 0.5  # bins loss: 0 = RMSE of log depth, 1 = fully scale-invariant
    preview: int = 4  # test predictions kept for the depth grid plot
    protocol: Literal["auto", "probe", "nyu-eigen"] = "auto"  # scoring (eval.depth_protocol); auto: by data


@dataclass
class SegProbeConfig(ProbeTrainConfig):
    use_cls: bool = False


@dataclass
class ClsLinearConfig(ProbeTrainConfig):
    epochs: int = 100
    lr: float = 1e-2
    batch_size: int = 256
    use_avgpool: bool = True  # CLS + mean patch token (DINOv2 linear protocol)


@dataclass
class KnnConfig:
    k: int = 20
    temperature: float = 0.07


# ``ProbeConfigs``, the section of every 2D probe's config, is derived from the registered probes at the end


@dataclass
class ProbeResult:
    metrics: dict[str, float]
    protocol: dict[str, Any]
    preview: np.ndarray | None = None  # (k, S, S) depth predictions of the first test images
    head: nn.Module | None = None  # the trained head (not serialised)
    # metric -> one value per test image, where ``metrics`` is their mean (the depth probe): the scene
    # sampling term of a paired comparison (``noise.per_item_se``)
    per_image: dict[str, list[float]] | None = None


Probe = Callable[[FeatureSet, FeatureSet, Any, int], ProbeResult]


@dataclass(frozen=True)
class ProbeEntry:
    fn: Probe
    config: type  # the dataclass ``fn`` takes as ``cfg``: its ProbeConfigs field (``ProbeSpec.config_field``)


PROBES: Registry[ProbeEntry] = Registry("probe")


def register_probe(name: str, config: type) -> Callable[[Probe], Probe]:
    """``@register_probe("cls-linear", ClsLinearConfig)``: a 2D probe (its ``ProbeSpec`` in ``eval.specs`` under
    the same name) and the config class it takes."""

    def deco(fn: Probe) -> Probe:
        PROBES.add(name, ProbeEntry(fn, config))
        return fn

    return deco


def run_probe(name: str, train: FeatureSet, test: FeatureSet, cfgs: ProbeConfigs, seed: int) -> ProbeResult:
    return PROBES.get(name).fn(train, test, getattr(cfgs, probe_spec(name).config_field), seed)


# --- shared training loop -------------------------------------------------------------------------------


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[np.ndarray]:
    order = torch.randperm(n, generator=gen).numpy()
    for start in range(0, n, batch_size):
        yield np.sort(order[start : start + batch_size])  # sorted reads are kinder to memmaps


def fit(
    head: nn.Module, n: int, step_loss: Callable[[np.ndarray], torch.Tensor], cfg: ProbeTrainConfig, seed: int
) -> list[float]:
    """AdamW with cosine decay over ``cfg.epochs`` passes; returns the mean loss of each epoch."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    history = []
    head.train()
    for _ in range(cfg.epochs):
        losses = []
        for idx in _batches(n, cfg.batch_size, gen):
            loss = step_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
    head.eval()
    return history


def _t(a: np.ndarray, idx: np.ndarray | slice) -> torch.Tensor:
    return torch.from_numpy(np.array(a[idx], dtype=np.float32))


def train_side(size: int, grid: tuple[int, int], cfg: ProbeTrainConfig) -> int:
    """Side of the maps the dense losses are computed on (evaluation is always at the full ``size``)."""
    return size if cfg.train_upsample <= 0 else min(size, cfg.train_upsample * max(grid))


def _sample_targets(a: np.ndarray, idx: np.ndarray, side: int, dtype) -> torch.Tensor:
    """(B, S, S) targets of ``idx`` nearest-sampled at the centres of a side x side grid."""
    block = np.asarray(a[idx])
    size = block.shape[-1]
    if side != size:
        pick = np.minimum(((np.arange(side) + 0.5) * size / side).astype(int), size - 1)
        block = block[:, pick][:, :, pick]
    return torch.from_numpy(np.ascontiguousarray(block).astype(dtype))


def _dense_head(train: FeatureSet, out_dim: int, use_cls: bool) -> DenseLinearHead:
    """A zero-initialised dense head standardised by the train split's patch (+ CLS) channel statistics."""
    mean, std = feature_stats(train.patch)
    if use_cls:
        cls_mean, cls_std = feature_stats(train.cls)
        mean, std = torch.cat([mean, cls_mean]), torch.cat([std, cls_std])
    return DenseLinearHead(mean, std, out_dim=out_dim, use_cls=use_cls)


def _protocol(
    name: str, cfg: Any, train: FeatureSet, seed: int, history: list[float] | None
) -> dict[str, Any]:
    proto = {"head": name, "seed": seed, "image_size": train.image_size, "grid": list(train.grid)}
    proto.update({k: v for k, v in vars(cfg).items()})
    if history:
        proto["final_train_loss"] = history[-1]
    return proto


# --- depth -----------------------------------------------------------------------------------------------


def _depth_bins(train: FeatureSet, cfg: DepthProbeConfig) -> torch.Tensor:
    max_depth = cfg.max_depth
    if max_depth <= 0:
        valid = np.asarray(train.depth)[np.asarray(train.depth) > 0]
        max_depth = 1.05 * float(np.percentile(valid, 99.9)) if valid.size else 10.0
    edges = torch.linspace(0.0, max_depth, cfg.bins + 1)
    return 0.5 * (edges[1:] + edges[:-1])  # (K,) metres


def _depth_from_out(out: torch.Tensor, mode: str, centers: torch.Tensor) -> torch.Tensor:
    """(B, K, S, S) head output -> (B, S, S) depth in metres."""
    if mode == "bins":
        return torch.einsum("bkhw,k->bhw", out.softmax(dim=1), centers)
    return out[:, 0].exp()


@register_probe("depth", DepthProbeConfig)
def depth_probe(train: FeatureSet, test: FeatureSet, cfg: DepthProbeConfig, seed: int) -> ProbeResult:
    """Scored at the probe resolution against the cached S x S targets (the ``probe`` protocol)."""
    if train.depth is None or test.depth is None:
        raise ValueError("depth probe needs depth targets in both splits")
    head, centers, history = fit_depth_head(train, cfg, seed)
    per_image: list[dict[str, float]] = []
    previews = []
    for start, pred in predict_depth(head, test, cfg, centers):
        target = np.asarray(test.depth[start : start + len(pred)])
        per_image += [depth_metrics(p, t) for p, t in zip(pred, target, strict=True)]
        if sum(len(p) for p in previews) < cfg.preview:
            previews.append(pred[: cfg.preview])
    metrics, columns = image_means(per_image)
    preview = np.concatenate(previews)[: cfg.preview] if previews else None
    return ProbeResult(metrics=metrics, protocol=depth_protocol_fields(cfg, train, seed, history, centers, "probe"),
                       preview=preview, head=head, per_image=columns)  # fmt: skip


def image_means(per_image: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(metric -> mean over the images, NaN left out; metric -> the per-image values): a per-image metric's
    score and what ``noise.per_item_se`` needs."""
    columns = {k: [m[k] for m in per_image] for k in per_image[0]}
    return {k: float(np.nanmean(v)) for k, v in columns.items()}, columns


def depth_protocol_fields(
    cfg: DepthProbeConfig,
    train: FeatureSet,
    seed: int,
    history: list[float],
    centers: torch.Tensor,
    scoring: str,
) -> dict[str, Any]:
    proto = _protocol("depth-linear", cfg, train, seed, history)
    proto["max_depth"] = float(centers[-1] + (centers[1] - centers[0]) / 2) if len(centers) > 1 else None
    proto["protocol"] = scoring  # the resolved one (cfg.protocol may say "auto")
    return proto


def fit_depth_head(
    train: FeatureSet, cfg: DepthProbeConfig, seed: int
) -> tuple[nn.Module, torch.Tensor, list[float]]:
    """The trained dense depth head, its bin centres (metres) and the per-epoch train losses."""
    size, grid = train.image_size, train.grid
    centers = _depth_bins(train, cfg)
    head = _dense_head(train, cfg.bins if cfg.mode == "bins" else 1, cfg.use_cls)
    valid = np.asarray(train.depth)[np.asarray(train.depth) > 0]
    if cfg.mode == "log-regression":  # start at the mean train log-depth, not at 1 m
        head.head.linear.bias.data.fill_(float(np.log(valid).mean()) if valid.size else 0.0)
    else:  # start at the train depth histogram over the bins
        width = float(centers[1] - centers[0]) if len(centers) > 1 else 1.0
        which = np.clip((valid / width).astype(np.int64), 0, cfg.bins - 1)
        head.head.linear.bias.data.copy_(_log_prior(which, cfg.bins))

    side = train_side(size, grid, cfg)

    def step_loss(idx: np.ndarray) -> torch.Tensor:
        out = head(_t(train.patch, idx), _t(train.cls, idx), grid, side)
        target = _sample_targets(train.depth, idx, side, np.float32)
        valid = target > 0
        if cfg.mode == "bins":
            return silog_loss(_depth_from_out(out, "bins", centers), target, valid, cfg.silog_lambda)
        return F.mse_loss(out[:, 0][valid], target[valid].log()) if valid.any() else out.sum() * 0.0

    history = fit(head, len(train), step_loss, cfg, seed)
    return head, centers, history


def predict_depth(
    head: nn.Module, test: FeatureSet, cfg: DepthProbeConfig, centers: torch.Tensor
) -> Iterator[tuple[int, np.ndarray]]:
    """(start index, (B, S, S) depth in metres) over the test features, batch by batch."""
    with torch.inference_mode():
        for start in range(0, len(test), cfg.batch_size):
            sl = slice(start, start + cfg.batch_size)
            out = head(_t(test.patch, sl), _t(test.cls, sl), test.grid, test.image_size)
            yield start, _depth_from_out(out, cfg.mode, centers).numpy()


def _log_prior(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Log class frequencies (ignore index dropped, +1 smoothing): the bias a zero-weight head starts from."""
    labels = labels[(labels >= 0) & (labels < num_classes)]
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)[:num_classes] + 1.0
    return torch.from_numpy(np.log(counts / counts.sum())).float()


# --- segmentation ----------------------------------------------------------------------------------------


def _num_seg_classes(*sets: FeatureSet) -> int:
    top = 0
    for fs in sets:
        seg = np.asarray(fs.seg)
        valid = seg[seg != SEG_IGNORE_INDEX]
        top = max(top, int(valid.max()) + 1 if valid.size else 1)
    return top


@register_probe("seg", SegProbeConfig)
def seg_probe(train: FeatureSet, test: FeatureSet, cfg: SegProbeConfig, seed: int) -> ProbeResult:
    if train.seg is None or test.seg is None:
        raise ValueError("seg probe needs segmentation targets in both splits")
    size, grid = train.image_size, train.grid
    num_classes = _num_seg_classes(train, test)
    head = _dense_head(train, num_classes, cfg.use_cls)
    head.head.linear.bias.data.copy_(_log_prior(np.asarray(train.seg).reshape(-1), num_classes))

    side = train_side(size, grid, cfg)

    def step_loss(idx: np.ndarray) -> torch.Tensor:
        logits = head(_t(train.patch, idx), _t(train.cls, idx), grid, side)
        target = _sample_targets(train.seg, idx, side, np.int64)
        if not (target != SEG_IGNORE_INDEX).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=SEG_IGNORE_INDEX)

    history = fit(head, len(train), step_loss, cfg, seed)
    conf = np.zeros((num_classes, num_classes + 1), dtype=np.int64)  # last column: predictions out of range
    with torch.inference_mode():
        for start in range(0, len(test), cfg.batch_size):
            sl = slice(start, start + cfg.batch_size)
            pred = head(_t(test.patch, sl), _t(test.cls, sl), grid, size).argmax(1).numpy()
            conf += confusion_matrix(pred, np.asarray(test.seg[sl]), num_classes, SEG_IGNORE_INDEX)
    proto = _protocol("seg-linear", cfg, train, seed, history)
    proto["num_classes"] = num_classes
    return ProbeResult(metrics=segmentation_metrics_from_confusion(conf), protocol=proto, head=head)


# --- classification --------------------------------------------------------------------------------------


def _cls_features(fs: FeatureSet, use_avgpool: bool) -> np.ndarray:
    """(n, C) CLS, or (n, 2C) CLS + mean patch token; rows with a missing label are kept (masked later)."""
    cls = np.asarray(fs.cls, dtype=np.float32)
    if not use_avgpool:
        return cls
    means = np.stack([np.asarray(fs.patch[i], dtype=np.float32).mean(0) for i in range(len(fs))])
    return np.concatenate([cls, means], axis=1)


def _labelled(fs: FeatureSet, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if fs.label is None:
        raise ValueError("classification probes need image labels")
    labels = np.asarray(fs.label, dtype=np.int64)
    keep = labels >= 0
    return feats[keep], labels[keep]


def fit_linear_classifier(
    x: np.ndarray, y: np.ndarray, num_classes: int, cfg: ProbeTrainConfig, seed: int
) -> tuple[LinearHead, list[float]]:
    """A linear head on standardised features, bias at the classes' log prior, trained with cross-entropy
    (the classification probe here, the 3D semantic probe on lifted points)."""
    head = LinearHead(*feature_stats(x), out_dim=num_classes)
    head.linear.bias.data.copy_(_log_prior(y, num_classes))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    history = fit(head, len(xt), lambda idx: F.cross_entropy(head(xt[idx]), yt[idx]), cfg, seed)
    return head, history


@register_probe("cls-linear", ClsLinearConfig)
def cls_linear_probe(train: FeatureSet, test: FeatureSet, cfg: ClsLinearConfig, seed: int) -> ProbeResult:
    x_tr, y_tr = _labelled(train, _cls_features(train, cfg.use_avgpool))
    x_te, y_te = _labelled(test, _cls_features(test, cfg.use_avgpool))
    num_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    head, history = fit_linear_classifier(x_tr, y_tr, num_classes, cfg, seed)
    with torch.inference_mode():
        scores = head(torch.from_numpy(x_te)).numpy()
    proto = _protocol("cls-linear", cfg, train, seed, history)
    proto["num_classes"] = num_classes
    return ProbeResult(metrics=top1_accuracy(scores, y_te), protocol=proto, head=head)


def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
) -> torch.Tensor:
    """DINO's weighted kNN: (M, C) scores for test rows from cosine similarity to the train rows."""
    train_x = F.normalize(train_x, dim=1)
    test_x = F.normalize(test_x, dim=1)
    k = min(k, train_x.shape[0])
    scores = []
    for chunk in test_x.split(1024):
        sim, idx = (chunk @ train_x.T).topk(k, dim=1)  # (m, k)
        votes = torch.zeros(chunk.shape[0], num_classes)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


@register_probe("cls-knn", KnnConfig)
def cls_knn_probe(train: FeatureSet, test: FeatureSet, cfg: KnnConfig, seed: int) -> ProbeResult:
    x_tr, y_tr = _labelled(train, np.asarray(train.cls, dtype=np.float32))
    x_te, y_te = _labelled(test, np.asarray(test.cls, dtype=np.float32))
    num_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    scores = knn_predict(torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), num_classes, cfg.k,
                         cfg.temperature)  # fmt: skip
    proto = {"head": "cls-knn", "seed": seed, "image_size": train.image_size, "k": cfg.k,
             "temperature": cfg.temperature, "features": "cls"}  # fmt: skip
    return ProbeResult(metrics=top1_accuracy(scores.numpy(), y_te), protocol=proto)


# --- the probes' configs ---------------------------------------------------------------------------------


def probe_configs_class() -> type:
    """``ProbeConfigs``: one field per 2D probe of ``SPECS``, in spec order, named by its ``config_field`` and
    holding the config class the probe registered with (``probes.depth``, ``probes.seg``, ``probes.cls_linear``,
    ``probes.cls_knn``)."""
    entries = {s.config_field: PROBES.get(s.name).config for s in SPECS.values() if s.bench == "2d"}
    cls = make_dataclass("ProbeConfigs", [(f, c, field(default_factory=c)) for f, c in entries.items()])
    cls.__module__, cls.__doc__ = __name__, "Every 2D probe's config, by its ``ProbeSpec.config_field``."
    return cls


ProbeConfigs = probe_configs_class()

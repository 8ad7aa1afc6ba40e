"""``spatialboost demo --out DIR``: the whole pipeline on the embedded synthetic default.

Steps (each a small function of a ``DemoState``): generate a synthetic dataset (some samples multi-view),
validate it, write the HTML viewer; pre-train the tiny base ViT on a 2D-only objective (the DINOv2
stand-in); train the three SpatialBoost stages with the tiny LLM and a tokenizer trained on the corpus;
export the boosted encoder; probe base vs boosted frozen features. ``--quick`` shrinks every step so the
whole loop runs in well under a minute (the end-to-end test).

The training config is the package's ``resources/demo.yaml`` (a copy of ``configs/demo.yaml``, shipped in
the installed package) plus ``demo_train_overrides`` (paths and step counts). Nothing is optional: a step
that cannot import fails the demo loudly.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatialboost.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class DemoState:
    out: Path
    scenes: int
    workers: int = 1
    quick: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_dir(self) -> Path:
        return self.out / "data"


def step_generate(state: DemoState) -> None:
    from spatialboost.datagen.dataset import WriteSpec, write_dataset
    from spatialboost.datagen.sources import GenerateConfig, SyntheticSource

    cfg = GenerateConfig(scenes=state.scenes, seed=0, multiview_share=0.25, max_views=3, shard_size=16)
    spec = WriteSpec(state.dataset_dir, cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
    state.results["manifest"] = write_dataset(SyntheticSource(cfg), spec, workers=state.workers)


def step_validate(state: DemoState) -> None:
    from spatialboost.datagen.validate import validate_dataset

    errors, counts = validate_dataset(state.dataset_dir)
    if errors:
        raise UserError(f"demo dataset failed validation: {errors[0]} (+{len(errors) - 1} more)")
    state.results["validated"] = counts


def step_view(state: DemoState) -> None:
    from spatialboost.datagen.viewer import write_report

    state.results["report"] = state.out / "report.html"
    write_report(state.dataset_dir, state.results["report"], max_samples=16)


def step_pretrain(state: DemoState) -> None:
    from spatialboost.train.pretrain import PretrainConfig, pretrain_encoder

    size = dict(scenes=64, epochs=1) if state.quick else dict(scenes=2048, epochs=4)
    cfg = PretrainConfig(encoder="tiny-vit", cache_dir=state.out / "cache" / "pretrain", **size)
    state.results["pretrain"] = pretrain_encoder(cfg)


def demo_train_overrides(state: DemoState) -> list[str]:
    """This demo's paths (and the quick sizes) on top of the packaged demo.yaml."""
    stage_sizes = (
        dict(align=(3, 4), instruct=(3, 4), encoder=(3, 4))
        if state.quick
        else dict(align=(40, 8), instruct=(60, 8), encoder=(60, 8))
    )
    overrides = [
        f"run_dir={state.out / 'train'}",
        f"data.datasets=[{state.dataset_dir}]",
        f"model.encoder={state.results['pretrain'].path}",
    ]
    for stage, (steps, batch) in stage_sizes.items():
        overrides += [f"stages.{stage}.max_steps={steps}", f"stages.{stage}.batch_size={batch}"]
    if state.quick:
        overrides += ["checkpoint.every=3", "log.tensorboard=false"]
    return overrides


def demo_train_config(state: DemoState):
    from spatialboost.config import load_config, packaged_config
    from spatialboost.train.config import TrainConfig

    return load_config(TrainConfig, packaged_config("demo"), demo_train_overrides(state))


def step_train(state: DemoState) -> None:
    from spatialboost.train.pipeline import run_training

    state.results["train"] = run_training(demo_train_config(state))


def step_export(state: DemoState) -> None:
    from spatialboost.models.export import export_run

    state.results["export"] = export_run(state.out / "train", state.out / "boosted-encoder")


def step_probe(state: DemoState) -> None:
    from spatialboost.eval.runner import DataConfig, ProbeConfig, probe_before_after

    data = DataConfig(num_train=8, num_test=4) if state.quick else DataConfig(num_train=64, num_test=32)
    cfg = ProbeConfig(seeds=1 if state.quick else 3, data=data)
    base, boosted = state.results["pretrain"].path, state.results["export"]
    _, table = probe_before_after(base, boosted, cfg, out=state.out / "probes", plots=not state.quick)
    state.results["probe_table"] = table


STEPS = [
    ("generate", step_generate),
    ("validate", step_validate),
    ("view", step_view),
    ("pretrain", step_pretrain),
    ("train", step_train),
    ("export", step_export),
    ("probe", step_probe),
]


def summary(state: DemoState) -> str:
    c = state.results["manifest"]["counts"]
    lines = [
        f"SpatialBoost demo -> {state.out}",
        f"  dataset: {c['samples']} samples ({c['views']} views), {c['turns']} turns, per level {c['turns_per_level']}",
        f"  validated: {state.results['validated']['samples']} samples, every answer recomputed from ground truth",
        f"  viewer: {state.results['report']}",
    ]
    lines += training_summary(state)
    lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in state.timings.items()))
    return "\n".join(lines)


def training_summary(state: DemoState) -> list[str]:
    lines = []
    pre = state.results.get("pretrain")
    if pre is not None:
        lines.append(
            f"  pre-trained base ViT (2D: class + colour labels): loss {pre.loss_start:.3f} -> {pre.loss_end:.3f}, "
            f"held-out label accuracy {pre.val_accuracy:.3f} (majority {pre.val_baseline:.3f})"
            + (" [cached]" if pre.cached else "")
        )
    for r in state.results.get("train", []):
        groups = ", ".join(f"{g} {c['params']:,}" for g, c in r.trainable.items())
        lines.append(
            f"  stage {r.stage:<8}: {r.steps} steps, loss {r.loss_start:.3f} -> {r.loss_end:.3f}, "
            f"{r.tokens_per_s:,.0f} tokens/s, trains {groups}"
        )
    if "export" in state.results:
        lines.append(f"  boosted encoder: {state.results['export']} (spatialboost.load_encoder)")
    if "probe_table" in state.results:
        lines.append("  frozen-feature probes, base -> boosted:")
        lines += ["    " + row for row in state.results["probe_table"].splitlines()]
        lines.append(
            "    (one training run: ± is over probe-head seeds only, not training seeds; tiny models on tiny"
            " data. `spatialboost replicate` measures training-seed variance; the reference study is"
            " docs/results.md in the source repository)"
        )
    return lines


def run_demo(out: Path, scenes: int = 64, workers: int = 1, quick: bool = False) -> DemoState:
    state = DemoState(out=out, scenes=scenes, workers=workers, quick=quick)
    for name, step in STEPS:
        t0 = time.perf_counter()
        log.info("demo step: %s", name)
        step(state)
        state.timings[name] = time.perf_counter() - t0
    return state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    parser.add_argument("--scenes", type=int, default=64, help="synthetic scenes to generate")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for generation")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes everywhere (an end-to-end check, < 1 min)"
    )


def run(args: argparse.Namespace) -> int:
    if args.scenes < 1:
        raise UserError(f"--scenes must be >= 1, got {args.scenes}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a directory; choose a directory path")
    scenes = min(args.scenes, 16) if args.quick else args.scenes
    state = run_demo(args.out, scenes, args.workers, quick=args.quick)
    print(summary(state))
    return 0

"""The demo study: the whole pipeline on the embedded synthetic default (its command: ``spatialboost demo --out
DIR``, ``spatialboost.cli.demo``).

Steps (each a small function of a ``DemoState``): generate a synthetic dataset (some samples multi-view),
validate it, write the HTML viewer; pre-train the tiny base ViT on a 2D-only objective (the DINOv2
stand-in); train the three SpatialBoost stages with the tiny LLM and a tokenizer trained on the corpus;
probe base vs boosted frozen features; export the boosted encoder as a transformers-native folder whose
model card carries that probe table. ``--quick`` shrinks every step so the
whole loop runs in well under a minute (the end-to-end test).

The training config is the package's ``resources/demo.yaml`` (a copy of ``configs/demo.yaml``, shipped in
the installed package) plus ``demo_train_overrides`` (paths and step counts). Nothing is optional: a step
that cannot import fails the demo loudly.
"""

from __future__ import annotations

import json
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

    @property
    def reading_dir(self) -> Path:
        return self.out / "reading"

    @property
    def heldout_dir(self) -> Path:
        return self.out / "heldout"


MAIN_EXTRA = {"choice_closer_point": 2, "choice_closer_object": 1}  # balanced A/B turns in every conversation
READING_EXTRA = {"choice_closer_point": 4}  # the reading warm-up's conversations: terse A/B point questions


def step_generate(state: DemoState) -> None:
    """The main conversations, the reading warm-up's (64 px, single view) and held-out ones (image gain)."""
    from spatialboost.datagen.questions.conversations import ConversationConfig
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig

    main = ConversationConfig(extra_turns=dict(MAIN_EXTRA))
    reading = ConversationConfig(
        levels=["pixel"], turns={"pixel": 0}, caption=False, extra_turns=dict(READING_EXTRA)
    )
    small = SyntheticConfig(image_size=64)
    n_reading, n_heldout = (32, 8) if state.quick else (384, 32)
    state.results["manifest"] = _generate(state, state.dataset_dir, state.scenes, 0, 0.25, main)
    _generate(state, state.reading_dir, n_reading, 1, 0.0, reading, small)
    _generate(state, state.heldout_dir, n_heldout, 2, 0.25, main, small)


def _generate(
    state: DemoState, out: Path, scenes: int, seed: int, multiview: float, conv, synthetic=None
) -> dict:
    from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig
    from spatialboost.datagen.sources import GenerateConfig, SyntheticSource

    cfg = GenerateConfig(scenes=scenes, seed=seed, multiview_share=multiview, max_views=3, shard_size=16,
                         conversation=conv, synthetic=synthetic or SyntheticConfig())  # fmt: skip
    spec = WriteSpec(out, cfg.scenes, cfg.seed, cfg.shard_size, cfg.conversation)
    return write_dataset(SyntheticSource(cfg), spec, workers=state.workers)


def step_validate(state: DemoState) -> None:
    from spatialboost.datagen.dataset.validate import validate_dataset

    errors, counts = validate_dataset(state.dataset_dir)
    if errors:
        raise UserError(f"demo dataset failed validation: {errors[0]} (+{len(errors) - 1} more)")
    state.results["validated"] = counts


def step_view(state: DemoState) -> None:
    from spatialboost.datagen.dataset.viewer import write_report

    state.results["report"] = state.out / "report.html"
    write_report(state.dataset_dir, state.results["report"], max_samples=16)


def step_pretrain(state: DemoState) -> None:
    from spatialboost.train.pretrain import PretrainConfig, pretrain_encoder

    size = dict(scenes=64, epochs=1) if state.quick else dict(scenes=2048, epochs=4)
    cfg = PretrainConfig(encoder="tiny-vit", cache_dir=state.out / "cache" / "pretrain", **size)
    state.results["pretrain"] = pretrain_encoder(cfg)


def demo_train_overrides(state: DemoState) -> list[str]:
    """This demo's paths (and the quick sizes) on top of the packaged demo.yaml."""
    overrides = [
        f"run_dir={state.out / 'train'}",
        f"data.datasets=[{state.dataset_dir}]",
        f"stages.align.data.datasets=[{state.reading_dir}]",
        f"image_gain.datasets=[{state.heldout_dir}]",
        f"model.encoder={state.results['pretrain'].path}",
    ]
    if state.quick:
        for stage in ("align", "instruct", "encoder"):
            overrides += [f"stages.{stage}.max_steps=3", f"stages.{stage}.batch_size=4"]
        overrides += ["image_gain.max_samples=8"]
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
    """The transformers-native folder, its model card carrying the probe table of step ``probe``."""
    from spatialboost.models.export import export_run

    probes = state.out / "probes" if "probe_table" in state.results else None
    state.results["export"] = export_run(
        state.out / "train", state.out / "boosted-encoder", probe_results=probes
    )


def step_probe(state: DemoState) -> None:
    from spatialboost.eval.runner import ProbeConfig, ProbeDataConfig, probe_before_after

    data = (
        ProbeDataConfig(num_train=8, num_test=4)
        if state.quick
        else ProbeDataConfig(num_train=64, num_test=32)
    )
    cfg = ProbeConfig(seeds=1 if state.quick else 3, data=data)
    base, boosted = state.results["pretrain"].path, state.out / "train" / "encoder"
    _, table = probe_before_after(base, boosted, cfg, out=state.out / "probes", plots=not state.quick)
    state.results["probe_table"] = table


STEPS = [
    ("generate", step_generate),
    ("validate", step_validate),
    ("view", step_view),
    ("pretrain", step_pretrain),
    ("train", step_train),
    ("probe", step_probe),
    ("export", step_export),
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
    lines += image_gain_lines(state.out / "train")
    if "export" in state.results:
        path = state.results["export"]
        lines.append(f"  boosted encoder: {path} (model card: {path / 'README.md'})")
        lines.append(
            f'    AutoModel.from_pretrained("{path}", trust_remote_code=True), or spatialboost.load_encoder'
        )
    if "probe_table" in state.results:
        lines.append("  frozen-feature probes, base -> boosted:")
        lines += ["    " + row for row in state.results["probe_table"].splitlines()]
        lines.append(
            "    (one training run: ± is over probe-head seeds only, not training seeds; tiny models on tiny"
            " data. `spatialboost replicate` measures training-seed variance; the reference study is"
            " docs/results.md in the source repository)"
        )
    return lines


def image_gain_lines(run_dir: Path) -> list[str]:
    """Does the VLM read the image? The held-out image gain after each stage, with its noise verdict."""
    from spatialboost.train.image_gain import describe
    from spatialboost.train.loop import GAIN_FILE
    from spatialboost.train.stages import STAGES, stage_dir

    lines = []
    for stage in STAGES:
        path = stage_dir(run_dir, stage) / GAIN_FILE
        if path.is_file():
            lines.append(
                f"  after stage {STAGES[stage].index} ({stage}): " + describe(json.loads(path.read_text()))
            )
    if lines:
        lines.insert(
            0, "  held-out image gain (other scenes' images vs the right ones; a gain counts beyond 2 s.e.):"
        )
    return lines


DEMO_KIND = "demo"  # the OutputDir kind of a demo --out directory


def run_demo(
    out: Path, scenes: int = 64, workers: int = 1, quick: bool = False, overwrite: bool = False
) -> DemoState:
    from spatialboost.io import OutputDir

    OutputDir.claim(out, DEMO_KIND, overwrite=overwrite, legacy=_legacy_demo).finish(prune=False)
    state = DemoState(out=out, scenes=scenes, workers=workers, quick=quick)
    for name, step in STEPS:
        t0 = time.perf_counter()
        log.info("demo step: %s", name)
        step(state)
        state.timings[name] = time.perf_counter() - t0
    return state


def _legacy_demo(path: Path) -> list[str] | None:
    """A demo directory an earlier version wrote (no marker)."""
    return [] if (path / "data" / "manifest.json").is_file() and (path / "report.html").is_file() else None

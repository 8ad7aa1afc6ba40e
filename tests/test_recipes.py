"""One recipe: `spatialboost train` with no --config, `generate synthetic --recipe spatialboost` and the study's
default arm (preset dinov2-s, arm sb-dual-choices-points-5x) are the same training run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from spatialboost.cli import generate as generate_cli
from spatialboost.cli.train import DEFAULT_RECIPE
from spatialboost.config import ConfigError, config_path, load_config, to_dict
from spatialboost.datagen.recipes import DATA_RECIPES, generate_config, write_recipe_data
from spatialboost.errors import UserError
from spatialboost.studies.replicate import data as study_data
from spatialboost.studies.replicate import runner
from spatialboost.studies.replicate.study import (
    ARMS,
    DATA,
    DEFAULT_ARM,
    DEFAULT_PRESET,
    PAPER_ARM,
    PRESETS,
    SIZES,
    make_config,
)
from spatialboost.train.config import TrainConfig


@pytest.fixture
def study(tmp_path, monkeypatch):
    """The default study preset's configs, with its datasets stubbed (paths only, nothing generated)."""
    return _study(DEFAULT_PRESET, tmp_path, monkeypatch)


def _study(preset: str, tmp_path, monkeypatch):
    size, recipe = PRESETS[preset]
    st = runner.Study(make_config(str(tmp_path / "study"), size=size, recipe=recipe))
    runner.prepare_base(st)
    monkeypatch.setattr(runner.Study, "data", lambda self, name: Path(f"data/{name}"))
    monkeypatch.setattr(runner.Study, "heldout", property(lambda self: Path("data/heldout")))
    monkeypatch.setattr(study_data, "ensure_reading_dataset", lambda *a, **k: Path("data/reading"))
    return st


def _stage(cfg: TrainConfig, name: str) -> dict:
    keep = (
        "max_steps",
        "batch_size",
        "grad_accum",
        "lr",
        "lr_gates",
        "warmup_ratio",
        "train_projector",
        "cls_anchor",
    )
    return {k: v for k, v in to_dict(getattr(cfg.stages, name)).items() if k in keep}


def _data(cfg: TrainConfig, stage: str) -> dict:
    d = to_dict(cfg.stage_data(stage))
    return {
        k: d[k]
        for k in (
            "image_size",
            "max_length",
            "packing",
            "refs",
            "image_tokens",
            "cache_features",
            "swap_images",
        )
    }


# packaged recipe -> the study preset and arm it is held to
PACKAGED_RECIPES = {
    DEFAULT_RECIPE: (DEFAULT_PRESET, DEFAULT_ARM),
    "spatialboost-clip-b16": ("clip-b16", PAPER_ARM),
}


@pytest.mark.parametrize("name", list(PACKAGED_RECIPES))
def test_each_packaged_recipe_is_the_study_arm_it_names(name, tmp_path, monkeypatch):
    """``spatialboost train`` with no --config runs the study's default arm; the CLIP recipe is the arm CLIP's
    own val split picked."""
    preset, arm_name = PACKAGED_RECIPES[name]
    study = _study(preset, tmp_path, monkeypatch)
    packaged = load_config(TrainConfig, config_path(name))
    arm = ARMS.get(arm_name)
    shared = runner.shared_config(study, 0)
    stage3 = runner.train_config(study, arm, 0, Path("shared"))
    for stage, ours in (("align", shared), ("instruct", shared), ("encoder", stage3)):
        assert _stage(packaged, stage) == _stage(ours, stage), stage
        assert _data(packaged, stage) == _data(ours, stage), stage
    assert packaged.stages.align.train_llm == shared.stages.align.train_llm
    for key in ("encoder", "llm", "llm_options"):
        assert to_dict(packaged.model)[key] == to_dict(stage3.model)[key], key
    assert to_dict(packaged.model.boost) == to_dict(stage3.model.boost)
    assert packaged.image_gain.max_samples == stage3.image_gain.max_samples
    # each stage reads the recipe's dataset of the same role
    assert packaged.stage_data("align").datasets == ["data/reading"]
    assert packaged.stage_data("instruct").datasets == ["data/main"]
    assert packaged.stage_data("encoder").datasets == ["data/choices"]
    assert packaged.image_gain.datasets == ["data/heldout"]


def test_recipe_data_is_the_study_data(study):
    """The recipe's four datasets generate exactly what the study trains the default arm on."""
    recipe, sizes, r = DATA_RECIPES.get("spatialboost"), study.cfg.sizes, study.cfg.recipe
    expect = {
        "main": (study_data.conversation_config(DATA["main"], dict(r.extra_turns)), sizes.scenes, 0,
                 sizes.multiview_share),
        "reading": (study_data.reading_conversation(dict(r.reading_turns)), sizes.scenes, 0, 0.0),
        "choices": (study_data.conversation_config(DATA[ARMS.get(DEFAULT_ARM).data]),
                    study_data.variant_scenes(DATA[ARMS.get(DEFAULT_ARM).data], sizes), 0, 0.0),
        "heldout": (study_data.conversation_config(DATA["main"], dict(r.extra_turns)), sizes.heldout_scenes, 2,
                    sizes.multiview_share),
    }  # fmt: skip
    assert [d.name for d in recipe.datasets] == list(expect)
    for ds in recipe.datasets:
        cfg = generate_config(recipe, ds)
        conv, scenes, seed, share = expect[ds.name]
        assert to_dict(cfg.conversation) == to_dict(conv), ds.name
        assert (cfg.scenes, cfg.seed, cfg.multiview_share) == (scenes, seed, share), ds.name
        assert cfg.synthetic.image_size == sizes.image_size


def test_generate_recipe_writes_every_dataset_the_recipe_reads(tmp_path):
    manifests = write_recipe_data("spatialboost", tmp_path, image_size=32, progress=False,
                                  sizes={"main": 2, "reading": 2, "choices": 2, "heldout": 1})  # fmt: skip
    assert sorted(manifests) == ["choices", "heldout", "main", "reading"]
    for name, m in manifests.items():
        assert m["complete"] and (tmp_path / name / "manifest.json").is_file(), name
    choices = (tmp_path / "choices" / "shards").glob("*.jsonl")
    text = "".join(p.read_text() for p in choices)
    assert "Answer with A or B" in text and "How far" not in text  # A/B point turns only


def test_generate_recipe_cli_sizes_and_refusals(tmp_path):
    assert generate_cli.recipe_sizes("spatialboost", 100) == {"main": 100, "reading": 100, "choices": 400,
                                                               "heldout": 10}  # fmt: skip
    assert generate_cli.recipe_sizes("spatialboost", None) is None
    parser = __import__("argparse").ArgumentParser()
    generate_cli.add_arguments(parser)
    args = parser.parse_args(["synthetic", "--recipe", "spatialboost", "--out", str(tmp_path), "--seed", "3"])
    with pytest.raises(UserError, match="--seed"):
        generate_cli.run(args)


def test_train_without_config_reads_the_recipe_data_and_warns_about_half_overrides(
    tmp_path, capsys, monkeypatch
):
    from spatialboost.cli import main
    from spatialboost.cli.train import unchanged_stage_datasets

    monkeypatch.chdir(tmp_path)
    assert main(["train", f"run_dir={tmp_path / 'run'}"]) == 2  # no data/ here: the recipe's datasets named
    assert "data/reading" in capsys.readouterr().err
    cfg = load_config(TrainConfig, config_path(DEFAULT_RECIPE), ["data.datasets=[mine]"])
    lines = unchanged_stage_datasets(cfg, ["data.datasets=[mine]"])
    assert (
        len(lines) == 2 and "stage align still reads ['data/reading']" in lines[0] and "encoder" in lines[1]
    )
    both = [
        "data.datasets=[mine]",
        "stages.align.data.datasets=[mine]",
        "stages.encoder.data.datasets=[mine]",
    ]
    assert unchanged_stage_datasets(load_config(TrainConfig, config_path(DEFAULT_RECIPE), both), both) == []


@pytest.mark.parametrize("preset, micro", [("dinov2-s-smollm2", 2), (DEFAULT_PRESET, 8)])
def test_a_pretrained_lm_study_steps_on_the_same_global_batch_in_micro_batches(
    preset, micro, tmp_path, monkeypatch
):
    """SmolLM2's LM stages cut each step of 8 samples into 4 micro-batches of 2 (one batch of 8 peaked at 18.6 GB
    in stage 3); the tiny-LM study keeps one batch of 8, so its runs and records are unchanged."""
    study = _study(preset, tmp_path, monkeypatch)
    arm = ARMS.get(DEFAULT_ARM)
    shared, stage3 = runner.shared_config(study, 0), runner.train_config(study, arm, 0, Path("shared"))
    for stage in (shared.stages.align, shared.stages.instruct, stage3.stages.encoder):
        assert stage.batch_size == micro
        assert stage.batch_size * stage.grad_accum == study.cfg.sizes.batch_size == 8
    recorded = runner.recipe_dict(study, arm)
    assert recorded["batch_size"] == 8
    assert recorded.get("grad_accum", 1) == 8 // micro


def test_study_sizes_refuse_a_batch_the_micro_batches_do_not_divide():
    with pytest.raises(ConfigError, match="multiple of grad_accum"):
        replace(SIZES["real-lm"], grad_accum=3).validate()


def test_a_pretrained_lm_study_keeps_the_lm_frozen_in_stage_1_and_its_own_tokenizer(tmp_path, monkeypatch):
    """Preset dinov2-s-smollm2: stage 1 trains the projector only (the paper's), no tiny-LM shape options, the
    LM's own tokenizer in stage 3; the tiny-LM preset trains the LM in stage 1 and reads the corpus tokenizer."""
    monkeypatch.setattr(runner.Study, "data", lambda self, name: Path(f"data/{name}"))
    monkeypatch.setattr(runner.Study, "heldout", property(lambda self: Path("data/heldout")))
    monkeypatch.setattr(study_data, "ensure_reading_dataset", lambda *a, **k: Path("data/reading"))
    arm = ARMS.get(DEFAULT_ARM)
    for preset, tiny in (("dinov2-s-smollm2", False), (DEFAULT_PRESET, True)):
        size, recipe = PRESETS[preset]
        st = runner.Study(make_config(str(tmp_path / preset), size=size, recipe=recipe))
        runner.prepare_base(st)
        shared, stage3 = runner.shared_config(st, 0), runner.train_config(st, arm, 0, Path("shared"))
        assert shared.stages.align.train_llm is tiny, preset
        assert (stage3.model.tokenizer == "shared/tokenizer") is tiny, preset
        assert any(v is not None for v in to_dict(stage3.model)["llm_options"].values()) is tiny, preset
        assert shared.checkpoint.every == st.cfg.sizes.checkpoint_every

"""The training config is typed all the way down and checked whole before any stage trains."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import yaml

from spatialboost.config import ConfigError, load_config, save_config, to_dict
from spatialboost.errors import UserError
from spatialboost.models.config import BoostConfig, LLMOptions, VLMConfig
from spatialboost.train.config import TrainConfig
from spatialboost.train.distributed import DistEnv
from spatialboost.train.pipeline import check_config
from train_fixtures import write_records


@pytest.mark.parametrize(
    "override, match",
    [
        (
            "model.boost.gate=chanel",
            r"model\.boost\.gate: 'chanel' is not one of \['channel', 'head', 'scalar'\]",
        ),
        ("model.boost.mode=duel", r"model\.boost\.mode: .*'dual', 'lora', 'full'"),
        ("model.boost.nope=1", r"unknown config key.*model\.boost\.nope"),
        ("model.boost.lora_rank=0", "lora_rank"),
        ("model.llm_options.width=3", r"unknown config key.*model\.llm_options\.width"),
        ("model.llm_options.hidden_size=-4", r"model\.llm_options\.hidden_size must be >= 1"),
        ("model.attn_implementation=flash", "attn_implementation"),
        ("crash_after_steps=1", "unknown config key"),
        ("fail_on_nonfinite=false", "unknown config key"),
    ],
)
def test_bad_values_fail_when_the_config_loads(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, overrides=[override])


def test_llm_options_shape_only_tiny_llms(caplog):
    cfg = load_config(TrainConfig, overrides=["model.llm_options.hidden_size=96"])
    assert cfg.model.llm_options.for_llm(cfg.model.llm) == {"hidden_size": 96}
    # the demo config's tiny shape does not stop a pre-trained LM: it is ignored, with a warning
    with caplog.at_level(logging.WARNING):
        cfg = load_config(TrainConfig, overrides=["model.llm=smollm2-135m", "model.llm_options.hidden_size=96",
                                                  "model.llm_options.num_layers=4"])  # fmt: skip
    assert cfg.model.llm_options.for_llm("smollm2-135m") == {"num_layers": 4}
    assert "hidden_size shape only tiny-* LLMs" in caplog.text


def test_code_may_pass_plain_dicts_and_they_are_checked():
    m = VLMConfig(boost={"gate": "head", "gate_init": 1.0}, llm_options={"hidden_size": 32})
    assert m.boost == BoostConfig(gate="head", gate_init=1.0)
    assert m.llm_options == LLMOptions(hidden_size=32)
    with pytest.raises(ConfigError, match="model.boost.gate"):
        VLMConfig(boost={"gate": "chanel"})


def test_the_old_dual_channel_key_still_loads_with_a_warning(tmp_path):
    """``model.dual_channel`` was renamed ``model.boost`` (it holds every mode: dual, lora, full)."""
    with pytest.warns(FutureWarning, match="model.dual_channel is deprecated: use model.boost"):
        cfg = load_config(
            TrainConfig, overrides=["model.dual_channel.gate=head", "model.dual_channel.mode=lora"]
        )
    assert cfg.model.boost == BoostConfig(gate="head", mode="lora")
    yaml_file = tmp_path / "old.yaml"
    yaml_file.write_text("model:\n  boost: {gate: scalar, gate_init: 1.0}\n  dual_channel: {gate: head}\n")
    with pytest.warns(FutureWarning):
        cfg = load_config(TrainConfig, yaml_file)
    assert (cfg.model.boost.gate, cfg.model.boost.gate_init) == ("head", 1.0)  # merged, the old key's on top
    with pytest.warns(FutureWarning, match="VLMConfig.dual_channel is deprecated"):
        assert cfg.model.dual_channel is cfg.model.boost
    with pytest.raises(ConfigError, match=r"model\.boost\.gate: 'chanel'"), pytest.warns(FutureWarning):
        load_config(TrainConfig, overrides=["model.dual_channel.gate=chanel"])


def test_saved_config_has_no_test_hooks(tmp_path):
    save_config(TrainConfig(), tmp_path / "c.yaml")
    text = (tmp_path / "c.yaml").read_text()
    assert "crash_after_steps" not in text and "fail_on_nonfinite" not in text
    assert yaml.safe_load(text)["model"]["boost"]["gate"] == "channel"


def test_a_run_saved_before_typing_still_resumes(tmp_path):
    """A config.yaml written by the untyped version (dict sections, test hooks) compares by what it computes."""
    data = write_records(tmp_path / "ds", [{}])
    cfg = load_config(TrainConfig, overrides=[f"run_dir={tmp_path / 'run'}", f"data.datasets=[{data}]",
                                              "model.boost={gate: channel, gate_init: 0.0}"])  # fmt: skip
    old = to_dict(cfg)
    old["model"]["dual_channel"] = old["model"].pop("boost")  # the key's name before it was model.boost
    old["model"]["dual_channel"] = {"gate": "channel", "gate_init": 0.0}
    old["model"]["llm_options"] = {}
    old.update(crash_after_steps=0, fail_on_nonfinite=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(old))
    env = DistEnv()
    check_config(cfg, env)  # no "different config" refusal
    old["model"]["dual_channel"]["gate"] = "head"
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(Exception, match="model.boost.gate"):
        check_config(cfg, env)


def test_bad_boost_layers_stop_before_stage_one_trains(tmp_path, capsys):
    from spatialboost.cli import main
    from train_fixtures import TRAIN_BARE, make_dataset, tiny_overrides

    data = make_dataset(tmp_path / "data", n=8)
    argv = [*TRAIN_BARE, *tiny_overrides(tmp_path / "run", data, steps=2), "model.boost.layers=[7]"]
    assert main(argv) == 2
    assert "layers [7] out of range" in capsys.readouterr().err
    assert not list((tmp_path / "run").glob("stage1-align/checkpoints/*"))


# --- a stage's data is a partial section merged over the top-level data -------------------------------------

READING = [
    "data.refs=[point, region]",
    "data.image_tokens=false",
    "data.max_length=2048",
    "data.cache_features=true",
]


def test_a_stage_data_inherits_the_keys_it_does_not_name():
    cfg = load_config(TrainConfig, overrides=[*READING, "data.datasets=[main]", "stages.encoder.data.datasets=[ab]",
                                              "stages.align.data={datasets: [reading], max_length: 1024}"])  # fmt: skip
    assert cfg.stage_data("encoder") == replace(cfg.data, datasets=["ab"])
    assert cfg.stage_data("align") == replace(cfg.data, datasets=["reading"], max_length=1024)
    assert cfg.stage_data("instruct") == cfg.data
    assert cfg.stage_data("encoder").refs is not cfg.data.refs  # a copy: changing one leaves the other


@pytest.mark.parametrize(
    "override, match",
    [
        ("stages.encoder.data.nope=1", r"unknown config key.*stages\.encoder\.data\.nope"),
        ("stages.encoder.data.max_length=long", r"stages\.encoder\.data\.max_length: expected an integer"),
        ("stages.align.data.refs=[]", r"stages\.align\.data, merged over data: .*needs data\.refs"),
    ],
)
def test_a_bad_stage_data_key_fails_when_the_config_loads(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, overrides=[*READING, override])


def test_the_demo_stages_read_the_reading_options_they_no_longer_restate():
    from spatialboost.config import packaged_config

    cfg = load_config(TrainConfig, packaged_config("demo"))
    assert "refs" not in cfg.stages.align.data  # inherited, not restated
    align = cfg.stage_data("align")
    assert (align.refs, align.image_tokens, align.cache_features) == (["point", "region"], False, True)
    assert align.max_length == 1024 and cfg.data.max_length == 2048


def test_the_run_folder_holds_the_resolved_config(tmp_path):
    main, ab = write_records(tmp_path / "main", [{}]), write_records(tmp_path / "ab", [{}])
    cfg = load_config(TrainConfig, overrides=[f"run_dir={tmp_path / 'run'}", *READING, f"data.datasets=[{main}]",
                                              f"stages.encoder.data.datasets=[{ab}]"])  # fmt: skip
    check_config(cfg, DistEnv())
    resolved = yaml.safe_load((tmp_path / "run" / "config.resolved.yaml").read_text())
    assert resolved["stages"]["encoder"]["data"] == {**to_dict(cfg.data), "datasets": [str(ab)]}
    assert resolved["stages"]["align"]["data"] == resolved["stages"]["instruct"]["data"] == to_dict(cfg.data)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["stages"]["encoder"]["data"] == {
        "datasets": [str(ab)]
    }
    again = load_config(TrainConfig, tmp_path / "run" / "config.resolved.yaml")  # loads as it is
    assert all(again.stage_data(s) == cfg.stage_data(s) for s in ("align", "instruct", "encoder"))


def test_a_run_whose_stage_restated_its_data_resumes_with_the_partial_form(tmp_path):
    """Runs saved when a stage's data replaced the top-level one (every key restated) compare by what they read."""
    main, ab = write_records(tmp_path / "main", [{}]), write_records(tmp_path / "ab", [{}])
    common = [f"run_dir={tmp_path / 'run'}", *READING, f"data.datasets=[{main}]"]
    cfg = load_config(TrainConfig, overrides=[*common, f"stages.encoder.data.datasets=[{ab}]"])
    old = to_dict(cfg)
    old["stages"]["encoder"]["data"] = {**to_dict(cfg.data), "datasets": [str(ab)]}  # the whole section
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(old))
    check_config(cfg, DistEnv())  # no "different config" refusal
    check_config(load_config(TrainConfig, overrides=[*common, f"stages.encoder.data={{datasets: [{ab}], "
                                                     "num_workers: 2}"]), DistEnv())  # fmt: skip
    changed = load_config(
        TrainConfig, overrides=[*common, f"stages.encoder.data={{datasets: [{ab}], refs: [point]}}"]
    )
    with pytest.raises(UserError, match=r"stages\.encoder\.data\.refs"):
        check_config(changed, DistEnv())


def test_train_stage_reads_the_merged_data(tmp_path, monkeypatch):
    from spatialboost.train import loop
    from spatialboost.train.pipeline import prepare_tokenizer
    from train_fixtures import make_dataset, tiny_overrides

    main, reading = make_dataset(tmp_path / "main", n=4), make_dataset(tmp_path / "reading", n=4, seed=1)
    cfg = load_config(TrainConfig, overrides=[*tiny_overrides(tmp_path / "run", main), "data.refs=[point]",
                                              "data.max_length=300", f"stages.align.data.datasets=[{reading}]"])  # fmt: skip
    tokenizer = prepare_tokenizer(cfg, DistEnv())
    seen = []

    class Planned(Exception):
        pass

    def plan_data(dcfg, *args):
        seen.append(dcfg)
        raise Planned

    monkeypatch.setattr(loop, "plan_data", plan_data)
    with pytest.raises(Planned):
        loop.train_stage(cfg, "align", DistEnv(), tokenizer)
    assert seen == [replace(cfg.data, datasets=[str(reading)])]

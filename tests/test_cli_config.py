"""Every command builds its config one way (``cli.common.load_command_config``: YAML file -> defaults -> flags ->
``key.sub=value`` overrides -> validation); each flag lands on the config field it always set."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from spatialboost.cli import COMMANDS, build_parser
from spatialboost.cli.common import load_command_config
from spatialboost.config import ConfigError
from spatialboost.eval.runner import ProbeConfig

CLI = Path(__file__).resolve().parents[1] / "src" / "spatialboost" / "cli"


def config_of(argv: list[str]):
    """The config the command of ``argv`` would run with (built, never run)."""
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    if argv[:2] == ["generate", "images"]:
        return importlib.import_module("spatialboost.cli.generate_images").build_config(args)[1]
    return module.build_config(args)


def field(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


# argv -> {dotted config field: value}; one representative case per flag
CASES = [
    (
        ["generate", "synthetic", "--out", "X", "--scenes", "7", "--views", "2", "--seed", "3",
         "--multiview-share", "0.25", "--max-views", "3", "--image-size", "48", "--shard-size", "4"],
        {"scenes": 7, "views": 2, "seed": 3, "multiview_share": 0.25, "max_views": 3,
         "synthetic.image_size": 48, "shard_size": 4},
    ),
    (
        ["generate", "images", "--input", "in", "--out", "X", "--depth", "oracle", "--detector", "oracle",
         "--segmenter", "provided", "--model-path", "depth=/ckpt/d", "--device", "cuda", "--dtype", "bfloat16",
         "--batch-size", "2", "--threshold", "0.3", "--multiview", "--seed", "5", "--oracle-depth-noise", "0.1",
         "--oracle-erode", "2", "lift.floor_ransac_iters=7"],
        {"input": str(Path("in").resolve()), "depth": "oracle", "detector": "oracle", "segmenter": "provided",
         "model_paths": {"depth": "/ckpt/d"}, "device": "cuda", "dtype": "bfloat16", "batch_size": 2,
         "threshold": 0.3, "multiview": True, "oracle": {"depth_noise": 0.1, "erode_px": 2, "seed": 5},
         "lift.floor_ransac_iters": 7},
    ),
    (
        ["train", "--config", "demo", "stages.encoder.max_steps=50", "run_dir=/tmp/r"],
        {"stages.encoder.max_steps": 50, "run_dir": Path("/tmp/r"), "stages.instruct.lr": 1e-3},
    ),
    (
        ["probe", "--encoder", "tiny-vit", "--baseline", "b", "--seeds", "2", "--out", "o", "--task", "depth",
         "--data", "nyu:/d", "--image-size", "64", "--layers", "last4", "--rollouts", "3"],
        {"encoder": "tiny-vit", "baseline": "b", "seeds": 2, "out": "o", "tasks": ["depth"], "data.spec": "nyu:/d",
         "features.image_size": 64, "features.layers": "last4", "robot.rollouts": 3},
    ),
    (
        ["replicate", "--out", "o", "--seeds", "2", "--size", "small", "--recipe", "paper-text", "--no-search",
         "--cache", "c", "--bench-tasks", "all3d", "--arms", "base, order-reverse"],
        {"out": "o", "seeds": 2, "quick": False, "search": False, "recipe_name": "paper-text",
         "cache_dir": "c", "bench_tasks": ["all3d"], "arms": ["base", "order-reverse"],
         "sizes.scenes": 160, "recipe.refs": ()},
    ),
    (["replicate", "--out", "o", "--quick", "--size", "small"], {"quick": True, "sizes.scenes": 8, "arms": []}),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(argv[:2]) for argv, _ in CASES])
def test_flags_set_their_config_fields(argv, expected):
    cfg = config_of(argv)
    assert {key: field(cfg, key) for key in expected} == expected


def test_replicate_presets_are_copies():
    from spatialboost.studies.replicate.study import RECIPES, SIZES

    cfg = config_of(["replicate", "--size", "small"])
    assert cfg.sizes == SIZES["small"] and cfg.sizes is not SIZES["small"]
    # the default preset is the real encoder's recipe; the tiny-ViT study stays one flag away
    assert cfg.recipe == RECIPES["dinov2-s"] and cfg.recipe is not RECIPES["dinov2-s"]
    tiny = config_of(["replicate", "--preset", "tiny-vit"])
    assert tiny.sizes == SIZES["full"] and tiny.recipe == RECIPES["reads-image"] and tiny.recipe.encoder == ""
    assert config_of(["replicate"]).sizes == SIZES["real"]
    quick = config_of(["replicate", "--quick"])  # the smoke test needs no wheel: a random tiny DINOv2
    assert quick.recipe.encoder == "tiny-dinov2" and RECIPES["dinov2-s"].encoder == "dinov2-small-offline"


@pytest.mark.parametrize(
    ("argv", "key", "value"),
    [
        (["generate", "synthetic", "--out", "X", "--seed", "3", "seed=4"], "seed", 4),
        (["probe", "--encoder", "e", "--seeds", "3", "seeds=5"], "seeds", 5),
        (["probe", "--encoder", "e", "--data", "nyu:/d", "data.spec=synthetic"], "data.spec", "synthetic"),
    ],
)
def test_key_value_overrides_win_over_flags(argv, key, value):
    assert field(config_of(argv), key) == value


def test_flags_win_over_the_file_and_absent_flags_leave_it(tmp_path):
    path = tmp_path / "probe.yaml"
    path.write_text("encoder: from-file\nseeds: 5\nfeatures: {layers: last4}\n")
    cfg = config_of(["probe", "--config", str(path), "--seeds", "2"])
    assert (cfg.encoder, cfg.seeds, cfg.features.layers) == ("from-file", 2, "last4")
    assert load_command_config(ProbeConfig, path, [], {"seeds": None}).seeds == 5


def test_a_flag_value_is_type_checked_and_validated():
    with pytest.raises(ConfigError, match="seeds"):
        load_command_config(ProbeConfig, None, [], {"seeds": "three"})
    with pytest.raises(ConfigError, match="seeds must be > 0"):
        load_command_config(ProbeConfig, None, [], {"seeds": 0})


def test_no_command_builds_its_config_another_way():
    """Only ``common.load_command_config`` calls ``load_config``; no command ``setattr``s a flag onto a config."""
    bad = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if name == "setattr" or (name == "load_config" and path.name != "common.py"):
                    bad.append(f"{path.name}:{node.lineno}: {name}")
    assert not bad, bad
    assert {"generate", "train", "probe", "replicate"} <= set(COMMANDS)


def test_a_study_config_round_trips_through_its_json_with_the_types_of_each_tuple_position():
    """``study-config.json`` keeps the recipe's turn counts as [name, count] pairs; reading it back must give
    (str, int) pairs (a fixed-length tuple type is coerced position by position, not by its first type)."""
    import json

    from spatialboost.config import from_dict, to_dict
    from spatialboost.studies.replicate.study import StudyConfig, make_config

    cfg = make_config("out", size="real", recipe="dinov2-s")
    back = from_dict(StudyConfig, json.loads(json.dumps(to_dict(cfg))))
    assert back.recipe.extra_turns == cfg.recipe.extra_turns
    assert all(isinstance(k, int) for _, k in back.recipe.extra_turns)
    bad = to_dict(cfg)
    bad["recipe"]["extra_turns"] = [["choice_closer_point", 2, 3]]
    with pytest.raises(ConfigError, match=r"recipe.extra_turns\[0\]: expected 2 items"):
        from_dict(StudyConfig, bad)

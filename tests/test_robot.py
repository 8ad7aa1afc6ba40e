"""The robot probe: behaviour cloning pieces without Meta-World, and a smoke test of the real thing (a
handful of rendered steps) that is skipped only where ``metaworld`` is not installed."""

from __future__ import annotations

import builtins
import json
from importlib.util import find_spec

import numpy as np
import pytest

from spatialboost.cli import main
from spatialboost.config import ConfigError
from spatialboost.errors import UserError
from spatialboost.eval import robot
from spatialboost.eval.robot import (
    Demos,
    RobotConfig,
    cached_features,
    eval_epochs,
    policy_inputs,
    train_and_evaluate,
)
from spatialboost.models.encoders import create_encoder


def test_eval_epochs_and_config_validation():
    assert eval_epochs(RobotConfig(epochs=60, evals=3)) == [20, 40, 60]
    assert eval_epochs(RobotConfig(epochs=5, evals=1)) == [5]
    with pytest.raises(ConfigError):
        RobotConfig(epochs=2, evals=3).validate()
    with pytest.raises(ConfigError):
        RobotConfig(tasks=[]).validate()
    assert RobotConfig().horizon_of("reach-v3") == 100 and RobotConfig(horizon=7).horizon_of("reach-v3") == 7


def test_policy_inputs_blind_and_with_image():
    feats, prop = np.ones((2, 3), np.float32), np.zeros((2, 4), np.float32)
    assert policy_inputs(feats, prop, True).shape == (2, 7)
    assert policy_inputs(feats, prop, False).shape == (2, 3)
    assert policy_inputs(None, prop, False).shape == (2, 4)  # blind: proprioception is all there is


def test_bc_fits_expert_actions_and_takes_the_best_evaluation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(6, 4))).astype(np.float32)
    cfg = RobotConfig(epochs=15, evals=3, batch_size=32, lr=3e-3, hidden=64)
    scores = iter([0.2, 0.7, 0.5])
    res = train_and_evaluate(x, y, cfg, 0, lambda policy: next(scores))
    assert res["epochs"] == [5, 10, 15] and res["successes"] == [0.2, 0.7, 0.5]
    assert res["losses"][-1] < 0.2 * res["losses"][0]
    again = train_and_evaluate(x, y, cfg, 0, lambda policy: 0.0)
    assert again["losses"] == res["losses"]  # seeded init and batch order


def test_demo_features_are_cached_by_weights(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    demos = Demos(frames, np.zeros((5, 4), np.float32), np.zeros((5, 4), np.float32), np.zeros(5, np.int64),
                  np.zeros(1, np.int64), key="k")  # fmt: skip
    a, b = create_encoder("tiny-vit", seed=0), create_encoder("tiny-vit", seed=1)
    fa = cached_features(a, demos, "last", tmp_path)
    assert fa.shape == (5, 128) and len(list((tmp_path / "robot").glob("features-*.npy"))) == 1
    np.testing.assert_array_equal(cached_features(a, demos, "last", tmp_path), fa)
    assert not np.array_equal(cached_features(b, demos, "last", tmp_path), fa)
    assert len(list((tmp_path / "robot").glob("features-*.npy"))) == 2


def test_missing_metaworld_is_a_clear_user_error(monkeypatch):
    real_import = builtins.__import__

    def no_metaworld(name, *args, **kwargs):
        if name.startswith("metaworld"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_metaworld)
    with pytest.raises(UserError, match=r"spatialboost\[robot\]"):
        robot.import_metaworld()


SMOKE = ["robot.tasks=[reach-v3]", "robot.demos=1", "robot.horizon=6", "robot.require_success=false",
         "robot.epochs=2", "robot.evals=1", "robot.image_size=32"]  # fmt: skip


# find_spec, not importorskip: importing metaworld imports mujoco, which picks its GL back-end (EGL, set by
# eval.robot) at import time
needs_metaworld = pytest.mark.skipif(find_spec("metaworld") is None, reason="metaworld is not installed")


@pytest.mark.slow
@needs_metaworld
def test_robot_probe_smoke_with_meta_world(tmp_path):
    out = tmp_path / "out"
    args = ["probe", "--encoder", "tiny-vit", "--task", "robot", "--seeds", "1", "--rollouts", "1", "--out", str(out),
            "features.cache_dir=" + str(tmp_path / "cache"), *SMOKE]  # fmt: skip
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    probes = {r["probe"] for r in res["runs"]}
    assert probes == {"robot", "robot/reach-v3"}
    for r in res["runs"]:
        assert 0.0 <= r["metrics"]["success"] <= 1.0 and r["protocol"]["rollouts"] == 1
    info = res["benches"]["robot"]
    assert info["tasks"]["reach-v3"]["frames"] == 6 and info["rollout_steps"] >= 1 and info["blind"]
    assert "## Robot probe" in (out / "results.md").read_text()
    (demo_file,) = (tmp_path / "cache" / "robot").glob("demos-reach-v3-*.npz")
    with np.load(demo_file) as z:
        assert z["frames"].shape == (6, 32, 32, 3) and z["frames"].std() > 5  # a rendered scene, not a blank
        cfg = RobotConfig(tasks=["reach-v3"], demos=1, horizon=6, require_success=False)
        again = robot.load_or_collect_demos(
            "reach-v3", cfg, 32, tmp_path / "cache"
        )  # a cache hit: no Meta-World
        assert again.seconds == 0.0 and np.array_equal(again.frames, z["frames"])


@pytest.mark.slow
@needs_metaworld
def test_meta_world_rendering_leaves_the_scene_renderer_working():
    """MuJoCo makes its own EGL context current; the synthetic engine's renderer must still draw afterwards."""
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig, generate_scene

    before = generate_scene(3, SyntheticConfig(image_size=40)).views[0].rgb
    env = robot.MetaWorldTask("reach-v3", "corner", 32)
    env.reset(0)
    assert env.render().std() > 5
    after = generate_scene(3, SyntheticConfig(image_size=40)).views[0].rgb
    np.testing.assert_array_equal(after, before)
    assert generate_scene(3, SyntheticConfig(image_size=44)).views[0].rgb.std() > 5  # a new framebuffer
    assert env.render().std() > 5  # and MuJoCo still renders too
    env.close()

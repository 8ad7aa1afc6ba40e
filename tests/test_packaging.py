"""What the commands read at run time ships inside the package; an installed (non-editable) copy uses it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spatialboost.config import config_path, load_config, packaged_config
from spatialboost.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def test_packaged_demo_config_is_configs_demo_yaml():
    """One config, two places: the package's copy (for `pip install`) and configs/ (for readers of a clone)."""
    packaged = packaged_config("demo")
    assert packaged.read_bytes() == (REPO / "configs" / "demo.yaml").read_bytes(), (
        "src/spatialboost/resources/demo.yaml and configs/demo.yaml differ: copy one onto the other"
    )
    cfg = load_config(TrainConfig, packaged)
    assert cfg.stages.instruct.lr == 1e-3  # the demo's value, not InstructStage's default 2e-5
    assert config_path("demo") == packaged and config_path("configs/demo.yaml") == Path("configs/demo.yaml")


def test_packaged_demo_recipe_is_configs_demo_dinov2_yaml():
    packaged = packaged_config("demo-dinov2")
    assert packaged.read_bytes() == (REPO / "configs" / "demo-dinov2.yaml").read_bytes(), (
        "src/spatialboost/resources/demo-dinov2.yaml and configs/demo-dinov2.yaml differ: copy one onto the other"
    )


@pytest.mark.parametrize("name", ["spatialboost", "spatialboost-clip-b16"])
def test_packaged_recipes_are_their_configs_files(name):
    packaged = packaged_config(name)
    assert packaged.read_bytes() == (REPO / "configs" / f"{name}.yaml").read_bytes(), (
        f"src/spatialboost/resources/{name}.yaml and configs/{name}.yaml differ: copy one onto the other"
    )
    assert config_path(name) == packaged


def test_demo_reads_the_packaged_config(tmp_path, monkeypatch):
    from spatialboost.studies import demo

    monkeypatch.chdir(tmp_path)  # no configs/ around, as for an installed package
    state = demo.DemoState(out=tmp_path / "d", scenes=4, quick=True)
    state.results["base"] = str(tmp_path / "enc")
    cfg = demo.demo_train_config(state)
    assert cfg.stages.instruct.lr == 1e-3 and cfg.model.boost.gate == "channel"


@pytest.mark.slow
def test_installed_wheel_has_the_demo_config(tmp_path):
    """Build the wheel from a copy of the sources, install it into a bare folder and read the config there."""
    src = tmp_path / "src-copy"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w")],
                   check=True, timeout=300, cwd=tmp_path)  # fmt: skip
    wheel = next((tmp_path / "w").glob("spatialboost-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    probe = (
        "import spatialboost, spatialboost.config as c; from spatialboost.train.config import TrainConfig; "
        "cfg = c.load_config(TrainConfig, c.packaged_config('demo')); "
        "from spatialboost.studies.demo import load_recipe; "
        "print(spatialboost.__file__); print(cfg.stages.instruct.lr); print(load_recipe().train.stages.encoder.lr)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300, check=True).stdout.split()  # fmt: skip
    assert (
        out[0].startswith(str(site)) and float(out[1]) == 1e-3 and float(out[2]) == 2e-5
    )  # demo-dinov2.yaml

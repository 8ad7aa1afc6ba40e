"""Foundation invariants: config loading path, registry errors, atomic writes, safe paths, CLI usage errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spatialboost.cli import main
from spatialboost.config import ConfigError, load_config, save_config
from spatialboost.io import UnsafePathError, atomic_write_text, confined
from spatialboost.registry import Registry, UnknownNameError


@dataclass
class _Opt:
    lr: float = 1e-3
    steps: int = 10

    def validate(self) -> None:
        if self.steps <= 0:
            raise ConfigError("opt.steps must be > 0")


@dataclass
class _Cfg:
    name: str = "x"
    opt: _Opt = field(default_factory=_Opt)
    layers: list[int] = field(default_factory=lambda: [1, 2])


def test_config_yaml_then_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: y\nopt:\n  lr: 0.5\n")
    cfg = load_config(_Cfg, p, ["opt.steps=7", "layers=[3]"])
    assert (cfg.name, cfg.opt.lr, cfg.opt.steps, cfg.layers) == ("y", 0.5, 7, [3])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(_Cfg, tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize(
    "override, msg",
    [("opt.stepz=3", "unknown config key"), ("opt.steps=abc", "expected an integer"), ("opt.steps=0", "> 0")],
)
def test_config_rejects_bad_values(override: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        load_config(_Cfg, None, [override])


def test_registry_lists_known_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    reg.add("b", 2)
    assert reg.get("b") == 2
    with pytest.raises(UnknownNameError, match="known: a, b"):
        reg.get("c")


def test_atomic_write_leaves_no_temp(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "f.txt", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_confined_refuses_escape(tmp_path: Path) -> None:
    assert confined(tmp_path, "a/b.png") == (tmp_path / "a/b.png").resolve()
    with pytest.raises(UnsafePathError, match="outside the root"):
        confined(tmp_path, "../etc/passwd")


def test_cli_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2


def test_config_accepts_exponent_without_dot(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("opt:\n  lr: 3e-3\n")
    assert load_config(_Cfg, p, ["opt.lr=1e-4"]).opt.lr == 1e-4
    assert load_config(_Cfg, p).opt.lr == 3e-3
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(_Cfg, None, ["opt.lr=fast"])

"""The command line reads as a user-facing tool: its description, defaults in --help, -v anywhere."""

from __future__ import annotations

import logging
import re

import pytest

from spatialboost.cli import COMMANDS, main


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_describes_the_tool(capsys):
    text = _help([], capsys)
    assert "Thin:" not in text and "3D" in text and "spatialboost demo" in text


@pytest.mark.parametrize(
    "argv", [[c] for c in COMMANDS if c != "generate"] + [["generate", "synthetic"], ["generate", "images"]]
)
def test_subcommand_help_shows_defaults_and_cites_no_issue(argv, capsys):
    text = _help(argv, capsys)
    assert not re.search(r"issue \d", text), text
    assert "-v, --verbose" in text
    if argv[0] in ("view", "replicate", "demo", "validate"):
        assert "(default: " in text


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command(where, tmp_path, monkeypatch):
    seen = {}

    def spy(**kwargs):
        seen["level"] = kwargs["level"]

    monkeypatch.setattr(logging, "basicConfig", spy)
    argv = ["validate", str(tmp_path / "nowhere")]
    argv = ["-v", *argv] if where == "before" else [*argv, "-v"]
    assert main(argv) == 2
    assert seen["level"] == logging.DEBUG
    assert main(argv[1:] if where == "before" else argv[:-1]) == 2
    assert seen["level"] == logging.INFO


def test_verbose_after_a_nested_command(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    main(["generate", "synthetic", "--out", str(tmp_path / "f"), "--scenes", "0", "-v"])
    assert seen["level"] == logging.DEBUG

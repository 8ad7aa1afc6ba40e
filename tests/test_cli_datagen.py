"""End-to-end through ``spatialboost.cli.main``: generate, validate, view, demo, and bad input (exit 2)."""

from __future__ import annotations

import json

import pytest

from spatialboost.cli import main

TINY = ["--scenes", "5", "--image-size", "32", "--shard-size", "2", "--no-progress"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ds"
    assert (
        main(
            [
                "generate",
                "synthetic",
                "--out",
                str(out),
                "--multiview-share",
                "0.5",
                *TINY,
                "conversation.coords=norm1000",
            ]
        )
        == 0
    )
    return out


def test_generate_validate_view(dataset, tmp_path):
    m = json.loads((dataset / "manifest.json").read_text())
    assert (
        m["complete"] and m["counts"]["samples"] == 5 and m["config"]["conversation"]["coords"] == "norm1000"
    )
    assert main(["validate", str(dataset)]) == 0
    report = tmp_path / "r.html"
    assert main(["view", str(dataset), "--out", str(report)]) == 0
    text = report.read_text()
    assert (
        text.count("data:image/png;base64") >= 15 and "<h3>pixel</h3>" in text and "<h3>caption</h3>" in text
    )


def test_rerun_is_a_no_op_and_validate_fails_on_damage(dataset, capsys):
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*.png")}
    assert (
        main(
            [
                "generate",
                "synthetic",
                "--out",
                str(dataset),
                "--multiview-share",
                "0.5",
                *TINY,
                "conversation.coords=norm1000",
            ]
        )
        == 0
    )
    assert before == {p: p.stat().st_mtime_ns for p in dataset.rglob("*.png")}
    (dataset / "gt/00000001.npz").write_bytes(b"broken")
    assert main(["validate", str(dataset)]) == 1
    assert "FAIL" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "synthetic", "--out", "X", "--scenes", "0"],
        ["generate", "synthetic", "--out", "X", "--views", "-1"],
        ["generate", "synthetic", "--out", "X", "--shard", "3/2"],
        ["generate", "synthetic", "--out", "X", "--shard", "a/b"],
        ["generate", "synthetic", "--out", "X", "--workers", "0"],
        ["generate", "synthetic", "--out", "X", "--bogus"],
        ["generate", "synthetic", "--out", "X", "nokey=1"],
        ["generate", "synthetic", "--out", "X", "conversation.order=sideways"],
        ["generate", "images"],
        ["generate"],
        ["validate", "does/not/exist"],
        ["demo", "--out", "X", "--scenes", "0"],
    ],
)
def test_bad_input_exits_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) <= 2  # one-line error (argparse may add nothing else)
    assert not (tmp_path / "X" / "manifest.json").exists()


def test_different_config_refused(dataset, capsys):
    assert main(["generate", "synthetic", "--out", str(dataset), "--seed", "9", *TINY]) == 2
    assert "different config" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_data_steps(tmp_path):
    """The demo's data steps (generate, validate, view); the full demo (training, probes) is tested elsewhere."""
    from spatialboost.studies import demo

    state = demo.DemoState(out=tmp_path / "demo", scenes=6)
    steps = dict(demo.STEPS)
    for name in ("generate", "validate", "view"):
        steps[name](state)
    assert state.results["manifest"]["counts"]["samples"] == 6 and state.results["validated"]["samples"] == 6
    assert (tmp_path / "demo" / "report.html").exists()

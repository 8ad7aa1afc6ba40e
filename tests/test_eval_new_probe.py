"""A new 2D probe is three edits (issue 27): its function with its config class (``@register_probe``), its
``ProbeSpec`` and its test. A toy probe is added here with exactly those, for one test at a time, and a probe job
runs it under its own new task (and ``all`` picks it), with its config section, and the report shows its headline
metric in its spec's direction, with nothing else added."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from eval_stubs import fake_scene
from spatialboost.config import ConfigError, from_dict
from spatialboost.eval.bench2d import ProbeDataConfig, build_splits, probes_for
from spatialboost.eval.features import FeatureSet
from spatialboost.eval.job import run_job
from spatialboost.eval.probes import PROBES, ProbeResult, probe_configs_class, register_probe
from spatialboost.eval.report import bars_figure, markdown_table
from spatialboost.eval.runner import ProbeConfig
from spatialboost.eval.specs import SPECS, TASKS, ProbeSpec
from spatialboost.noise import LOWER_IS_BETTER


@dataclass
class ToyConfig:
    shift: float = 0.0  # metres added to the prediction


def toy_probe(train: FeatureSet, test: FeatureSet, cfg: ToyConfig, seed: int) -> ProbeResult:
    """Every test pixel's depth predicted as the train split's mean valid depth plus ``cfg.shift``."""
    depth = np.asarray(train.depth)
    guess = float(depth[depth > 0].mean()) + cfg.shift
    target = np.asarray(test.depth)
    err = np.abs(target[target > 0] - guess)
    return ProbeResult(metrics={"toy_err": float(err.mean()), "toy_within": float((err < 1.0).mean())},
                       protocol={"head": "toy", "seed": seed, "shift": cfg.shift})  # fmt: skip


# the error is lower-is-better, and no other probe's metric: its direction can only come from this spec
TOY = ProbeSpec("toy", "toy", "2d", ("toy_err", "toy_within"), ("toy_err",), frozenset({"toy_err"}),
                targets=("depth",))  # fmt: skip


@pytest.fixture
def toy_configs(monkeypatch) -> type:
    """The toy registered (undone after the test); returns what ``ProbeConfigs`` is with the toy in the source."""
    monkeypatch.setattr(PROBES, "_items", dict(PROBES._items))
    register_probe("toy", ToyConfig)(toy_probe)
    monkeypatch.setitem(SPECS, "toy", TOY)
    return probe_configs_class()


def test_the_toy_gets_a_config_section_a_task_and_a_place_in_all(toy_configs):
    probes = from_dict(toy_configs, {"toy": {"shift": 0.5}, "cls_linear": {"epochs": 3}}, "probes.")
    assert probes.toy == ToyConfig(shift=0.5) and probes.cls_linear.epochs == 3
    with pytest.raises(ConfigError, match=r"probes\.toy\.shift: expected a number"):
        from_dict(toy_configs, {"toy": {"shift": "far"}}, "probes.")
    assert TASKS.get("toy").probes == ("toy",) and "toy" in TASKS.get("all").probes
    train, _ = build_splits(ProbeDataConfig(num_train=2, num_test=2), 32, fake_scene)
    assert probes_for(["all"], train)[-1] == "toy"


def test_a_job_runs_the_toy_and_the_report_shows_its_headline(toy_configs, tmp_path):
    cfg = ProbeConfig(tasks=["toy"], seeds=2, out=str(tmp_path),
                      probes=from_dict(toy_configs, {"toy": {"shift": 0.5}}, "probes."))  # fmt: skip
    cfg.data.num_train, cfg.data.num_test = 4, 4
    cfg.features.image_size = 32
    cfg.validate()  # "toy" is a known task
    res = run_job({"base": "tiny-vit", "boosted": "tiny-vit"}, cfg, {"boosted": "base"}, fake_scene).summary
    assert {(r["probe"], r["task"], r["protocol"]["shift"]) for r in res["runs"]} == {("toy", "toy", 0.5)}
    assert len(res["runs"]) == 4  # 2 encoders x 2 seeds
    rows = {r["metric"]: r for r in res["rows"] if r["encoder"] == "boosted"}
    assert "toy_err" not in LOWER_IS_BETTER
    assert rows["toy_err"]["lower_is_better"] is True and rows["toy_within"]["lower_is_better"] is False
    headline = markdown_table(res, headline_only=True)
    assert "| toy | toy_err ↓ |" in headline and "toy_within" not in headline
    assert "| toy | toy_within ↑ |" in markdown_table(res)
    fig = bars_figure(res)
    try:
        assert [ax.get_title() for ax in fig.axes] == ["toy: toy_err\n(lower is better)"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_the_toy_is_gone_after_its_tests():
    assert "toy" not in PROBES and "toy" not in SPECS and "toy" not in TASKS

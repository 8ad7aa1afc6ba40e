"""One spec per probe (``eval.specs``): every registered probe has one, and what the runner, the report, the
probe registries and the card's fallback direction use agrees with it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spatialboost.eval.benches import TASKS
from spatialboost.eval.features import FeatureSet
from spatialboost.eval.probes import CONFIG_FIELD, PROBES, ProbeConfigs, run_probe
from spatialboost.eval.probes3d import PROBES_3D, Probe3DConfig
from spatialboost.eval.report import HEADLINE
from spatialboost.eval.runner import PROBE_TASK, TASK_PROBES, aggregate
from spatialboost.eval.specs import SPECS, metric_lower_is_better, probe_spec
from spatialboost.noise import LOWER_IS_BETTER


def test_every_registered_probe_has_a_spec_and_every_spec_a_probe():
    specs_2d = {n for n, s in SPECS.items() if s.bench == "2d"}
    assert specs_2d == set(PROBES.names()) == set(CONFIG_FIELD) == set(PROBE_TASK)
    assert {n for n, s in SPECS.items() if s.bench == "3d"} == set(PROBES_3D.names())
    bench_probes = {p for name in TASKS.names() for p in TASKS.get(name).probes}
    assert bench_probes == {n for n, s in SPECS.items() if s.bench != "2d"}
    assert {p for ps in TASK_PROBES.values() for p in ps} == specs_2d
    assert list(HEADLINE) == list(SPECS)


@pytest.mark.parametrize("name", list(SPECS))
def test_a_spec_is_complete(name):
    spec = probe_spec(name)
    assert spec.metrics and set(spec.headline) <= set(spec.metrics)
    assert spec.lower_is_better <= set(spec.metrics)
    if spec.bench == "2d":
        assert spec.targets and spec.config_field in {f.name for f in dataclasses.fields(ProbeConfigs)}
    # the model card cannot import eval: its fallback set must say the same as the specs
    for metric in spec.metrics:
        assert spec.is_lower_better(metric) == (metric in LOWER_IS_BETTER), (name, metric)


def test_the_3d_defaults_are_the_declared_metric_names():
    cfg = Probe3DConfig()
    assert probe_spec("corr").metrics == tuple(f"recall@{t:g}m" for t in cfg.thresholds)
    assert probe_spec("register").metrics[0] == f"rr@{cfg.rr_threshold:g}m"


def _features(n: int, seed: int) -> FeatureSet:
    rng = np.random.default_rng(seed)
    return FeatureSet(cls=rng.normal(size=(n, 4)).astype(np.float32),
                      patch=rng.normal(size=(n, 4, 4)).astype(np.float32), grid=(2, 2), image_size=8,
                      depth=rng.uniform(1, 3, size=(n, 8, 8)).astype(np.float32),
                      seg=rng.integers(0, 3, size=(n, 8, 8)).astype(np.uint8),
                      label=rng.integers(0, 2, size=n).astype(np.int64))  # fmt: skip


@pytest.mark.parametrize("name", list(TASK_PROBES["depth"] + TASK_PROBES["seg"] + TASK_PROBES["cls"]))
def test_a_2d_probe_reports_exactly_its_declared_metrics(name):
    cfgs = ProbeConfigs()
    for field in ("depth", "seg", "cls_linear"):
        getattr(cfgs, field).epochs = 1
    res = run_probe(name, _features(8, 0), _features(4, 1), cfgs, seed=0)
    assert set(res.metrics) == set(probe_spec(name).metrics)


def test_rows_take_their_direction_from_the_spec():
    runs = [{"encoder": "e", "probe": "register", "seed": 0, "protocol": {},
             "metrics": {"rte": 0.1, "rr@0.2m": 0.5, "rr@0.3m": 0.6}}]  # fmt: skip
    rows = {r["metric"]: r["lower_is_better"] for r in aggregate(runs)}
    assert rows == {"rte": True, "rr@0.2m": False, "rr@0.3m": False}
    assert metric_lower_is_better("robot/reach-v3", "success") is False  # no spec: the shared set

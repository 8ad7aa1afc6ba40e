"""One spec per probe (``eval.specs``): every registered probe has one, a spec declares every field its bench
needs, and what the tasks, the runner, the report, the probe registries and the card's fallback direction use
agrees with it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spatialboost.eval.benches import TASKS
from spatialboost.eval.features import FeatureSet
from spatialboost.eval.probes import PROBES, ProbeConfigs, run_probe
from spatialboost.eval.probes3d import PROBES_3D, Probe3DConfig
from spatialboost.eval.runner import aggregate
from spatialboost.eval.specs import SPECS, ProbeSpec, metric_lower_is_better, probe_spec
from spatialboost.noise import LOWER_IS_BETTER


def test_every_registered_probe_has_a_spec_and_every_spec_a_probe():
    specs_2d = {n for n, s in SPECS.items() if s.bench == "2d"}
    assert specs_2d == set(PROBES.names())
    assert {n for n, s in SPECS.items() if s.bench == "3d"} == set(PROBES_3D.names())
    task_probes = {p for name in TASKS.names() for p in TASKS.get(name).probes}
    assert task_probes == set(SPECS)  # every probe is run by a task, 2D, 3D and robot alike
    assert (
        {p for _, t in TASKS.items() if t.bench == "2d" for p in t.probes}
        == specs_2d
        == set(TASKS.get("all").probes)
    )
    # ProbeConfigs: one field per 2D spec, in spec order, of the config class its probe registered with
    fields = {f.name: f.type for f in dataclasses.fields(ProbeConfigs)}
    assert fields == {s.config_field: PROBES.get(s.name).config for s in SPECS.values() if s.bench == "2d"}
    assert list(fields) == ["depth", "seg", "cls_linear", "cls_knn"]  # probes.cls_linear.epochs, ...


BENCHES = {"2d", "3d", "robot"}  # eval.benches.build_benches builds one of each
TARGETS = {"depth", "seg", "label"}  # what a FeatureSet carries for a probe to train and score on


def spec_problems(spec: ProbeSpec) -> list[str]:
    """What ``spec`` fails to declare, or declares inconsistently (empty: complete)."""
    problems = []
    for f in ("name", "task", "bench", "metrics", "headline"):
        if not getattr(spec, f):
            problems.append(f"no {f}")
    if spec.bench not in BENCHES:
        problems.append(f"bench {spec.bench!r} is not one of {sorted(BENCHES)}")
    if not set(spec.headline) <= set(spec.metrics) or not spec.lower_is_better <= set(spec.metrics):
        problems.append("headline / lower_is_better name metrics it does not report")
    if not set(spec.targets) <= TARGETS:
        problems.append(f"unknown targets {set(spec.targets) - TARGETS}")
    if spec.bench == "2d":
        sections = {f.name for f in dataclasses.fields(ProbeConfigs)}
        if spec.name not in PROBES or spec.config_field not in sections:
            problems.append(f"no probe {spec.name!r} registered with a config ({spec.config_field!r})")
        if not spec.targets:
            problems.append("a 2D probe declares no targets")
    if spec.task not in TASKS or spec.name not in TASKS.get(spec.task).probes:
        problems.append(f"task {spec.task!r} does not run it")
    return problems


@pytest.mark.parametrize("name", list(SPECS))
def test_a_spec_is_complete(name):
    spec = probe_spec(name)
    assert spec.name == name and not spec_problems(spec)
    # the model card cannot import eval: its fallback set must say the same as the specs
    for metric in spec.metrics:
        assert spec.is_lower_better(metric) == (metric in LOWER_IS_BETTER), (name, metric)


@pytest.mark.parametrize(
    "broken",
    [{"headline": ()}, {"metrics": ()}, {"task": ""}, {"bench": "4d"}, {"name": "depth-dpt"},
     {"targets": ()}, {"targets": ("normals",)}, {"headline": ("rmse", "nope")},
     {"lower_is_better": frozenset({"nope"})}, {"task": "seg"}],
)  # fmt: skip
def test_a_spec_missing_a_field_is_caught(broken):
    assert spec_problems(dataclasses.replace(probe_spec("depth"), **broken))


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


@pytest.mark.parametrize(
    "name", [*TASKS.get("depth").probes, *TASKS.get("seg").probes, *TASKS.get("cls").probes]
)
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

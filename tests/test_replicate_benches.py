"""The study's bench tasks (issue 12): 3D / robot tasks on table A's arms, their columns and table; the old
names (``extra_probes``, ``--probes``) still work, with a warning."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spatialboost.cli import build_parser, main
from spatialboost.cli.replicate import build_config, command_line
from spatialboost.config import load_config
from spatialboost.models.encoders import create_encoder
from spatialboost.studies.replicate.benches import BenchProbes, bench_arms, bench_columns, bench_table
from spatialboost.studies.replicate.runner import Study, run_bench_probes
from spatialboost.studies.replicate.study import ARMS, QUICK, StudyConfig


def test_bench_probes_run_the_3d_benches_at_quick_size(tmp_path):
    extras = BenchProbes(["corr", "sem3d"], QUICK, tmp_path)
    out = extras.run(create_encoder("tiny-vit", seed=0), seed=0)
    assert set(out) == {"corr", "sem3d"}
    assert 0.0 <= out["corr"]["recall@0.2m"] <= 1.0 and 0.0 <= out["sem3d"]["miou"] <= 1.0
    assert extras.info()["3d"]["splits"]["test"]["scenes"] == 2


def test_bench_probes_only_on_table_a_test_arms():
    class Fake:
        def run(self, encoder, seed):
            return {"corr": {"recall@0.2m": 0.5}}

    study = Study(StudyConfig(bench_tasks=["corr"]), _bench_probes=Fake())
    assert run_bench_probes(study, ARMS.get("sb-lora"), None, 0) == {"corr": {"recall@0.2m": 0.5}}
    assert run_bench_probes(study, ARMS.get("head-depth"), None, 0) == {}  # not in table A
    assert run_bench_probes(study, ARMS.get("val-lr0.001"), None, 0) == {}  # the val search
    assert run_bench_probes(Study(StudyConfig(), _bench_probes=Fake()), ARMS.get("base"), None, 0) == {}
    assert {"base", "sb-dual", "sb-full", "sb-lora"} <= set(bench_arms())


def test_bench_columns_and_table_from_arm_records():
    recs = [{"metrics": {"depth": {"rmse": 1.0}, "register": {"rr@0.2m": v, "rte": 1.0}}} for v in (0.2, 0.4)]
    cols = bench_columns(recs)
    assert (
        set(cols) == {"reg. recall@0.2m", "RTE (m)"}
        and cols["reg. recall@0.2m"]["mean"] == 0.30000000000000004
    )
    assert bench_columns([{"metrics": {"depth": {"rmse": 1.0}}}]) == {}  # arms run without bench tasks
    summary = {
        "arms": {"base": {"label": "base", "benches": cols}, "sb-dual": {"label": "dual", "benches": {}}}
    }
    text = "\n".join(bench_table(summary))
    assert "| base | 2 | 0.3000 ± 0.1414 | 1.0000 ± 0.0000 |" in text and "dual" not in text
    assert bench_table({"arms": {"base": {"label": "base", "benches": {}}}}) == []


def test_unknown_bench_task_is_a_user_error(tmp_path, capsys):
    assert main(["replicate", "--quick", "--out", str(tmp_path), "--bench-tasks", "nope"]) == 2
    assert "unknown bench task" in capsys.readouterr().err
    cfg = replace(StudyConfig(), bench_tasks=["all3d", "robot"])
    cfg.validate()


def test_the_old_names_still_work_with_a_warning():
    """``extra_probes`` / ``--probes`` were renamed ``bench_tasks`` / ``--bench-tasks``."""
    with pytest.warns(FutureWarning, match="extra_probes is deprecated: use bench_tasks"):
        cfg = load_config(StudyConfig, values={"extra_probes": ["corr"]})
    assert cfg.bench_tasks == ["corr"]
    with pytest.warns(FutureWarning, match="StudyConfig.extra_probes is deprecated"):
        assert cfg.extra_probes == ["corr"]
    argv = ["replicate", "--quick", "--probes", "corr,robot"]
    args = build_parser(argv)[0].parse_args(argv)
    with pytest.warns(FutureWarning, match="--probes is deprecated: use --bench-tasks"):
        assert build_config(args).bench_tasks == ["corr", "robot"]
    assert "--bench-tasks corr,robot" in command_line(args) and "--probes" not in command_line(args)

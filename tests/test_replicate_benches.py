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
    recs = [{"seed": k, "metrics": {"depth": {"rmse": 1.0}, "register": {"rr@0.2m": v, "rte": 1.0}}}
            for k, v in enumerate((0.2, 0.4))]  # fmt: skip
    cols = bench_columns(recs)
    assert (
        set(cols) == {"reg. recall@0.2m", "RTE (m)"}
        and cols["reg. recall@0.2m"]["mean"] == 0.30000000000000004
    )
    # arms run without bench tasks have no bench columns
    assert bench_columns([{"seed": 0, "metrics": {"depth": {"rmse": 1.0}}}]) == {}
    summary = {
        "arms": {"base": {"label": "base", "benches": cols}, "sb-dual": {"label": "dual", "benches": {}}}
    }
    text = "\n".join(bench_table(summary))
    assert "| base | 2 | 0.3000 ± 0.1414 | 1.0000 ± 0.0000 |  |" in text and "dual" not in text
    assert bench_table({"arms": {"base": {"label": "base", "benches": {}}}}) == []


def test_bench_table_says_which_columns_differ_from_the_base_beyond_noise():
    """Paired over the arm's seeds, in each metric's direction (RTE and RRE: lower is better)."""

    def recs(rte, rre, rr):
        return [{"seed": k, "metrics": {"register": {"rte": rte[k], "rre": rre[k], "rr@0.2m": rr[k]}}}
                for k in range(len(rte))]  # fmt: skip

    base = bench_columns(recs([1.0, 1.2, 0.9, 1.1], [50.0, 60.0, 55.0, 52.0], [0.1, 0.2, 0.1, 0.2]))
    arm = bench_columns(recs([0.8, 1.0, 0.7], [60.0, 70.0, 65.0], [0.2, 0.1, 0.1]))  # seeds 0-2 of the base
    summary = {
        "arms": {"base": {"label": "base", "benches": base}, "sb-dual": {"label": "dual", "benches": arm}}
    }
    row = next(line for line in bench_table(summary) if line.startswith("| dual |"))
    assert row.endswith("| RTE (m) better, RRE (deg) worse |")  # reg. recall is within noise
    one = bench_columns(recs([0.8], [60.0], [0.2]))
    summary["arms"]["sb-dual"]["benches"] = one
    assert next(line for line in bench_table(summary) if line.startswith("| dual |")).endswith(
        "| 1 seed: no noise estimate |"
    )


def test_finished_records_gain_the_bench_probes_they_lack(tmp_path, monkeypatch):
    """--bench-tasks on a finished study probes the kept encoders of table A's test arms once, training nothing."""
    import json

    from spatialboost.studies.replicate import runner

    calls = []

    class Fake:
        benches = [type("B", (), {"probes": ["corr", "register"]})()]

        def run(self, encoder, seed):
            calls.append(seed)
            return {"corr": {"recall@0.2m": 0.5}, "register": {"rte": 1.0}}

    study = Study(StudyConfig(bench_tasks=["corr", "register"]), _bench_probes=Fake())
    monkeypatch.setattr(runner, "kept_encoder", lambda *a: "encoder")
    path = tmp_path / "seed0.json"
    record = {"seed": 0, "metrics": {"depth": {"rmse": 1.0}}}
    path.write_text(json.dumps(record))
    out = runner.add_bench_probes(study, ARMS.get("base"), 0, path, json.loads(path.read_text()))
    assert out["metrics"]["corr"] == {"recall@0.2m": 0.5} and out["metrics"]["depth"] == {"rmse": 1.0}
    assert json.loads(path.read_text()) == out and calls == [0]
    assert runner.add_bench_probes(study, ARMS.get("base"), 0, path, out) == out and calls == [0]  # has them
    assert runner.add_bench_probes(study, ARMS.get("head-depth"), 0, path, record) == record  # no bench arm
    assert calls == [0]


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


def test_the_recorded_command_names_the_report_files_it_wrote():
    """A report written under another name than docs/results.md records that name, so its command, re-run, writes
    the same files and not docs/results.md."""
    argv = ["replicate", "--docs", "docs", "--docs-md", "results-s18.md", "--docs-prefix", "replicate-s18_"]
    line = command_line(build_parser(argv)[0].parse_args(argv))
    assert "--docs docs --docs-md results-s18.md --docs-prefix replicate-s18_" in line
    argv = ["replicate", "--docs", "docs"]
    assert "--docs-md" not in command_line(build_parser(argv)[0].parse_args(argv))


def test_the_study_records_the_commit_of_its_code_not_of_the_working_directory(tmp_path, monkeypatch):
    """A study run from its output folder (no git checkout) still names the commit of the code that ran."""
    import subprocess
    from pathlib import Path

    from spatialboost.cli.replicate import git_commit

    src = Path(git_commit.__code__.co_filename).parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=src)
    if head.returncode != 0:
        pytest.skip("the package is not in a git checkout here")
    monkeypatch.chdir(tmp_path)
    assert git_commit().split()[0] == head.stdout.strip()

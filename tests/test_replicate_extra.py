"""The study's extra probes (issue 12): 3D / robot tasks on table A's arms, their columns and table."""

from __future__ import annotations

from dataclasses import replace

from spatialboost.cli import main
from spatialboost.models.encoders import create_encoder
from spatialboost.studies.replicate.extra import ExtraProbes, extra_arms, extra_columns, extra_table
from spatialboost.studies.replicate.runner import Study, run_extra_probes
from spatialboost.studies.replicate.study import ARMS, QUICK, StudyConfig


def test_extra_probes_run_the_3d_benches_at_quick_size(tmp_path):
    extras = ExtraProbes(["corr", "sem3d"], QUICK, tmp_path)
    out = extras.run(create_encoder("tiny-vit", seed=0), seed=0)
    assert set(out) == {"corr", "sem3d"}
    assert 0.0 <= out["corr"]["recall@0.2m"] <= 1.0 and 0.0 <= out["sem3d"]["miou"] <= 1.0
    assert extras.info()["3d"]["splits"]["test"]["scenes"] == 2


def test_extra_probes_only_on_table_a_test_arms():
    class Fake:
        def run(self, encoder, seed):
            return {"corr": {"recall@0.2m": 0.5}}

    study = Study(StudyConfig(extra_probes=["corr"]), _extras=Fake())
    assert run_extra_probes(study, ARMS.get("sb-lora"), None, 0) == {"corr": {"recall@0.2m": 0.5}}
    assert run_extra_probes(study, ARMS.get("head-depth"), None, 0) == {}  # not in table A
    assert run_extra_probes(study, ARMS.get("val-lr0.001"), None, 0) == {}  # the val search
    assert run_extra_probes(Study(StudyConfig(), _extras=Fake()), ARMS.get("base"), None, 0) == {}
    assert {"base", "sb-dual", "sb-full", "sb-lora"} <= set(extra_arms())


def test_extra_columns_and_table_from_arm_records():
    recs = [{"metrics": {"depth": {"rmse": 1.0}, "register": {"rr@0.2m": v, "rte": 1.0}}} for v in (0.2, 0.4)]
    cols = extra_columns(recs)
    assert (
        set(cols) == {"reg. recall@0.2m", "RTE (m)"}
        and cols["reg. recall@0.2m"]["mean"] == 0.30000000000000004
    )
    assert extra_columns([{"metrics": {"depth": {"rmse": 1.0}}}]) == {}  # arms run without extras
    summary = {"arms": {"base": {"label": "base", "extra": cols}, "sb-dual": {"label": "dual", "extra": {}}}}
    text = "\n".join(extra_table(summary))
    assert "| base | 2 | 0.3000 ± 0.1414 | 1.0000 ± 0.0000 |" in text and "dual" not in text
    assert extra_table({"arms": {"base": {"label": "base", "extra": {}}}}) == []


def test_unknown_extra_probe_is_a_user_error(tmp_path, capsys):
    assert main(["replicate", "--quick", "--out", str(tmp_path), "--probes", "nope"]) == 2
    assert "unknown extra probe" in capsys.readouterr().err
    cfg = replace(StudyConfig(), extra_probes=["all3d", "robot"])
    cfg.validate()

"""The mini-replication study: the quick CLI run (mechanics only, never the numbers) and its pieces."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spatialboost.cli import main
from spatialboost.config import ConfigError
from spatialboost.registry import UnknownNameError
from spatialboost.studies.replicate import report
from spatialboost.studies.replicate.dense import DenseConfig, DenseData, step_images, train_dense_head
from spatialboost.studies.replicate.study import (
    ARMS,
    DEFAULT_ARM,
    DENSE48_ARM,
    DENSE_ARM,
    FROZEN_PROJECTOR_ARM,
    GATE4_ARM,
    HIGH_LR_ARM,
    TABLES,
    WIDE_DATA_ARM,
    StudyConfig,
    make_config,
)
from train_fixtures import one_thread  # noqa: F401


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("replicate")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert (
            main(["replicate", "--quick", "--seeds", "1", "--out", str(out), "--docs", str(out / "docs")])
            == 0
        )
    finally:
        torch.set_num_threads(before)
    return out


@pytest.mark.slow
def test_quick_study_writes_every_arm_and_table(quick_study):
    summary = json.loads((quick_study / "results.json").read_text())
    assert summary["complete"] and not summary["missing"]
    for name in ARMS.names():
        key = f"{name}@val" if ARMS.get(name).search else name
        assert key in summary["arms"], name
        assert set(summary["arms"][key]["columns"]) == set(report.COLUMNS.values())
    md = (quick_study / "results.md").read_text()
    for table in TABLES:
        assert f"Table {table.key}:" in md
    for name in ARMS.names():
        assert ARMS.get(name).label in md
    assert (quick_study / "tuning.json").is_file()
    assert (quick_study / "docs" / "results.md").is_file()
    assert (quick_study / "docs" / "replicate_arms.png").is_file()
    # every record keeps the depth probe's per-scene values, whose mean is the recorded number
    cfg = json.loads((quick_study / "study-config.json").read_text())
    for path in quick_study.glob("arms/*/seed*.json"):
        rec = json.loads(path.read_text())
        per_scene = rec["per_scene"]["depth"]
        assert set(per_scene) == {"rmse", "absrel", "delta1"}
        assert len(per_scene["rmse"]) == cfg["sizes"][f"probe_{rec['split']}"]
        assert sum(per_scene["rmse"]) / len(per_scene["rmse"]) == pytest.approx(
            rec["metrics"]["depth"]["rmse"]
        )
        assert [h["rmse"] for h in rec["depth_heads"]] == [rec["metrics"]["depth"]["rmse"]]  # quick: one head
    # results.json keeps the paired scene s.e. against the base, not the per-scene values (the records have them)
    assert "per_item" not in json.dumps(summary)
    assert summary["arms"]["sb-dual"]["columns"]["depth RMSE (m)"]["scene_se_vs_base"] > 0
    assert report.collect(quick_study)["arms"]["sb-dual"]["columns"]["depth RMSE (m)"]["per_item"]
    assert "The depth probe trains one head per encoder" in md and summary["depth_heads"]["short"] == []
    assert "### Where the depth change comes from" in md and "| the base's worst quarter of scenes |" in md


@pytest.mark.slow
def test_a_finished_record_is_brought_up_to_the_studys_depth_heads_from_its_saved_encoder(quick_study, tmp_path,
                                                                                          monkeypatch):  # fmt: skip
    """Records written with fewer depth heads than the study asks for, or before per-scene values were kept,
    gain them on the next run, from the arm's saved encoder, without training: head 0 is the recorded probe,
    the record's depth metrics and per-scene values become the heads' means. A record whose recorded head the
    re-run does not reproduce is left as it is."""
    import shutil

    from spatialboost.studies.replicate import probing, runner
    from spatialboost.studies.replicate import study as study_mod

    def refuse(*args, **kwargs):
        raise AssertionError("a finished arm was trained again")

    out = tmp_path / "study"
    shutil.copytree(quick_study, out, ignore=shutil.ignore_patterns("docs"))
    fresh, tampered, base = (
        out / "arms" / "sb-dual" / "seed0-test.json",
        out / "arms" / "sb-full" / "seed0-test.json",
        out / "arms" / "base" / "seed0-test.json",
    )
    kept = {path: json.loads(path.read_text()) for path in (fresh, tampered, base)}
    for path, shift in ((fresh, 0.0), (tampered, 0.5)):
        rec = json.loads(path.read_text())
        del rec["per_scene"], rec["depth_heads"]
        rec["metrics"]["depth"]["rmse"] += shift
        path.write_text(json.dumps(rec))
    monkeypatch.setattr(runner, "TRAINERS", {k: refuse for k in runner.TRAINERS})
    monkeypatch.setitem(study_mod.SIZES, "quick", replace(study_mod.QUICK, depth_heads=3))
    seeds = []
    real_probe = probing.run_probe
    monkeypatch.setattr(
        probing, "run_probe", lambda name, *a: seeds.append((name, a[-1])) or real_probe(name, *a)
    )
    args = ["replicate", "--quick", "--seeds", "1", "--out", str(out), "--arms", "base,sb-dual,sb-full"]
    assert main(args) == 0
    for path in (fresh, base):
        rec, old = json.loads(path.read_text()), kept[path]
        heads = rec["depth_heads"]
        assert len(heads) == 3 and heads[0] == pytest.approx(old["metrics"]["depth"])
        for metric, value in rec["metrics"]["depth"].items():
            assert value == pytest.approx(sum(h[metric] for h in heads) / 3)
        scenes = rec["per_scene"]["depth"]["rmse"]
        assert sum(scenes) / len(scenes) == pytest.approx(rec["metrics"]["depth"]["rmse"])
        assert rec["metrics"]["seg"] == old["metrics"]["seg"]
    assert "per_scene" not in json.loads(tampered.read_text())
    assert seeds.count(("depth", 0)) == seeds.count(("depth", 1000)) == seeds.count(("depth", 2000)) == 3
    upgraded = fresh.read_text()
    assert main(args) == 0 and fresh.read_text() == upgraded  # enough heads: nothing re-run
    md = (out / "results.md").read_text()
    assert "the mean of 3 probe heads per encoder" in md
    short = report.collect(out)["depth_heads"][
        "short"
    ]  # the arms this run did not cover, and the tampered one
    assert "sb-full seed 0" in short and "sb-dual seed 0" not in short and "base seed 0" not in short
    assert f"**Records with fewer depth heads: {len(short)}**" in md


def test_average_heads_means_each_metric_and_each_scene_over_the_heads():
    import numpy as np

    from spatialboost.eval.probes import ProbeResult
    from spatialboost.studies.replicate.probing import average_heads, head_seed

    def head(rmse, scenes):
        return ProbeResult({"rmse": rmse, "absrel": rmse / 4, "delta1": 1 - rmse}, {},
                           per_image={"rmse": scenes, "absrel": [x / 4 for x in scenes],
                                      "delta1": [1 - x for x in scenes]})  # fmt: skip

    got = average_heads([head(0.6, [0.5, 0.7]), head(0.8, [0.7, float("nan")])])
    assert got.metrics == pytest.approx({"rmse": 0.7, "absrel": 0.175, "delta1": 0.3})
    assert got.per_scene["rmse"][0] == pytest.approx(0.6) and np.isnan(got.per_scene["rmse"][1])
    assert [h["rmse"] for h in got.heads] == [0.6, 0.8]
    assert head_seed(3, 0) == 3 and len({head_seed(s, k) for s in range(7) for k in range(5)}) == 35
    with pytest.raises(ValueError):
        average_heads([])


@pytest.mark.slow
def test_rerun_redoes_no_finished_arm(quick_study, monkeypatch, capsys):
    from spatialboost.studies.replicate import runner

    def refuse(*args, **kwargs):
        raise AssertionError("a finished arm was trained again")

    monkeypatch.setattr(runner, "TRAINERS", {k: refuse for k in runner.TRAINERS})
    stamps = {p: p.stat().st_mtime_ns for p in quick_study.glob("arms/*/*.json")}
    assert main(["replicate", "--quick", "--seeds", "1", "--out", str(quick_study)]) == 0
    assert {p: p.stat().st_mtime_ns for p in quick_study.glob("arms/*/*.json")} == stamps
    assert "SpatialBoost, dual-channel (untuned)" in capsys.readouterr().out


@pytest.mark.slow
def test_report_marks_partial_results_and_keeps_the_discussion(quick_study, tmp_path):
    import shutil

    out = tmp_path / "study"
    shutil.copytree(quick_study / "arms", out / "arms")
    shutil.copy(quick_study / "study-config.json", out / "study-config.json")
    shutil.rmtree(out / "arms" / "sb-lora")
    summary = report.collect(out)
    assert not summary["complete"] and summary["missing"] == ["sb-lora seed 0"]
    md = report.write_report(summary, out, plots=False)
    md.write_text(md.read_text() + "\n<!-- discussion -->\nhand-written\n")
    report.write_report(summary, out, plots=False)
    text = md.read_text()
    assert "**PARTIAL**" in text and "hand-written" in text and "Not run in this study" in text
    assert "## Plan and progress" in text and "| sb-lora | test | 0 / 1 |  | ? |" in text


def test_an_arm_table_lists_the_arms_that_did_not_run_under_it_not_as_empty_rows():
    from spatialboost.studies.replicate.columns import seed_stats
    from spatialboost.studies.replicate.probing import COLUMNS
    from spatialboost.studies.replicate.study import ARMS, DEFAULT_ARM, FULL_DEFAULT

    def arm(name, value):
        cols = {c: dict(seed_stats([value, value + 0.01]), seeds=[0, 1]) for c in COLUMNS.values()}
        return {"label": ARMS.get(name).label, "seeds": [0, 1], "columns": cols, "diagnostics": {}}

    summary = {"arms": {"base": arm("base", 0.5), DEFAULT_ARM: arm(DEFAULT_ARM, 0.4)}, "config": {}}
    text = report.arm_table(summary, ["base", FULL_DEFAULT, DEFAULT_ARM])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| " + ARMS.get(n).label for n in ("base", DEFAULT_ARM)]
    assert "not run |" not in text
    assert text.endswith(f"Not run in this study: {ARMS.get(FULL_DEFAULT).label}.")
    assert report.arm_table({"arms": {}, "config": {}}, ["base"]).startswith("_No arm of this table ran")
    assert "Not run in this study" not in report.arm_table(summary, ["base", DEFAULT_ARM])


def test_report_cells_are_mean_and_sample_std_of_the_seeds():
    from spatialboost.studies.replicate.columns import on_seeds, seed_stats

    col = seed_stats([1.0, 2.0, 3.0])
    assert col["mean"] == pytest.approx(2.0) and col["std"] == pytest.approx(1.0) and col["n"] == 3
    assert report.cell(col) == "2.0000 ± 1.0000"
    assert report.rel_change(2.0, 1.5) == "-25.0%"
    assert [report.seed_span(s) for s in ([0], [2, 0, 1], [0, 2])] == ["0", "0-2", "0, 2"]
    # a base with more seeds than the arm is compared over the arm's seeds
    base, arm = seed_stats([1.0, 2.0, 9.0], seeds=[0, 1, 2]), seed_stats([0.9, 1.8], seeds=[0, 1])
    assert report.scene_change(base, arm) == "-10.0%"
    restricted = on_seeds(base, [0, 1])
    assert restricted["values"] == [1.0, 2.0] and restricted["seeds"] == [0, 1] and restricted["mean"] == 1.5
    assert on_seeds(base, [0, 5]) == base  # a seed the base lacks: left as it is


def test_scene_spread_splits_a_depth_change_by_the_bases_worst_quarter():
    base = [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0, 4.0]]
    arm = [[1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 2.0, 2.0], [1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 2.0, float("nan")]]
    spread = report.scene_spread(base, arm)
    # the scene with a NaN is left out: of 7 scenes the worst quarter is the 1 worst (4.0 -> 2.0); the rest +10%
    assert spread["better"] == pytest.approx(1 / 7)
    assert spread["worst_quarter"] == pytest.approx(-50.0) and spread["rest"] == pytest.approx(10.0)


def test_report_says_which_columns_differ_beyond_noise():
    def cols(depth, acc, std=0.01, n=3):
        base = {c: {"mean": 0.5, "std": std, "n": n} for c in report.COLUMNS.values()}
        base["depth RMSE (m)"] = {"mean": depth, "std": std, "n": n}
        base["cls linear"] = {"mean": acc, "std": 0.0, "n": n}
        return base

    base = cols(1.70, 0.20)
    assert report.beyond_noise(base, cols(1.60, 0.20), 256) == "depth RMSE (m) better"
    assert report.beyond_noise(base, cols(1.69, 0.20), 256) == "none"  # 0.01 m < 2 * sqrt(2) * 0.01
    assert report.beyond_noise(base, cols(1.80, 0.20), 256) == "depth RMSE (m) worse"
    # an accuracy's sampling error counts: 0.05 apart over 256 images is within noise, over 100000 it is not
    assert report.beyond_noise(base, cols(1.70, 0.25), 256) == "none"
    assert report.beyond_noise(base, cols(1.70, 0.25), 100_000) == "cls linear better"
    assert report.beyond_noise(cols(1.7, 0.2, n=1), cols(1.0, 0.2, n=1), 256) == "1 seed: no noise estimate"
    # a gain the seeds agree on but that two of four scenes carry is within the scenes' noise
    scenes_a, scenes_b = [[1.0, 1.0, 2.0, 2.0]] * 3, [[1.0, 1.0, 1.6, 1.6]] * 3
    base, arm = cols(1.5, 0.2, std=0.001), cols(1.3, 0.2, std=0.001)
    assert report.beyond_noise(base, arm, 256) == "depth RMSE (m) better"
    base["depth RMSE (m)"]["per_item"], arm["depth RMSE (m)"]["per_item"] = scenes_a, scenes_b
    assert report.beyond_noise(base, arm, 256) == "none"
    assert report.scene_change(base["depth RMSE (m)"], arm["depth RMSE (m)"]) == "-13.3% (± 7.7 scenes)"
    assert report.scene_change(cols(1.5, 0.2)["depth RMSE (m)"], arm["depth RMSE (m)"]) == "-13.3%"


def test_study_registry_and_job_order():
    from spatialboost.studies.replicate.runner import plan_jobs

    for table in TABLES:
        for name in table.arms:
            ARMS.get(name)
    with pytest.raises(UnknownNameError, match="known: base"):
        ARMS.get("no-such-arm")
    cfg = make_config("unused", seeds=2, quick=True)
    jobs = plan_jobs(cfg)
    first_main = next(i for i, (a, _) in enumerate(jobs) if not a.search)
    last_main = max(i for i, (a, _) in enumerate(jobs) if not a.search)
    assert all(a.search and a.candidate and s == 0 for a, s in jobs[:first_main])
    assert all(a.search and not a.candidate and s == 0 for a, s in jobs[last_main + 1 :])
    tuned = [i for i, (a, _) in enumerate(jobs) if a.tuned]
    assert tuned and min(tuned) > first_main
    with pytest.raises(UnknownNameError):
        StudyConfig(arms=["nope"]).validate()


def dataless_study(tmp_path, monkeypatch):
    """A quick one-seed study whose datasets are paths under ``tmp_path``: configs are built, no dataset is."""
    from spatialboost.studies.replicate import runner

    study = runner.Study(make_config(str(tmp_path), seeds=1, quick=True))
    monkeypatch.setattr(runner.Study, "data", lambda self, name: tmp_path / name)
    monkeypatch.setattr(runner.Study, "heldout", property(lambda self: tmp_path / "heldout"))
    return study


@pytest.mark.parametrize(
    ("name", "differs"),
    [
        ("sb-full-choices-points-5x", {"mode": "full"}),
        ("sb-dual-choices-points-100x", {"steps_scale": 100.0}),
        ("sb-full-choices-points-100x", {"mode": "full", "steps_scale": 100.0}),
        ("sb-dual-anchor1-choices-points-5x", {"cls_anchor": 1.0}),
        ("sb-dual-anchor0.1-choices-points-5x", {"cls_anchor": 0.1}),
        ("sb-dual-swapped-choices-points-5x", {"swap_images": True}),
        ("sb-dual-anchor0.1-choices-points-4xdata-5x", {"cls_anchor": 0.1, "data": "choices-points-4x"}),
        ("sb-dual-swapped-anchor0.1-choices-points-4xdata-5x",
         {"cls_anchor": 0.1, "data": "choices-points-4x", "swap_images": True}),
        ("sb-dual-s2stop0.65-anchor0.1-choices-points-5x", {"cls_anchor": 0.1, "stage2_stop": 0.65}),
        (DENSE_ARM, {"cls_anchor": 0.1, "data": "choices-points-4x-dense"}),
        ("sb-dual-anchor0.1-choices-points-4xdata-fine-5x", {"cls_anchor": 0.1, "data": "choices-points-4x-fine"}),
        (DENSE48_ARM, {"cls_anchor": 0.1, "data": "choices-points-4x-dense48"}),
        (WIDE_DATA_ARM, {"cls_anchor": 0.1, "data": "choices-points-8x-dense"}),
        (FROZEN_PROJECTOR_ARM, {"cls_anchor": 0.1, "data": "choices-points-4x-dense", "projector": False}),
        (HIGH_LR_ARM, {"cls_anchor": 0.1, "data": "choices-points-4x-dense", "encoder_lr": 5e-5}),
        (DEFAULT_ARM, {"cls_anchor": 0.1, "data": "choices-points-4x-dense", "gate_init": -2.0}),
        (GATE4_ARM, {"cls_anchor": 0.1, "data": "choices-points-4x-dense", "gate_init": -4.0}),
        ("sb-dual-swapped-gate-2-anchor0.1-choices-points-4xdata-dense-5x",
         {"cls_anchor": 0.1, "data": "choices-points-4x-dense", "gate_init": -2.0, "swap_images": True}),
        ("sb-dual-swapped-anchor0.1-choices-points-4xdata-dense-5x",
         {"cls_anchor": 0.1, "data": "choices-points-4x-dense", "swap_images": True}),
        ("sb-full-choices-points-4xdata-dense-5x", {"mode": "full", "data": "choices-points-4x-dense"}),
        ("sb-lora-choices-points-4xdata-dense-5x", {"mode": "lora", "data": "choices-points-4x-dense"}),
        ("sb-lora-lr2e-4-choices-points-4xdata-dense-5x",
         {"mode": "lora", "data": "choices-points-4x-dense", "encoder_lr": 2e-4}),
        ("sb-dual-gate-2-choices-points-4xdata-dense-5x", {"data": "choices-points-4x-dense", "gate_init": -2.0}),
    ],
)  # fmt: skip
def test_matched_arms_differ_from_the_default_only_where_named(name, differs):
    """The matched comparisons (full FT on the default's data, the pre-trained LM's long stage 3, the CLS anchor,
    the no-language controls, the stage-2 stop) change the paper's arm in the named fields and nothing else, so a
    difference in the results is theirs; the default recipe is the paper's arm with the CLS anchor at 0.1 on 4x
    the scenes and 4x the A/B turns per image (a data variant with the same kind of turn, only more of them), with
    the channel gates starting at -2."""
    from dataclasses import asdict

    from spatialboost.studies.replicate.study import DATA, PAPER_ARM

    assert DATA["choices-points-4x"] == replace(DATA["choices-points"], fraction=4.0)
    ((kind, turns),) = DATA["choices-points"].extra_turns
    assert DATA["choices-points-4x-dense"] == replace(
        DATA["choices-points-4x"], extra_turns=((kind, 4 * turns),)
    )
    assert DATA["choices-points-4x-fine"] == replace(
        DATA["choices-points-4x"], extra_turns=((f"{kind}_fine", turns),)
    )
    assert DATA["choices-points-4x-dense48"] == replace(
        DATA["choices-points-4x"], extra_turns=((kind, 8 * turns),), max_length=4096
    )
    assert DATA["choices-points-8x-dense"] == replace(DATA["choices-points-4x-dense"], fraction=8.0)

    default, arm = asdict(ARMS.get(PAPER_ARM)), asdict(ARMS.get(name))
    changed = {k: v for k, v in arm.items() if default[k] != v and k not in ("name", "label")}
    assert changed == differs


@pytest.mark.parametrize(
    ("name", "paper_arm"),
    [("head-depth-gate-2-4xdata-dense-5x", "head-depth"), ("head-seg-gate-2-4xdata-dense-5x", "head-seg"),
     ("simple-ft-4xdata-dense-5x", "simple-ft")],
)  # fmt: skip
def test_tables_b_and_e_have_rows_on_the_defaults_images_and_steps(tmp_path, monkeypatch, name, paper_arm):
    """The linear heads and simple FT matched to the default: its stage-3 data and length, and (heads) its
    adapter's gate init; each in a run dir of its own, so the 80-step rows of earlier studies stay as they are."""
    from dataclasses import asdict

    from spatialboost.studies.replicate import runner

    default, arm, paper = ARMS.get(DEFAULT_ARM), ARMS.get(name), ARMS.get(paper_arm)
    changed = {k: v for k, v in asdict(arm).items() if asdict(paper)[k] != v and k not in ("name", "label")}
    expected = {"data": default.data, "steps_scale": default.steps_scale}
    assert changed == expected | ({"gate_init": default.gate_init} if paper.trainer == "dense" else {})
    study = dataless_study(tmp_path, monkeypatch)
    assert runner.stage3_steps(study, arm) == runner.stage3_steps(study, default)
    assert runner.run_dir(study, arm, 0) != runner.run_dir(study, paper, 0)


def test_anchor_and_swapped_arms_reach_stage3_and_train_in_their_own_run_dirs(tmp_path, monkeypatch):
    from spatialboost.studies.replicate import runner
    from spatialboost.studies.replicate.study import PAPER_ARM

    study = dataless_study(tmp_path, monkeypatch)
    default, anchored = ARMS.get(PAPER_ARM), ARMS.get(DEFAULT_ARM)
    assert runner.train_config(study, anchored, 0, tmp_path).stages.encoder.cls_anchor == 0.1
    assert runner.train_config(study, default, 0, tmp_path).stages.encoder.cls_anchor == 0.0
    assert runner.run_dir(study, anchored, 0) != runner.run_dir(study, default, 0)
    assert runner.recipe_dict(study, anchored)["cls_anchor"] == 0.1
    assert "cls_anchor" not in runner.recipe_dict(study, default)  # earlier studies' records keep their shape
    swapped = ARMS.get("sb-dual-swapped-choices-points-5x")
    assert runner.train_config(study, swapped, 0, tmp_path).data.swap_images
    assert not runner.train_config(study, default, 0, tmp_path).data.swap_images
    assert runner.run_dir(study, swapped, 0) != runner.run_dir(study, default, 0)


def test_the_48_turn_arm_trains_on_conversations_of_up_to_4096_tokens_in_a_run_dir_of_its_own(
    tmp_path, monkeypatch
):
    """48 A/B turns make a ~3.6k-token conversation: at the recipe's 2048 its later turns would be cut."""
    from spatialboost.studies.replicate import runner

    study = dataless_study(tmp_path, monkeypatch)
    dense48, default = ARMS.get(DENSE48_ARM), ARMS.get(DEFAULT_ARM)
    assert runner.train_config(study, dense48, 0, tmp_path).data.max_length == 4096
    assert runner.train_config(study, default, 0, tmp_path).data.max_length == 2048
    assert runner.shared_config(study, 0).data.max_length == 2048  # stages 1+2 are the default's
    assert runner.run_dir(study, dense48, 0) != runner.run_dir(study, default, 0)


def test_the_frozen_projector_arm_trains_only_the_encoder_in_stage_3_in_a_run_dir_of_its_own(
    tmp_path, monkeypatch
):
    from spatialboost.studies.replicate import runner

    study = dataless_study(tmp_path, monkeypatch)
    frozen, default = ARMS.get(FROZEN_PROJECTOR_ARM), ARMS.get(DEFAULT_ARM)
    assert runner.train_config(study, frozen, 0, tmp_path).stages.encoder.train_projector is False
    assert runner.train_config(study, default, 0, tmp_path).stages.encoder.train_projector is True
    assert runner.run_dir(study, frozen, 0) != runner.run_dir(study, default, 0)
    assert runner.recipe_dict(study, frozen)["train_projector"] is False
    assert "train_projector" not in runner.recipe_dict(study, default)
    val = ARMS.get(FROZEN_PROJECTOR_ARM.replace("sb-dual-", "val-"))
    shared_run = runner.run_dir(study, val, 0) == runner.run_dir(study, frozen, 0)
    assert val.search and shared_run  # one training run, probed on two splits


def test_the_replay_arm_trains_its_own_stage_2_on_main_and_reading_data_from_the_shared_stage_1(tmp_path,
                                                                                                monkeypatch):  # fmt: skip
    from spatialboost.studies.replicate import data, runner

    study = dataless_study(tmp_path, monkeypatch)
    monkeypatch.setattr(data, "ensure_reading_dataset", lambda *a, **k: tmp_path / "reading")
    ran = []
    monkeypatch.setattr(runner, "run_training", lambda cfg: ran.append(copy.deepcopy(cfg)))
    replay = ARMS.get("val-replay-anchor0.1-choices-points-5x")
    shared = runner.ensure_shared(study, 0, own=replay.own_stage2)
    plain, mixed = ran
    assert plain.stages.run == ["align", "instruct"] and not plain.stages.instruct.data
    assert mixed.stages.run == ["instruct"] and mixed.init_from == str(plain.run_dir)
    assert mixed.stages.instruct.data == {"datasets": [str(tmp_path / "main"), str(tmp_path / "reading")]}
    assert shared == Path(mixed.run_dir) == Path(f"{plain.run_dir}-replay")
    assert mixed.model.tokenizer == str(Path(plain.run_dir) / "tokenizer")
    stage3 = runner.train_config(study, replay, 0, shared)
    assert stage3.init_from == str(shared) and stage3.model.tokenizer == mixed.model.tokenizer
    assert runner.run_dir(study, replay, 0) != runner.run_dir(
        study, ARMS.get("val-anchor0.1-choices-points-5x"), 0
    )
    assert runner.recipe_dict(study, replay)["stage2_replay"] is True


def test_the_no_points_arm_trains_its_own_stage_2_on_that_variant_from_the_shared_stage_1(tmp_path,
                                                                                          monkeypatch):  # fmt: skip
    """Stage 3's A/B point task held out of stage 2: a stage 2 of its own on main without its point turns, on
    the shared stage 1 and its tokenizer; stage 3 (the default's) reads from it."""
    from spatialboost.studies.replicate import runner
    from spatialboost.studies.replicate.study import DATA

    study = dataless_study(tmp_path, monkeypatch)
    ran = []
    monkeypatch.setattr(runner, "run_training", lambda cfg: ran.append(copy.deepcopy(cfg)))
    arm = ARMS.get("val-s2-no-points-anchor0.1-choices-points-5x")
    assert "choice_closer_point" not in DATA[arm.stage2_data].extra_turns_for({"choice_closer_point": 2})
    shared = runner.ensure_shared(study, 0, own=arm.own_stage2)
    plain, own = ran
    assert own.stages.run == ["instruct"] and own.init_from == str(plain.run_dir)
    assert own.stages.instruct.data == {"datasets": [str(tmp_path / "main-no-points")]}
    assert shared == Path(own.run_dir) == Path(f"{plain.run_dir}-s2-main-no-points")
    assert (
        runner.plain_run(shared) == Path(plain.run_dir) == runner.plain_run(Path(f"{plain.run_dir}-replay"))
    )
    stage3 = runner.train_config(study, arm, 0, shared)
    assert stage3.init_from == str(shared) and stage3.model.tokenizer == str(
        Path(plain.run_dir) / "tokenizer"
    )
    default = ARMS.get("val-anchor0.1-choices-points-5x")
    assert runner.run_dir(study, arm, 0).name == runner.run_dir(study, default, 0).name + "-s2-main-no-points"
    assert runner.recipe_dict(study, arm)["stage2_data"] == "main-no-points"


def test_the_reads_arm_trains_its_own_stage_2_on_main_plus_reading_data_from_scenes_stage_3_never_sees(
    tmp_path, monkeypatch
):
    """READS_ARM: a stage 2 of its own on main beside the default's A/B turns on scenes of their own (scene seed
    3, none of stage 3's, the diagnostics' or the held-out ones), on the shared stage 1; val and test twins share
    it, and stage 3 (the default's) reads from it."""
    from spatialboost.studies.replicate import runner
    from spatialboost.studies.replicate.study import DATA, READS_ARM

    study = dataless_study(tmp_path, monkeypatch)
    ran = []
    monkeypatch.setattr(runner, "run_training", lambda cfg: ran.append(copy.deepcopy(cfg)))
    arm, val = ARMS.get(READS_ARM), ARMS.get(READS_ARM.replace("sb-dual-", "val-"))
    default = ARMS.get(DENSE_ARM)
    assert replace(arm, name=default.name, label=default.label, stage2_plus="") == default
    other = DATA[arm.stage2_plus]
    assert other.seed not in {0, 1, 2} | {v.seed for n, v in DATA.items() if n != arm.stage2_plus}
    assert other.extra_turns == DATA[default.data].extra_turns  # the default's stage-3 questions
    shared = runner.ensure_shared(study, 0, own=arm.own_stage2)
    plain, own = ran
    assert plain.stages.run == ["align", "instruct"] and not plain.stages.instruct.data
    assert own.stages.run == ["instruct"] and own.init_from == str(plain.run_dir)
    assert own.stages.instruct.data == {"datasets": [*plain.data.datasets, str(tmp_path / arm.stage2_plus)]}
    assert shared == Path(own.run_dir) == Path(f"{plain.run_dir}-s2plus-{arm.stage2_plus}")
    assert runner.plain_run(shared) == Path(plain.run_dir)
    assert runner.run_dir(study, arm, 0) == runner.run_dir(study, val, 0)
    assert (
        runner.run_dir(study, arm, 0).name
        == runner.run_dir(study, default, 0).name + f"-s2plus-{arm.stage2_plus}"
    )
    assert runner.recipe_dict(study, arm)["stage2_plus"] == arm.stage2_plus
    assert runner.train_config(study, arm, 0, shared).init_from == str(shared)


def test_the_stop_at_accuracy_arm_trains_its_own_stage_2_that_checks_its_ab_accuracy(tmp_path, monkeypatch):
    """A stage 2 of its own on the shared stage 1 that ends at STAGE2_STOP held-out A/B accuracy, checked about
    STOP_CHECKS times over its length; its val and test twins share it, and stage 3 reads from it."""
    from spatialboost.studies.replicate import runner
    from spatialboost.studies.replicate.study import STAGE2_STOP

    study = dataless_study(tmp_path, monkeypatch)
    ran = []
    monkeypatch.setattr(runner, "run_training", lambda cfg: ran.append(copy.deepcopy(cfg)))
    arm = ARMS.get(f"val-s2stop{STAGE2_STOP:g}-anchor0.1-choices-points-5x")
    twin = ARMS.get(f"sb-dual-s2stop{STAGE2_STOP:g}-anchor0.1-choices-points-5x")
    shared = runner.ensure_shared(study, 0, own=arm.own_stage2)
    plain, own = ran
    assert plain.stages.instruct.stop_at_ab_accuracy == 0 and plain.image_gain.every == 0
    assert own.stages.run == ["instruct"] and own.init_from == str(plain.run_dir)
    assert own.stages.instruct.stop_at_ab_accuracy == STAGE2_STOP == arm.stage2_stop
    steps = own.stages.instruct.max_steps
    assert own.image_gain.every == max(1, round(steps / runner.STOP_CHECKS)) and own.image_gain.datasets
    assert own.stages.instruct.data == {"datasets": list(plain.data.datasets)}  # main, as the shared stage 2
    assert shared == Path(own.run_dir) == Path(f"{plain.run_dir}-s2stop{STAGE2_STOP:g}")
    assert runner.plain_run(shared) == Path(plain.run_dir)
    assert runner.plain_run(Path(f"{plain.run_dir}-replay-s2-x-s2stop0.5")) == Path(plain.run_dir)
    default = ARMS.get("val-anchor0.1-choices-points-5x")
    assert runner.run_dir(study, arm, 0) == runner.run_dir(study, twin, 0)
    assert (
        runner.run_dir(study, arm, 0).name
        == runner.run_dir(study, default, 0).name + f"-s2stop{STAGE2_STOP:g}"
    )
    assert runner.recipe_dict(study, arm)["stage2_stop_at_ab_accuracy"] == STAGE2_STOP
    stage3 = runner.train_config(study, arm, 0, shared)
    assert stage3.init_from == str(shared) and stage3.stages.encoder.cls_anchor == 0.1


def _dense_data(n_samples: int = 4, side: int = 32, classes: int = 3) -> DenseData:
    g = torch.Generator().manual_seed(0)
    m = n_samples + 1  # sample 0 has two views
    depth = 1.0 + 3.0 * torch.rand(m, side, side, generator=g)
    seg = torch.randint(1, classes, (m, side, side), generator=g)
    groups = [[0, 1]] + [[i] for i in range(2, m)]
    return DenseData(torch.randn(m, 3, side, side, generator=g), depth, seg, groups, classes)


@pytest.mark.parametrize("target", ["depth", "seg"])
def test_dense_head_trainer_trains_only_head_attn_plus_and_gates(target):
    from spatialboost.models.dual_channel import boost_encoder
    from spatialboost.models.encoders import create_encoder

    enc = boost_encoder(create_encoder("tiny-dinov2", pretrained=False, seed=0), gate="channel")
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    cfg = DenseConfig(target=target, steps=3, head_warmup_steps=2, batch_size=2, lr=1e-2, lr_gates=1e-1)
    head, result = train_dense_head(enc, _dense_data(), cfg)
    assert len(result.warmup_losses) == 2 and len(result.losses) == 3
    changed = {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".plus." in n or n.endswith(".gate") for n in changed)
    assert any(".plus." in n for n in changed)
    assert not any(p.requires_grad for p in enc.parameters())
    assert head.linear.weight.abs().sum() > 0


def test_dense_head_steps_use_whole_samples_deterministically():
    data = _dense_data()
    steps = [step_images(data, s, 2, seed=3) for s in range(4)]
    assert steps == [step_images(data, s, 2, seed=3) for s in range(4)]
    epoch = sorted(i for s in steps[:2] for i in s)
    assert epoch == list(range(len(data.pixels)))  # one epoch covers every view of every sample
    assert any(0 in s and 1 in s for s in steps[:2])  # the views of a sample travel together


def test_spatial_content_counts_queried_points(tmp_path):
    from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig
    from spatialboost.datagen.sources import GenerateConfig, SyntheticSource
    from spatialboost.studies.replicate.diagnostics import POINT, spatial_content

    assert POINT.findall("The depth at (9, 41) is 1.94 m; (52, 29)") == [("9", "41"), ("52", "29")]
    cfg = GenerateConfig(scenes=3, synthetic=SyntheticConfig(image_size=32))
    write_dataset(SyntheticSource(cfg), WriteSpec(tmp_path / "d", 3, 0, 16, cfg.conversation))
    stats = spatial_content(tmp_path / "d")
    assert stats["samples"] == 3 and stats["points_per_image"] > 0 and 0 < stats["digit_share"] < 1


@pytest.mark.slow
def test_report_only_rewrites_the_report_from_finished_arms(quick_study, capsys):
    (quick_study / "results.md").unlink()
    assert main(["replicate", "--report-only", "--out", str(quick_study)]) == 0
    text = (quick_study / "results.md").read_text()
    assert "--seeds 1 --quick" in text  # the study's own command, from command.json
    assert "LoRA through the LLM" in capsys.readouterr().out


def test_plan_table_estimates_what_is_left_from_the_measured_jobs():
    summary = {"config": {"seeds": 3, "arms": ["base", "sb-full", "sb-lora"], "search": True},
               "arms": {"base": {"seeds": [0, 1, 2], "seconds": [6.0, 6.0, 6.0]},
                        "sb-full": {"seeds": [0], "seconds": [240.0]}}}  # fmt: skip
    table = report.plan_table(summary)
    assert "| base | test | 3 / 3 | 0.1 | 0 |" in table
    assert "| sb-full | test | 1 / 3 | 4.0 | 8 |" in table  # two seeds left at 4 min each
    assert "| sb-lora | test | 0 / 3 |  | ? |" in table
    assert "8 min of single-job compute, plus 3 job(s) of arms not started yet" in table
    assert report.missing_jobs(summary) == ["sb-full seed 1", "sb-full seed 2", "sb-lora seed 0", "sb-lora seed 1",
                                            "sb-lora seed 2"]  # fmt: skip


def test_only_seeds_runs_those_seeds_of_the_plan_and_refuses_seeds_it_lacks():
    """One process per seed runs a study in parallel: each plans only its seeds, in the full plan's order."""
    import argparse

    from spatialboost.cli.replicate import add_arguments, build_config
    from spatialboost.studies.replicate.runner import plan_jobs

    cfg = make_config("unused", seeds=3, quick=True)
    cfg.arms, cfg.val_seeds = ["base", "sb-dual", "val-gate-2"], 2
    full = [(a.name, s) for a, s in plan_jobs(cfg)]
    cfg.only_seeds = [1]
    cfg.validate()
    assert [(a.name, s) for a, s in plan_jobs(cfg)] == [j for j in full if j[1] == 1]
    cfg.only_seeds = [3]
    with pytest.raises(ConfigError, match="only_seeds"):
        cfg.validate()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert build_config(parser.parse_args(["--quick", "--out", "x", "--only-seeds", "0,2"])).only_seeds == [
        0,
        2,
    ]


def test_val_seeds_plan_every_search_arm_on_each_val_seed():
    from spatialboost.studies.replicate.runner import plan_jobs

    cfg = make_config("unused", seeds=1, quick=True)
    cfg.arms, cfg.val_seeds = ["base", "val-base", "val-gate-2", "val-steps3x"], 2
    cfg.validate()
    jobs = [(a.name, s) for a, s in plan_jobs(cfg)]
    assert jobs == [("val-gate-2", 0), ("val-steps3x", 0), ("val-gate-2", 1), ("val-steps3x", 1), ("base", 0),
                    ("val-base", 0), ("val-base", 1)]  # fmt: skip
    summary = {"config": {"seeds": 1, "val_seeds": 2, "arms": cfg.arms, "search": True},
               "arms": {"val-gate-2@val": {"seeds": [0, 1]}, "val-steps3x@val": {"seeds": [0]}}}  # fmt: skip
    assert report.missing_jobs(summary) == [
        "base seed 0",
        "val-base seed 0",
        "val-base seed 1",
        "val-steps3x seed 1",
    ]
    cfg.val_seeds = 0
    with pytest.raises(ValueError, match="val_seeds must be >= 1"):
        cfg.validate()


def test_tuned_arm_picks_the_lowest_mean_over_the_val_seeds(tmp_path):
    """Seed 0 alone favours val-gate-2; the mean over both val seeds favours val-steps3x."""
    from spatialboost.studies.replicate import runner

    cfg = make_config(str(tmp_path), seeds=1, quick=True)
    cfg.val_seeds = 2
    study = runner.Study(cfg)
    for name, rmses in {
        "val-gate-2": (0.50, 0.90),
        "val-steps3x": (0.60, 0.62),
        "val-base": (0.1, 0.1),
    }.items():
        for seed, rmse in enumerate(rmses):
            path = study.result_path(ARMS.get(name), seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"metrics": {"depth": {"rmse": rmse}}}))
    tuned = runner.resolve_tuned(study, ARMS.get("sb-tuned"))
    assert tuned.name == "sb-tuned" and tuned.steps_scale == ARMS.get("val-steps3x").steps_scale
    tuning = json.loads((tmp_path / "tuning.json").read_text())
    assert tuning["chosen"] == "val-steps3x" and tuning["per_seed"]["val-gate-2"] == [0.5, 0.9]
    assert "val-base" not in tuning["candidates"]  # a reference, not a candidate
    assert tuning["candidates"]["val-gate-2"] == pytest.approx(0.7)


def test_report_only_with_arms_reports_the_plan_of_those_arms():
    """A study run in several commands is reported as one: the named arms' plan, not the last command's."""
    summary = {"config": {"seeds": 3, "arms": ["base"], "search": True, "sizes": {"scenes": 8}},
               "arms": {"base": {"seeds": [0, 1, 2]}, "sb-full": {"seeds": [0, 1]}}}  # fmt: skip
    assert report.missing_jobs(summary) == []
    plan = {"arms": ["base", "sb-full"], "seeds": 3, "val_seeds": 1, "search": True}
    replanned = report.replan(summary, plan)
    assert replanned["missing"] == ["sb-full seed 2"] and not replanned["complete"]
    assert replanned["config"]["sizes"] == {"scenes": 8} and summary["config"]["arms"] == ["base"]


def test_reading_depth_rows_correlate_each_seeds_stage_2_accuracy_with_its_paired_depth_change():
    def col(values, seeds):
        return {
            "values": values,
            "seeds": seeds,
            "mean": sum(values) / len(values),
            "std": 0.0,
            "n": len(values),
        }

    def diag(acc):
        return {"image_gain": {"stage2": {"choice": {"acc_right": acc, "acc_other": 0.5}}}}

    seeds = [0, 1, 2, 3, 4]
    base = col(
        [1.0, 1.0, 2.0, 1.0, 1.0, 1.0], [*seeds, 5]
    )  # seed 5: the base only; seed 2: its own probe head
    acc = [0.6, 0.7, 0.8, 0.9, 0.5]
    arm = col([0.8, 0.85, 1.8, 0.95, 0.75], seeds)  # -20, -15, -10, -5, -25%: worse readers move depth more
    summary = {"arms": {"base": {"columns": {"depth RMSE (m)": base}, "diagnostics": {}},
                        "x": {"label": "X", "columns": {"depth RMSE (m)": arm},
                              "diagnostics": {str(s): diag(a) for s, a in zip(seeds, acc, strict=True)}},
                        "short": {"label": "S", "columns": {"depth RMSE (m)": col([0.9] * 3, [0, 1, 2])},
                                  "diagnostics": {s: diag(0.7) for s in range(3)}}}}  # fmt: skip
    (row,) = report.reading_depth_rows(summary, ["base", "x", "short"])
    assert row["arm"] == "x" and row["seeds"] == seeds
    assert row["change"] == pytest.approx([-20.0, -15.0, -10.0, -5.0, -25.0])
    assert row["r"] == pytest.approx(1.0) and row["p"] < 1e-3
    table = report.reading_depth_table(summary, ["x"])
    assert "| X | 0-4 | 60.0 / 70.0 / 80.0 / 90.0 / 50.0% |" in table and "+1.00" in table
    summary["arms"]["x"]["diagnostics"]["3"] = {}  # 4 seeds left with an accuracy: still a row
    assert report.reading_depth_rows(summary, ["x"])[0]["seeds"] == [0, 1, 2, 4]
    summary["arms"]["x"]["diagnostics"]["4"] = {}
    assert report.reading_depth_rows(summary, ["x"]) == []


def test_reading_table_reads_the_shared_stage_2_from_whichever_shared_arm_has_the_most_seeds():
    def diag(acc, gain):
        level = {"gain": gain, "loss_right": 1.0, "loss_other": 1.0 + gain, "stderr": 0.001}
        return {"image_gain": {"stage2": {"all": level, "choice": {"acc_right": acc, "acc_other": 0.5,
                                                                   "questions": 100}}}}  # fmt: skip

    def arm(accs, gain=0.01):
        return {"diagnostics": {str(s): diag(a, gain) for s, a in enumerate(accs)}}

    assert ARMS.get(DEFAULT_ARM).shared_stage2 and ARMS.get("sb-dual").shared_stage2
    own = next(n for n, a in ARMS.items() if a.trainer == "llm" and a.stage2_replay)
    assert not ARMS.get(own).shared_stage2 and not ARMS.get("base").shared_stage2
    summary = {"arms": {"sb-dual": arm([0.6, 0.7]), DEFAULT_ARM: arm([0.7, 0.8, 0.9]),
                        own: arm([0.99] * 5, gain=0.5), "base": {"diagnostics": {}}}}  # fmt: skip
    assert report.shared_reading_arm(summary) == DEFAULT_ARM  # most seeds; the own stage 2 never counts
    table = report.reading_table(summary)
    assert (
        "0.8000 ± 0.1000 with the right images" in table
        and f"Training seeds 0-2, as recorded with `{DEFAULT_ARM}`" in table
    )
    summary["arms"]["sb-dual"] = arm([0.6, 0.7, 0.8])
    assert report.shared_reading_arm(summary) == "sb-dual"  # a tie: the paper's arm
    del summary["arms"]["sb-dual"], summary["arms"][DEFAULT_ARM]
    assert report.reading_table(summary).startswith("_No image gain was measured")


def test_the_long_warm_up_size_differs_from_real_in_stage_1_alone():
    from dataclasses import asdict

    from spatialboost.studies.replicate.study import SIZES

    real, long = asdict(SIZES["real"]), asdict(SIZES["real-a800"])
    assert {k for k in real if real[k] != long[k]} == {"align_steps"}
    assert long["align_steps"] == 2 * real["align_steps"]


def test_every_real_size_checkpoints_within_each_trained_stage():
    """A job killed mid-stage resumes from a checkpoint, not from the stage's start: every real-encoder size
    saves at least once inside stage 1, stage 2 and the 5x arms' stage 3."""
    from spatialboost.studies.replicate.study import SIZES

    for name in ("real", "real-224", "real-a800", "real-lm"):
        s = SIZES[name]
        assert s.checkpoint_every < min(s.align_steps, s.instruct_steps, 5 * s.encoder_steps), name

"""End to end: ``spatialboost probe`` on tiny encoders and the synthetic benchmark; base pairing; report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval_stubs import fake_scene
from spatialboost.cli import main
from spatialboost.eval.job import probe_before_after
from spatialboost.eval.report import markdown_table
from spatialboost.eval.runner import ProbeConfig, aggregate
from spatialboost.models.encoders import create_encoder

FAST = ["probes.depth.epochs=3", "probes.seg.epochs=3", "probes.cls_linear.epochs=5", "data.num_train=12",
        "data.num_test=4"]  # fmt: skip


def _tiny_cfg(tmp_path, **kw) -> ProbeConfig:
    cfg = ProbeConfig(seeds=2, out=str(tmp_path))
    cfg.data.num_train, cfg.data.num_test = 12, 4
    cfg.features.image_size = 32
    cfg.probes.depth.epochs = cfg.probes.seg.epochs = 3
    cfg.probes.cls_linear.epochs = 5
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_cli_probe_end_to_end(tmp_path):
    out = tmp_path / "out"
    rc = main(["probe", "--encoder", "tiny-vit", "--baseline", "tiny-vit", "--task", "all", "--data", "synthetic",
               "--seeds", "2", "--out", str(out), "--image-size", "48", *FAST])  # fmt: skip
    assert rc == 0
    for name in ("results.json", "results.md", "bars.png", "depth_grid.png", "config.yaml"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    enc, base = "encoder (tiny-vit)", "baseline (tiny-vit)"  # named by the flags, never "boosted"
    assert res["pairs"] == {enc: base} and res["seeds"] == [0, 1] and list(res["encoders"]) == [base, enc]
    assert {r["probe"] for r in res["runs"]} == {"depth", "seg", "cls-linear", "cls-knn"}
    # the base ran with exactly the same seeds as the boosted encoder, for every probe
    for probe in ("depth", "seg", "cls-linear", "cls-knn"):
        seeds = {e: sorted(r["seed"] for r in res["runs"] if r["probe"] == probe and r["encoder"] == e)
                 for e in (base, enc)}  # fmt: skip
        assert seeds[base] == seeds[enc] == [0, 1]
    depth = next(r for r in res["runs"] if r["probe"] == "depth")
    assert depth["protocol"]["image_size"] == 48 and depth["protocol"]["layers"] == "last"
    assert depth["protocol"]["epochs"] == 3 and "lr" in depth["protocol"]
    md = (out / "results.md").read_text()
    assert "| baseline (tiny-vit) | encoder (tiny-vit) | Δ encoder (tiny-vit) vs baseline (tiny-vit) |" in md


def test_cli_user_errors(tmp_path, capsys):
    assert main(["probe", "--encoder", "no-such-encoder", "--out", str(tmp_path)]) == 2
    assert "unknown encoder" in capsys.readouterr().err
    assert main(["probe", "--encoder", "tiny-vit", "--data", "voc:/nonexistent", "--out", str(tmp_path)]) == 2
    assert main(["probe", "--encoder", "tiny-vit", "seeds=0"]) == 2


def test_before_after_same_encoder_gives_zero_delta(tmp_path):
    enc = create_encoder("tiny-vit", seed=3)
    results, table = probe_before_after(enc, enc, _tiny_cfg(tmp_path), scene_fn=fake_scene, plots=False)
    rows = results.summary["rows"]
    for probe in ("depth", "seg", "cls-linear", "cls-knn"):
        a = {r["metric"]: r["mean"] for r in rows if r["encoder"] == "base" and r["probe"] == probe}
        b = {r["metric"]: r["mean"] for r in rows if r["encoder"] == "boosted" and r["probe"] == probe}
        assert a == b and a  # determinism: same features + same seeds -> same numbers
    assert "| depth | rmse ↓ |" in table and "+0.0000" in table
    # the depth rows keep every seed's per-image values (the test images' own noise); the others have none
    depth = next(
        r for r in rows if r["encoder"] == "base" and r["probe"] == "depth" and r["metric"] == "rmse"
    )
    n_test = results.summary["dataset"]["n_test"]
    assert [len(v) for v in depth["per_item"]] == [n_test] * len(depth["seeds"])
    assert np.mean(depth["per_item"], axis=1) == pytest.approx(depth["values"])
    assert not any("per_item" in r for r in rows if r["probe"] != "depth")


def test_aggregate_keeps_per_image_values_only_where_every_seed_has_them():
    def run(seed, per_image):
        return {"encoder": "e", "probe": "depth", "task": "depth", "seed": seed, "metrics": {"rmse": 1.0},
                "protocol": {}, **({"per_image": {"rmse": per_image}} if per_image else {})}  # fmt: skip

    (row,) = aggregate([run(0, [1.0, 1.0]), run(1, [0.5, 1.5])])
    assert row["per_item"] == [[1.0, 1.0], [0.5, 1.5]]
    (row,) = aggregate([run(0, [1.0, 1.0]), run(1, None)])
    assert "per_item" not in row


def test_aggregate_mean_std_and_protocol():
    runs = [{"encoder": "e", "probe": "depth", "task": "depth", "seed": s, "metrics": {"rmse": v},
             "protocol": {"head": "depth-linear", "seed": s, "epochs": 3}} for s, v in ((0, 1.0), (1, 3.0))]  # fmt: skip
    (row,) = aggregate(runs)
    assert row["mean"] == 2.0 and row["std"] == pytest.approx(np.sqrt(2.0)) and row["lower_is_better"]
    assert row["protocol"] == {"head": "depth-linear", "epochs": 3} and row["seeds"] == [0, 1]
    summary = {"rows": [row], "encoders": {"e": {}}, "pairs": {}, "seeds": [0, 1],
               "dataset": {"spec": "synthetic", "n_train": 1, "n_test": 1}}  # fmt: skip
    assert "2.0000 ± 1.4142" in markdown_table(summary)


def test_saved_boosted_encoder_brings_its_base(tmp_path):
    from spatialboost.eval.runner import pair_encoders
    from spatialboost.models import export
    from spatialboost.models.dual_channel import boost_encoder

    base = create_encoder("tiny-dinov2", seed=0)
    boosted = boost_encoder(create_encoder("tiny-dinov2", seed=0))
    with torch.no_grad():
        for name, p in boosted.named_parameters():
            if "plus" in name or "gate" in name:
                p.add_(0.5)
    export.save_encoder(boosted, tmp_path / "boosted")
    encs, pairs = pair_encoders(str(tmp_path / "boosted"), None)
    enc, found = "encoder (boosted)", "baseline (base of boosted)"
    assert pairs == {enc: found} and list(encs) == [found, enc]
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        ref = base.forward_features(x).patch
        assert torch.allclose(encs[found].forward_features(x).patch, ref, atol=1e-5)
        assert not torch.allclose(encs[enc].forward_features(x).patch, ref, atol=1e-3)
    alone, no_pair = pair_encoders("tiny-vit", None)
    assert list(alone) == ["encoder (tiny-vit)"] and no_pair == {}
    both, pair = pair_encoders("tiny-vit", "tiny-dinov2")
    assert list(both) == ["baseline (tiny-dinov2)", "encoder (tiny-vit)"]
    assert pair == {"encoder (tiny-vit)": "baseline (tiny-dinov2)"}


def test_probe_command_seeds_what_it_builds(tmp_path):
    """Two runs of one command give identical numbers; ``--encoder X --baseline X`` builds the same network twice."""
    results = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        rc = main(["probe", "--encoder", "tiny-vit", "--baseline", "tiny-vit", "--task", "depth", "--data",
                   "synthetic", "--seeds", "1", "--out", str(out), "--image-size", "32", *FAST])  # fmt: skip
        assert rc == 0
        results.append(json.loads((out / "results.json").read_text()))
    first, second = results
    assert [r["metrics"] for r in first["runs"]] == [r["metrics"] for r in second["runs"]]
    enc, base = "encoder (tiny-vit)", "baseline (tiny-vit)"
    ids = {n: e["identity"]["weights_sha256"] for n, e in first["encoders"].items()}
    assert ids[base] == ids[enc] == second["encoders"][base]["identity"]["weights_sha256"]
    by_encoder = {r["encoder"]: r["metrics"] for r in first["runs"]}
    assert by_encoder[base] == by_encoder[enc]
    assert first["config"]["encoder_seed"] == 0


def test_default_image_size_is_the_probed_encoders(tmp_path):
    """``--image-size`` defaults to the encoder's own size (tiny-dinov2: 32), not the baseline's (tiny-vit: 64)."""
    out = tmp_path / "out"
    rc = main(["probe", "--encoder", "tiny-dinov2", "--baseline", "tiny-vit", "--task", "cls", "--data",
               "synthetic", "--seeds", "1", "--out", str(out), *FAST])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert {r["protocol"]["image_size"] for r in res["runs"]} == {32}


def test_aggregate_takes_each_probes_test_set_size():
    runs = [{"encoder": "e", "probe": p, "seed": 0, "protocol": {}, "metrics": {m: 0.5}}
            for p, m in (("cls-knn", "top1"), ("sem3d", "acc"))]  # fmt: skip
    rows = {r["probe"]: r for r in aggregate(runs, {"cls-knn": 4})}
    assert rows["cls-knn"]["sampling_se"] == pytest.approx(0.25) and "sampling_se" not in rows["sem3d"]


def test_a_mixed_2d_and_3d_job_keeps_the_2d_test_size_and_its_tasks(tmp_path):
    """One path for every bench: the 2D accuracies keep their sampling s.e. beside 3D rows (they lost it when
    the rows were re-aggregated), the summary's dataset is the 2D one and its config names every task."""
    from spatialboost.eval.job import run_job

    cfg = _tiny_cfg(tmp_path, seeds=1, tasks=["cls", "corr"])
    cfg.probes3d.num_test = 1
    res = run_job({"enc": create_encoder("tiny-vit", seed=0)}, cfg, scene_fn=fake_scene).summary
    assert {r["probe"] for r in res["rows"]} == {"cls-linear", "cls-knn", "corr"}
    top1 = [r for r in res["rows"] if r["metric"] == "top1"]
    assert len(top1) == 2 and all("sampling_se" in r for r in top1)
    assert res["dataset"]["n_test"] == 4 and res["config"]["tasks"] == ["cls", "corr"]
    assert [r["task"] for r in res["runs"]] == ["cls", "cls", "3d"] and set(res["benches"]) == {"3d"}

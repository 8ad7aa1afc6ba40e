"""Probe reports say "within noise" unless a delta beats the stated rule; plots show differences honestly."""

from __future__ import annotations

import numpy as np
import pytest

from spatialboost.eval.report import bars_figure, delta_text, depth_grid_figure, markdown_table


def _row(enc: str, metric: str, values: list[float], lower: bool) -> dict:
    v = np.asarray(values, float)
    return {"encoder": enc, "probe": "depth" if lower else "seg", "metric": metric, "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v), "values": values,
            "lower_is_better": lower}  # fmt: skip


def _summary(rows: list[dict], seeds: int = 3) -> dict:
    return {"rows": rows, "encoders": {"base": {}, "boosted": {}}, "pairs": {"boosted": "base"},
            "seeds": list(range(seeds)), "dataset": {"spec": "synthetic", "n_train": 8, "n_test": 4}}  # fmt: skip


@pytest.mark.parametrize(
    "base, boosted, lower, verdict",
    [
        ([1.000, 1.005, 0.995], [1.002, 1.007, 0.997], True, "within noise"),  # +0.002, std 0.005
        ([1.000, 1.005, 0.995], [0.90, 0.905, 0.895], True, "better"),  # -0.1 >> 2 * 0.007
        ([1.000, 1.005, 0.995], [1.10, 1.105, 1.095], True, "worse"),
        ([0.50, 0.51, 0.49], [0.60, 0.61, 0.59], False, "better"),  # higher is better
        ([0.50, 0.51, 0.49], [0.51, 0.52, 0.50], False, "within noise"),
        ([0.50], [0.90], False, "1 seed"),  # no noise estimate: no verdict either way
    ],
)
def test_delta_verdict_follows_the_noise_rule(base, boosted, lower, verdict):
    a, b = _row("base", "m", base, lower), _row("boosted", "m", boosted, lower)
    text = delta_text(a, b)
    assert verdict in text
    if verdict not in ("better", "worse"):
        assert "better" not in text and "worse" not in text


def test_issue_example_is_within_noise():
    """ "+0.0002 (+0.0%) better" with std 0.0044 was the complaint."""
    a = {"mean": 0.5000, "std": 0.0044, "n": 3, "lower_is_better": False}
    b = {"mean": 0.5002, "std": 0.0044, "n": 3, "lower_is_better": False}
    assert "within noise" in delta_text(a, b) and "better" not in delta_text(a, b)


def test_table_states_the_rule():
    rows = [_row("base", "rmse", [1.0, 1.1, 0.9], True), _row("boosted", "rmse", [1.0, 1.1, 0.9], True)]
    table = markdown_table(_summary(rows))
    assert "2 × √(std_base² + std_boosted²)" in table and "1.0000 ± 0.1000" in table


def test_one_seed_shows_no_std():
    rows = [_row("base", "rmse", [1.0], True), _row("boosted", "rmse", [0.5], True)]
    table = markdown_table(_summary(rows, seeds=1))
    assert "± 0.0000" not in table and "1.0000 (1 seed)" in table and "no noise estimate" in table


def test_bars_zoom_on_the_differences_and_say_which_way_is_better():
    rows = [_row("base", "rmse", [0.80, 0.81, 0.79], True), _row("boosted", "rmse", [0.78, 0.79, 0.77], True)]
    ax = bars_figure(_summary(rows)).axes[0]
    lo, hi = ax.get_ylim()
    assert lo > 0.5 and hi < 1.0  # an axis from 0 would flatten a 2.5% difference
    assert "lower is better" in ax.get_title()
    assert any(len(c.lines) > 1 for c in ax.containers if hasattr(c, "lines"))  # error bars drawn


def test_depth_grid_has_a_colour_bar_in_metres():
    rng = np.random.default_rng(0)
    previews = {
        "test": {
            "image": rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8),
            "depth": rng.uniform(1, 4, (2, 16, 16)).astype(np.float32),
        },  # fmt: skip
        "base": rng.uniform(1, 4, (2, 16, 16)).astype(np.float32),
    }
    fig = depth_grid_figure(previews, ["base"])
    labels = [ax.get_ylabel() for ax in fig.axes] + [ax.get_xlabel() for ax in fig.axes]
    assert any("depth (m)" in text for text in labels)


def test_accuracy_on_few_images_is_within_its_sampling_noise():
    """The demo printed 'top1 0.1250 -> 0.0938 worse' at std 0 (a deterministic head): one image of 32."""
    from spatialboost.eval.runner import aggregate

    def runs(enc, value):
        return [{"encoder": enc, "probe": "cls-linear", "seed": s, "protocol": {}, "metrics": {"top1": value}}
                for s in range(3)]  # fmt: skip

    rows = {r["encoder"]: r for r in aggregate(runs("base", 4 / 32) + runs("boosted", 3 / 32), n_test=32)}
    assert rows["base"]["std"] == 0.0 and rows["base"]["sampling_se"] > 0.05
    assert "within noise" in delta_text(rows["base"], rows["boosted"])
    big = {r["encoder"]: r for r in aggregate(runs("base", 4 / 32) + runs("boosted", 20 / 32), n_test=32)}
    assert "better" in delta_text(big["base"], big["boosted"])  # 16 of 32 more: far beyond it
    no_n = {r["encoder"]: r for r in aggregate(runs("base", 4 / 32) + runs("boosted", 3 / 32))}
    assert "sampling_se" not in no_n["base"] and "worse" in delta_text(no_n["base"], no_n["boosted"])

"""The model card's probe table reads a metric's direction from the one owner (``spatialboost.noise``) and
from the rows' own ``lower_is_better``: an error that rose is "worse", with a down arrow."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatialboost.models.card import RunFacts, model_card
from spatialboost.models.config import GATES
from spatialboost.models.dual_channel import boost_encoder
from spatialboost.models.encoders import create_encoder
from spatialboost.models.hf_export import hf_config

SEEDS = [0, 1, 2]


def _row(encoder: str, probe: str, metric: str, mean: float, **extra) -> dict:
    return {"encoder": encoder, "probe": probe, "metric": metric, "mean": mean, "std": 0.01, "n": 3, **extra}


def _card(tmp_path: Path, probe: str, metric: str, base: float, boosted: float, **extra) -> str:
    enc = boost_encoder(create_encoder("tiny-dinov2", seed=0), gate=GATES[0])
    summary = {
        "encoders": {"base": {}, "boosted": {}},
        "pairs": {"boosted": "base"},
        "rows": [
            _row("base", probe, metric, base, **extra),
            _row("boosted", probe, metric, boosted, **extra),
        ],
        "seeds": SEEDS,
        "runs": [],
        "config": {"tasks": ["all3d"], "features": {"layers": "last"}},
        "dataset": {"spec": "synthetic", "n_train": 8, "n_test": 4},
    }
    facts = RunFacts(tmp_path, probe=summary, probe_path=tmp_path / "results.json", probe_encoder="boosted")
    return model_card(hf_config(enc), tmp_path / "out", facts)


def _line(card: str, probe: str, metric: str) -> str:
    return next(line for line in card.splitlines() if line.startswith(f"| {probe} | {metric} "))


@pytest.mark.parametrize(
    ("probe", "metric"),
    [("register", "rte"), ("register", "rre"), ("depth", "rmse_median"), ("depth", "rmse")],
)
def test_an_error_that_rose_reads_worse(tmp_path, probe, metric):
    line = _line(_card(tmp_path, probe, metric, base=0.5, boosted=0.8), probe, metric)
    assert f"| {metric} ↓ |" in line and line.endswith("| yes, worse |"), line


def test_an_error_that_fell_reads_better(tmp_path):
    line = _line(_card(tmp_path, "register", "rte", base=0.8, boosted=0.5), "register", "rte")
    assert line.endswith("| yes, better |"), line


def test_the_rows_own_direction_wins(tmp_path):
    """A metric no table knows, marked lower-is-better by the probe that wrote it."""
    card = _card(tmp_path, "robot", "steps_to_goal", base=10.0, boosted=12.0, lower_is_better=True)
    line = _line(card, "robot", "steps_to_goal")
    assert "| steps_to_goal ↓ |" in line and line.endswith("| yes, worse |"), line
    card = _card(tmp_path, "depth", "rmse", base=0.5, boosted=0.8, lower_is_better=False)
    assert _line(card, "depth", "rmse").endswith("| yes, better |")


def test_an_accuracy_that_rose_reads_better(tmp_path):
    line = _line(_card(tmp_path, "register", "rr@0.2m", base=0.5, boosted=0.8), "register", "rr@0.2m")
    assert "| rr@0.2m ↑ |" in line and line.endswith("| yes, better |"), line

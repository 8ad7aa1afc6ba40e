"""What a run reports: a JSONL metrics log and TensorBoard scalars in the stage dir (rank 0 only).

``metrics.jsonl`` holds one object per logged step (``{"step", "loss", "lr", "tokens_per_s", ...}``). On
resume, lines past the checkpoint's step are dropped first, so the log of a resumed run reads like an
uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from spatialboost.io import atomic_write_text

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


class MetricsLogger:
    def __init__(self, stage_dir: Path, tag: str, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(stage_dir) / METRICS
        self.tag = tag
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            try:
                # lazy: optional at run time: a broken tensorboard install falls back to metrics.jsonl alone
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(stage_dir) / "tb"))
            except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
                log.warning("tensorboard is not importable; only %s is written", METRICS)

    def truncate_after(self, step: int) -> None:
        """Drop lines with ``step`` beyond the resumed checkpoint."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [
            line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step
        ]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(f"{self.tag}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(stage_dir: str | Path) -> list[dict]:
    path = Path(stage_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _plain(v: float) -> float | str:
    return v if isinstance(v, int | str) or math.isfinite(v) else str(v)

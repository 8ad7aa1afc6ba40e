"""Does a finished study's stage-2 VLM read the *numbers* from the image? (issue 10)

Re-scores each seed's shared stage-2 VLM (and the seed-0 text-only twin) on the study's held-out
conversations with ``train.image_gain`` -- including the ``numbers`` / ``pixel_numbers`` rows: the tokens
of numbers an answer states that appear nowhere earlier in the conversation, where only the image can help
-- and sets them beside rung 1 for the numbers (``reading-bound.json``'s ``depth``: how many nats a point's
frozen base feature adds to its coordinates about its depth) and the perfect-reading ceiling (the
text-only twin's loss on those tokens). Studies that ran before these rows existed get them this way,
from the same checkpoints, without retraining.

    .venv/bin/python benchmarks/reading_numbers.py --study runs/replicate [--samples 64]

Writes ``STUDY/reading-numbers.json`` and prints one line per row (mean ± std over seeds, each seed's
standard error in brackets; "beyond noise" when the mean exceeds twice the larger of the two).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from spatialboost.config import load_config
from spatialboost.io import atomic_write_json
from spatialboost.train.checkpoint import load_weights
from spatialboost.train.config import TrainConfig
from spatialboost.train.distributed import DistEnv
from spatialboost.train.image_gain import describe, load_eval_dataset, measure_image_gain
from spatialboost.train.pipeline import prepare_tokenizer
from spatialboost.train.stages import build_vlm, finished_output, load_trainable

ROWS = ("pixel", "numbers", "pixel_numbers")


def stage2_gain(run: Path, heldout: str, samples: int) -> dict:
    """The image gain of the stage-2 VLM saved in ``run`` on ``heldout``."""
    cfg = load_config(TrainConfig, run / "config.yaml")
    tok = prepare_tokenizer(cfg, DistEnv())
    vlm = build_vlm(cfg, tok, "instruct")
    load_trainable(vlm, load_weights(finished_output(run, "instruct")), str(run))
    data = load_eval_dataset(heldout, tok, vlm, cfg.stage_data("instruct"))
    return measure_image_gain(vlm, data, tok, samples)


def shared_runs(study: Path) -> list[tuple[str, Path]]:
    """(name, run dir) of each seed's shared stages 1+2 and of the text-only twins, where they finished."""
    out = []
    for seed_dir in sorted((study / "runs").glob("seed*")):
        for shared in sorted(seed_dir.glob("shared-*")):
            for name, run in ((f"{seed_dir.name}", shared), (f"{seed_dir.name}-blind", shared / "blind")):
                if (run / "config.yaml").is_file() and finished_output(run, "instruct"):
                    out.append((name, run))
    return out


def summary(results: dict[str, dict]) -> dict[str, dict]:
    seeing = {k: v for k, v in results.items() if not k.endswith("-blind")}
    blind = {k: v for k, v in results.items() if k.endswith("-blind")}
    rows = {}
    for level in ROWS:
        gains = [r[level]["gain"] for r in seeing.values() if level in r]
        if not gains:
            continue
        noise = max(r[level]["stderr"] for r in seeing.values() if level in r)
        std = statistics.stdev(gains) if len(gains) > 1 else 0.0
        mean = statistics.fmean(gains)
        rows[level] = {"gain_mean": mean, "gain_std": std, "stderr_max": noise, "seeds": len(gains),
                       "beyond_noise": mean > 2 * max(std, noise),
                       "blind_loss": [r[level]["loss_right"] for r in blind.values() if level in r],
                       "tokens": next(r[level]["tokens"] for r in seeing.values() if level in r)}  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="a finished `spatialboost replicate` --out")
    parser.add_argument("--samples", type=int, default=64, help="held-out conversations to score")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heldout = sorted((args.study / "data").glob("heldout*"))
    if not heldout:
        raise SystemExit(f"{args.study}/data: no held-out dataset (heldout*); is this a reads-image study?")
    results = {}
    for name, run in shared_runs(args.study):
        results[name] = stage2_gain(run, str(heldout[-1]), args.samples)
        print(f"{name}: {describe(results[name])}", flush=True)
    rows = summary(results)
    bound_path = args.study / "reading-bound.json"
    depth = json.loads(bound_path.read_text()).get("depth", {}) if bound_path.is_file() else {}
    for level, r in rows.items():
        verdict = "beyond noise" if r["beyond_noise"] else "within noise"
        blind = f"; text-only loss {statistics.fmean(r['blind_loss']):.3f}" if r["blind_loss"] else ""
        print(f"{level}: image gain {r['gain_mean']:+.4f} ± {r['gain_std']:.4f} nats/token over {r['seeds']} "
              f"seeds (s.e. <= {r['stderr_max']:.4f}, {verdict}; {r['tokens']} tokens){blind}")  # fmt: skip
    if depth:
        print(f"rung 1 for the numbers: the frozen base feature saves {depth['nats_per_value']:+.3f} ± "
              f"{depth['nats_per_value_stderr']:.3f} nats per stated depth over its coordinates "
              f"({depth['nats_per_value_token']:+.4f} per number token); depth RMSE from the coordinates "
              f"{depth['rmse_text_only']:.3f} m, with the feature {depth['rmse_right']:.3f} m")  # fmt: skip
    if "pixel_numbers" in rows and rows["pixel_numbers"]["blind_loss"] and "pixel" in rows:
        share = rows["pixel_numbers"]["tokens"] / rows["pixel"]["tokens"]
        ceiling = statistics.fmean(rows["pixel_numbers"]["blind_loss"]) * share
        print(
            f"perfect-reading ceiling on pixel answers: {ceiling:.3f} nats per pixel answer token "
            f"(new numbers are {share:.0%} of those tokens)"
        )
    atomic_write_json(args.study / "reading-numbers.json", {"runs": results, "rows": rows, "depth": depth})


if __name__ == "__main__":
    main()

"""Does the stage-2 VLM read stage 3's own questions? The reading target of issue 23, on stage 3's format.

The study report's reading table scores A/B accuracy on held-out *main* conversations (pixel, object and scene
turns with two A/B questions among them). Stage 3 trains on another format: the default recipe's terse A/B
point questions, 24 per image (``DATA[ARMS[DEFAULT_ARM].data]``). This script scores a study's VLMs on held-out
conversations of that format -- 64 single-view scenes of scene seed 4 (DATA variant ``choices-points-dense-heldout``),
none of the study's -- with the right images and with another scene's (``train.image_gain.measure_image_gain``),
and gives rung 1 on the same questions: an MLP on the frozen base features of the two points
(``diagnostics.choice_probe``), trained on the main conversations' A/B questions (what the shared stage 2 saw)
and on each ``--bound-data`` variant's.

Each RUN is a run folder of the study (``OUT/runs/seed<k>/<name>``): a stages-1+2 run is scored as its stage-2
VLM; a stage-3 run twice, with its stage-2 VLM (its ``init_from``) and after stage 3 (its boosted encoder under
the same frozen LM).

    .venv/bin/python benchmarks/reading_format.py --study /work/studies/dinov2-s RUN [RUN ...]
        [--bound-data choices-points-dense-other] [--skip-bound] [--out reading-format.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from spatialboost.config import load_config
from spatialboost.io import atomic_write_json
from spatialboost.models.encoders import create_encoder
from spatialboost.studies.replicate.data import ensure_dataset
from spatialboost.studies.replicate.diagnostics import choice_probe, record_features
from spatialboost.studies.replicate.runner import Study
from spatialboost.studies.replicate.study import ARMS, DATA, DEFAULT_ARM, make_config, resolve_preset
from spatialboost.train import checkpoint as ckpt
from spatialboost.train.config import TrainConfig
from spatialboost.train.distributed import DistEnv
from spatialboost.train.image_gain import load_eval_dataset, measure_image_gain
from spatialboost.train.pipeline import RESOLVED_FILE, prepare_tokenizer
from spatialboost.train.stages import build_vlm, finished_output, load_previous_outputs, load_trainable

HELDOUT = "choices-points-dense-heldout"  # DATA variant: the default's stage-3 turns on scene seed 4
HELDOUT_SCENES = 64


def heldout_set(study: Study) -> Path:
    """64 held-out single-view scenes with the default's stage-3 conversations (written once, then reused)."""
    if DATA[HELDOUT].extra_turns != DATA[ARMS.get(DEFAULT_ARM).data].extra_turns:
        raise SystemExit(
            f"DATA[{HELDOUT!r}] no longer asks the default recipe's stage-3 questions; update it"
        )
    return ensure_dataset(study.out / "data", HELDOUT, study.cfg.sizes, scenes=HELDOUT_SCENES)


def score(run: Path, data_root: Path, after_stage3: bool) -> dict:
    """A/B accuracy of ``run``'s VLM on ``data_root``, right vs other images (its stage-2 VLM, or after stage 3)."""
    cfg = load_config(TrainConfig, run / RESOLVED_FILE)
    cfg.run_dir = str(run)
    tokenizer = prepare_tokenizer(cfg, DistEnv())
    vlm = build_vlm(cfg, tokenizer, "encoder")
    load_previous_outputs(vlm, cfg, "encoder")
    if after_stage3:
        out = finished_output(run, "encoder")
        load_trainable(vlm, ckpt.load_weights(out), source=str(out))
    data = load_eval_dataset(data_root, tokenizer, vlm, cfg.stage_data("encoder"))
    with torch.no_grad():
        result = measure_image_gain(vlm, data, tokenizer, len(data))
    return {**result["choice"], "gain": result["all"]["gain"], "loss_right": result["all"]["loss_right"]}


def bounds(study: Study, data_root: Path, variants: list[str]) -> dict:
    """Rung 1 on the held-out set: choice_probe trained on main's A/B questions and on each variant's."""
    encoder = create_encoder(study.cfg.recipe.encoder).eval()
    side = study.cfg.sizes.image_size - study.cfg.sizes.image_size % encoder.spec.patch_size
    grid = side // encoder.spec.patch_size
    test = record_features(encoder, data_root, side)
    out = {}
    for name in ["main", *variants]:
        out[name] = choice_probe(record_features(encoder, study.data(name), side), test, grid)
        print(f"rung 1, trained on {name} ({out[name]['train_questions']} questions): "
              f"{out[name]['acc_right']:.3f} right vs {out[name]['acc_other']:.3f} other", flush=True)  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "runs", nargs="+", type=Path, help="run folders of the study (stages 1+2, or a stage-3 run)"
    )
    p.add_argument("--study", type=Path, required=True, help="the study's --out folder")
    p.add_argument("--preset", default="dinov2-s")
    p.add_argument("--bound-data", default="choices-points-dense-other", help="comma-separated DATA variants")
    p.add_argument("--skip-bound", action="store_true", help="keep the rung-1 numbers already in --out")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON (default: STUDY/reading-format.json; runs already in it are kept unless scored again)")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(1)
    size, recipe = resolve_preset(args.preset, None, None)
    study = Study(make_config(str(args.study), size=size, recipe=recipe))
    data_root = heldout_set(study)
    out = args.out or args.study / "reading-format.json"
    result = json.loads(out.read_text()) if out.is_file() else {}
    result["heldout"] = str(data_root)
    if not (args.skip_bound and "bound" in result):
        result["bound"] = bounds(study, data_root, [v for v in args.bound_data.split(",") if v])
    for run in args.runs:
        stages = [False, True] if finished_output(run, "encoder") else [False]
        for after in stages:
            key = f"{run.parent.name}/{run.name}" + (" after stage 3" if after else "")
            result[key] = score(run, data_root, after)
            r = result[key]
            print(f"{key}: {r['acc_right']:.3f} right vs {r['acc_other']:.3f} other images "
                  f"({r['questions']} questions), answer loss {r['loss_right']:.4f}", flush=True)  # fmt: skip
    atomic_write_json(out, result)


if __name__ == "__main__":
    main()

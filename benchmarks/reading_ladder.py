"""The reading ladder (issue 10): does a CPU-scale VLM read the image, rung by rung?

Debug from the bottom, each rung with the project's own trainer and data engine (64 px synthetic scenes, the
2D-pre-trained tiny ViT, a from-scratch 2-layer LM of width 128, reference tokens):

1. ``probe``: an MLP on the frozen features of the two places an A/B question names (the bound of what the
   features carry for these questions), right vs other scenes' images;
2. single-question conversations through projector + LM (stage 2 only, ``--steps``), one arm per row:
   ``points`` (4 terse A/B point questions per image), ``points-rationale`` (the same answered with a
   rationale that echoes the coordinates), ``points+image-tokens`` (the terse ones with 64 image tokens too),
   ``objects`` (terse A/B object questions, region tokens), ``mix`` (points, objects and a depth readout);
3. ``full``: the reads-image recipe's stages 1+2 (reading warm-up, then full conversations);
4. ``stage3``: stage 3 through the frozen LM of rung 3 and linear probes, base vs boosted (val split).

Every arm reports the held-out image gain and A/B accuracy (right vs other images) every ``--every`` steps.
Rungs 3-4 are what ``spatialboost replicate`` runs with 3 seeds; this script shows the path to them.

    .venv/bin/python benchmarks/reading_ladder.py [--rungs probe,points,...] [--steps 500] [--out runs/ladder]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
from spatialboost.datagen.questions.conversations import ConversationConfig
from spatialboost.datagen.scenes.synthetic import SyntheticConfig
from spatialboost.datagen.sources import GenerateConfig, SyntheticSource
from spatialboost.models.config import VLMConfig
from spatialboost.train.config import (
    AlignStage,
    CheckpointConfig,
    DataConfig,
    EncoderStage,
    ImageGainConfig,
    InstructStage,
    LogConfig,
    StagesConfig,
    TrainConfig,
)
from spatialboost.train.pipeline import run_training

POINTS = {"choice_closer_point": 4}
ARMS = {  # rung-2 arms: (auxiliary turns, image tokens, terse answers)
    "points": (POINTS, False, True),
    "points-rationale": (POINTS, False, False),
    "points+image-tokens": (POINTS, True, True),
    "objects": ({"choice_closer_object": 4}, False, True),
    "mix": ({"choice_closer_point": 3, "choice_closer_object": 2, "depth_readout": 1}, False, True),
}
MAIN_EXTRA = {"choice_closer_point": 2, "choice_closer_object": 1, "depth_readout": 1}


def dataset(out: Path, name: str, scenes: int, seed: int, conv: ConversationConfig, share: float) -> Path:
    root = out / "data" / name
    if not (root / "manifest.json").is_file():
        cfg = GenerateConfig(scenes=scenes, seed=seed, multiview_share=share, max_views=3, shard_size=64,
                             synthetic=SyntheticConfig(image_size=64), conversation=conv)  # fmt: skip
        write_dataset(SyntheticSource(cfg), WriteSpec(root, scenes, seed, cfg.shard_size, conv))
    return root


def reading_conv(extra: dict[str, int]) -> ConversationConfig:
    return ConversationConfig(levels=["pixel", "object"], turns={"pixel": 0, "object": 0}, caption=False,
                              extra_turns=dict(extra))  # fmt: skip


def with_rationale(src: Path, dst: Path) -> Path:
    """The same conversations with every A/B answer followed by the depths of the two points (echoing their
    coordinates): the long-answer form whose copied text drowns the reading signal."""
    import shutil

    from spatialboost.dataset_format import read_meta

    if (dst / "manifest.json").is_file():
        return dst
    shutil.copytree(src, dst)
    for shard in sorted((dst / "shards").glob("*.jsonl")):
        lines = []
        for record in (json.loads(line) for line in shard.read_text().splitlines() if line.strip()):
            facts = iter(read_meta(dst, record["id"])["facts"])
            for turn in record["conversations"]:
                if turn["from"] == "gpt":
                    a = next(facts)["args"]
                    turn["value"] += (
                        f" ({a['x1']}, {a['y1']}) and ({a['x2']}, {a['y2']}) are the two points compared."
                    )
            lines.append(json.dumps(record))
        shard.write_text("\n".join(lines) + "\n")
    return dst


def train_config(
    out: Path, name: str, base: str, data: Path, heldout: Path, image_tokens: bool, every: int
) -> TrainConfig:
    dcfg = DataConfig(datasets=[str(data)], max_length=2048, refs=["point", "region"], image_tokens=image_tokens,
                      cache_features=True, feature_cache_dir=str(out / "features"))  # fmt: skip
    return TrainConfig(
        run_dir=out / "runs" / name, seed=0, device="cpu",
        model=VLMConfig(encoder=base, llm="tiny-qwen2", llm_options={"hidden_size": 128, "intermediate_size": 256}),
        data=dcfg, image_gain=ImageGainConfig(datasets=[str(heldout)], max_samples=64, every=every),
        checkpoint=CheckpointConfig(every=100_000, keep_last=1), log=LogConfig(every=50, tensorboard=False, progress=False),
    )  # fmt: skip


def gains(run_dir: Path, stage: str) -> list[dict]:
    from spatialboost.train.stages import stage_dir

    rows = [
        json.loads(x) for x in (stage_dir(run_dir, stage) / "metrics.jsonl").read_text().splitlines() if x
    ]
    return [{k.removeprefix("image_gain/"): round(v, 4) for k, v in r.items() if k.startswith("image_gain") or k == "step"}
            for r in rows if "image_gain/all" in r]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/ladder"))
    p.add_argument(
        "--rungs", default="probe,points,points-rationale,points+image-tokens,objects,mix,full,stage3"
    )
    p.add_argument("--scenes", type=int, default=1500)
    p.add_argument("--steps", type=int, default=500, help="rung-2 stage-2 steps")
    p.add_argument("--warmup", type=int, default=400, help="rung-3 reading warm-up steps")
    p.add_argument("--instruct", type=int, default=300, help="rung-3 stage-2 steps")
    p.add_argument("--stage3", type=int, default=80)
    p.add_argument("--every", type=int, default=100)
    args = p.parse_args()
    from spatialboost.train.pretrain import PretrainConfig, pretrain_encoder

    base = str(pretrain_encoder(PretrainConfig(scenes=2048, epochs=4, cache_dir=args.out / "pretrain")).path)
    rungs, report = args.rungs.split(","), {}
    t0 = time.perf_counter()
    for arm, (extra, image_tokens, terse) in ARMS.items():
        if arm not in rungs and not (arm == "points" and "probe" in rungs):
            continue
        conv = reading_conv(extra)
        tag = "-".join(f"{k}{v}" for k, v in sorted(extra.items()))
        data = dataset(args.out, tag, args.scenes, 0, conv, 0.0)
        held = dataset(args.out, tag + "-heldout", 64, 99, conv, 0.0)
        if arm == "points" and "probe" in rungs:
            report["probe"] = probe_bound(base, data, held)
        if arm not in rungs:
            continue
        if not terse:
            data, held = (
                with_rationale(data, args.out / "data" / f"{tag}-rationale"),
                with_rationale(held, args.out / "data" / f"{tag}-heldout-rationale"),
            )
        cfg = train_config(args.out, arm, base, data, held, image_tokens, args.every)
        cfg.stages = StagesConfig(
            run=["instruct"],
            instruct=InstructStage(max_steps=args.steps, batch_size=8, lr=1e-3, warmup_ratio=0.03),
        )
        run_training(cfg)
        report[arm] = gains(cfg.run_dir, "instruct")
    if "full" in rungs or "stage3" in rungs:
        report.update(full_recipe(args, base))
    report["minutes"] = (time.perf_counter() - t0) / 60
    print(json.dumps(report, indent=1))


def probe_bound(base: str, data: Path, heldout: Path) -> dict:
    from spatialboost.models.encoders import create_encoder
    from spatialboost.studies.replicate.diagnostics import choice_probe, record_features

    encoder = create_encoder(base).eval()
    return choice_probe(record_features(encoder, data, 64), record_features(encoder, heldout, 64), 8)


def full_recipe(args, base: str) -> dict:
    """Rung 3: reading warm-up + full conversations; rung 4: stage 3 and the val probes."""
    from spatialboost.models.encoders import create_encoder
    from spatialboost.models.export import load_encoder
    from spatialboost.studies.replicate.probing import ProbeBench
    from spatialboost.studies.replicate.study import FULL

    main = ConversationConfig(extra_turns=dict(MAIN_EXTRA))
    data = dataset(args.out, "main", 1000, 0, main, 0.5)
    held = dataset(args.out, "main-heldout", 64, 99, main, 0.5)
    reading = dataset(args.out, "reading", 1000, 0, reading_conv(POINTS), 0.0)
    cfg = train_config(args.out, "full", base, data, held, False, args.every)
    cfg.stages = StagesConfig(
        run=["align", "instruct"] + (["encoder"] if "stage3" in args.rungs else []),
        align=AlignStage(max_steps=args.warmup, batch_size=8, lr=1e-3, warmup_ratio=0.05, train_llm=True,
                         data={"datasets": [str(reading)]}),
        instruct=InstructStage(max_steps=args.instruct, batch_size=8, lr=1e-3, warmup_ratio=0.05),
        encoder=EncoderStage(max_steps=args.stage3, batch_size=8, lr=1e-3, lr_gates=1e-2, warmup_ratio=0.05),
    )  # fmt: skip
    run_training(cfg)
    out = {"full: warm-up": gains(cfg.run_dir, "align"), "full: stage 2": gains(cfg.run_dir, "instruct")}
    if "stage3" in args.rungs:
        bench = ProbeBench(FULL, args.out / "probe-features")
        for name, enc in (("base", create_encoder(base)), ("boosted", load_encoder(cfg.run_dir / "encoder"))):
            metrics = bench.run(enc, "val", 0)
            out[f"stage3 probes: {name}"] = {
                "depth_rmse": metrics["depth"]["rmse"],
                "seg_miou": metrics["seg"]["miou"],
            }
    return out


if __name__ == "__main__":
    main()

"""Run the study: pre-train the base once, share stages 1+2 per seed, train and probe every arm.

Layout of ``OUT``::

    data/<variant>/                   the data engine's datasets (main + variants + diag-pixel)
    cache/pretrain/tiny-vit-<hash>/   the 2D pre-trained base (``train.pretrain``'s cache)
    cache/features/                   probe features (keyed by weights hash)
    runs/seed<k>/shared-w<width>/     stages 1+2 of seed k (``train.run_training``)
    runs/seed<k>/<recipe>/            an arm's stage 3 (or dense-head / simple-FT) training + encoder/
    arms/<arm>/seed<k>-<split>.json   an arm's probe results and diagnostics (written atomically)
    tuning.json                       the val search's winner (the tuned arm's recipe)

Rerunning the same command skips every arm whose json exists and resumes unfinished training.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from spatialboost.config import ConfigError, to_dict
from spatialboost.io import atomic_write_json
from spatialboost.models.config import VLMConfig, is_tiny_llm
from spatialboost.models.dual_channel import boost_encoder
from spatialboost.models.encoders import create_encoder
from spatialboost.models.export import load_encoder, save_encoder
from spatialboost.studies.replicate.probing import depth_heads_of
from spatialboost.studies.replicate.study import (
    ARMS,
    DATA,
    Arm,
    OwnStage2,
    Sizes,
    StudyConfig,
    selected_arms,
    val_seeds_span,
)
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
from spatialboost.train.loop import GAIN_FILE
from spatialboost.train.pipeline import run_training
from spatialboost.train.pretrain import PretrainConfig, pretrain_encoder
from spatialboost.train.stages import stage_dir

log = logging.getLogger(__name__)


@dataclass
class Study:
    """What every arm needs: the config, paths, the pre-trained base and the probe bench."""

    cfg: StudyConfig
    base_path: Path = Path()
    pretrain: dict[str, Any] = field(default_factory=dict)
    _bench: Any = None
    _bench_probes: Any = None
    _dense: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def cache(self) -> Path:
        return Path(self.cfg.cache_dir) if self.cfg.cache_dir else self.out / "cache"

    @property
    def bench(self):
        if self._bench is None:
            from spatialboost.studies.replicate.probing import ProbeBench

            self._bench = ProbeBench(self.cfg.sizes, self.cache / "features")
        return self._bench

    @property
    def bench_probes(self):
        if self._bench_probes is None:
            from spatialboost.studies.replicate.benches import BenchProbes

            self._bench_probes = BenchProbes(self.cfg.bench_tasks, self.cfg.sizes, self.cache / "features")
        return self._bench_probes

    def data(self, name: str) -> Path:
        from spatialboost.studies.replicate.data import ensure_dataset

        return ensure_dataset(
            self.out / "data", name, self.cfg.sizes, extra_turns=dict(self.cfg.recipe.extra_turns)
        )

    @property
    def heldout(self) -> Path:
        """Held-out conversations in the recipe's format: the trainer's image-gain data."""
        from spatialboost.studies.replicate.data import ensure_heldout_dataset

        return ensure_heldout_dataset(self.out / "data", self.cfg.sizes, dict(self.cfg.recipe.extra_turns))

    def result_path(self, arm: Arm, seed: int) -> Path:
        return self.out / "arms" / arm.name / f"seed{seed}-{arm.split}.json"


# --- the study ----------------------------------------------------------------------------------------------


def run_study(cfg: StudyConfig) -> dict[str, Any]:
    """Every selected arm for every seed (search arms: ``val_seeds`` seeds on val); returns the collected
    summary."""
    from spatialboost.studies.replicate.report import collect

    cfg.validate()
    t0 = time.perf_counter()
    study = Study(cfg)
    atomic_write_json(study.out / "study-config.json", to_dict(cfg))
    prepare_base(study)
    reading_bound(study)
    jobs = plan_jobs(cfg)
    for arm, seed in tqdm(jobs, desc="study arms", unit="arm"):
        if arm.tuned:
            arm = resolve_tuned(study, arm)
            if arm is None:
                continue
        run_arm(study, arm, seed)
    summary = collect(cfg.out)
    summary["wall_s_this_call"] = time.perf_counter() - t0
    return summary


def plan_jobs(cfg: StudyConfig) -> list[tuple[Arm, int]]:
    """Tuning candidates (val) first, then every other arm, then the search arms that are diagnostics only;
    seed by seed within each group (so finished seeds are complete); only ``cfg.only_seeds`` when it names any."""
    arms = selected_arms(cfg)
    jobs = [(a, s) for s in range(cfg.val_seeds) for a in arms if a.search and a.candidate]
    jobs += [(a, s) for s in range(cfg.seeds) for a in arms if not a.search]
    jobs += [(a, s) for s in range(cfg.val_seeds) for a in arms if a.search and not a.candidate]
    return [(a, s) for a, s in jobs if not cfg.only_seeds or s in cfg.only_seeds]


def prepare_base(study: Study) -> None:
    """The base every arm starts from: the recipe's pre-trained encoder, or the tiny ViT pre-trained here."""
    if study.cfg.recipe.encoder:
        study.base_path = Path(study.cfg.recipe.encoder)  # a registered name (create_encoder resolves it)
        study.pretrain = {"encoder": study.cfg.recipe.encoder}
        return
    s = study.cfg.sizes
    pcfg = PretrainConfig(encoder="tiny-vit", scenes=s.pretrain_scenes, epochs=s.pretrain_epochs,
                          cache_dir=study.cache / "pretrain")  # fmt: skip
    result = pretrain_encoder(pcfg)
    study.base_path = result.path
    study.pretrain = {"path": str(result.path), "loss_start": result.loss_start, "loss_end": result.loss_end,
                      "val_accuracy": result.val_accuracy, "val_baseline": result.val_baseline}  # fmt: skip


def reading_bound(study: Study) -> dict[str, Any]:
    """Rung 1 of the reading ladder, once per study, on the frozen base features: an MLP on the two places an
    A/B question names (``diagnostics.choice_probe``) and, under ``depth``, the nats a point's feature adds to
    its coordinates about its depth (``diagnostics.depth_value_probe``); ``OUT/reading-bound.json``. A file
    from before the depth bound existed gets it added."""
    from spatialboost.studies.replicate.diagnostics import choice_probe, depth_value_probe, record_features

    path = study.out / "reading-bound.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if not study.cfg.recipe.extra_turns or (result and "depth" in result):
        return result
    encoder = create_encoder(str(study.base_path)).eval()
    side = study.cfg.sizes.image_size - study.cfg.sizes.image_size % encoder.spec.patch_size
    grid, steps = side // encoder.spec.patch_size, 50 if study.cfg.quick else 2000
    train, test = (
        record_features(encoder, study.data("main"), side),
        record_features(encoder, study.heldout, side),
    )
    if not result:
        result = choice_probe(train, test, grid, steps)
    result["depth"] = depth_value_probe(train, test, grid, steps)
    atomic_write_json(path, result)
    return result


# --- one arm ------------------------------------------------------------------------------------------------


def run_arm(study: Study, arm: Arm, seed: int) -> dict[str, Any]:
    path = study.result_path(arm, seed)
    if path.is_file():
        log.info("arm %s seed %d: done (%s)", arm.name, seed, path)
        return upgrade_record(study, arm, seed, path)
    t0 = time.perf_counter()
    log.info("arm %s seed %d: %s", arm.name, seed, arm.label)
    encoder, diag = TRAINERS[arm.trainer](study, arm, seed)
    probed = study.bench.run(encoder, arm.split, seed)
    metrics = {**probed.metrics, **run_bench_probes(study, arm, encoder, seed)}
    record = {"arm": arm.name, "label": arm.label, "seed": seed, "split": arm.split, "arm_config": asdict(arm),
              "recipe": recipe_dict(study, arm), "metrics": metrics, "per_scene": probed.per_scene,
              "depth_heads": probed.depth_heads, "diagnostics": diag, "seconds": time.perf_counter() - t0,
              "base": study.pretrain}  # fmt: skip
    atomic_write_json(path, record)
    return record


def kept_encoder_dir(study: Study, arm: Arm, seed: int) -> bool:
    """Whether a finished arm's encoder can be probed again: the base always, a trained arm where its run kept
    ``encoder/``."""
    return arm.trainer == "none" or (run_dir(study, arm, seed) / "encoder").is_dir()


def kept_encoder(study: Study, arm: Arm, seed: int):
    return (
        train_none(study, arm, seed)[0]
        if arm.trainer == "none"
        else load_encoder(run_dir(study, arm, seed) / "encoder")
    )


def upgrade_record(study: Study, arm: Arm, seed: int, path: Path) -> dict[str, Any]:
    """A finished record brought up to the study's probes, training nothing: the depth probe
    (``upgrade_depth``), then the bench probes it lacks (``add_bench_probes``)."""
    record = upgrade_depth(study, arm, seed, path, json.loads(path.read_text()))
    return add_bench_probes(study, arm, seed, path, record)


def add_bench_probes(study: Study, arm: Arm, seed: int, path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The 3D / robot probes of ``cfg.bench_tasks`` that a finished record of a bench arm lacks, run on its saved
    encoder (the base: the study's base) with the study seed, as a fresh job would have run them; the record as it
    is where it has them all, where the arm is no bench arm, or where its encoder was not kept."""
    if not wants_bench_probes(study, arm):
        return record
    wanted = [p for bench in study.bench_probes.benches for p in bench.probes]
    if all(p in record["metrics"] for p in wanted) or not kept_encoder_dir(study, arm, seed):
        return record
    encoder = kept_encoder(study, arm, seed)
    record["metrics"] = {**record["metrics"], **study.bench_probes.run(encoder, seed)}
    atomic_write_json(path, record)
    log.info("arm %s seed %d: bench probes %s added (%s)", arm.name, seed, ", ".join(wanted), path)
    return record


def upgrade_depth(study: Study, arm: Arm, seed: int, path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A finished record brought up to the study's depth probe: per-scene values where it was written before
    they were kept, and ``sizes.depth_heads`` heads where it has fewer. The depth probe is re-run on the arm's
    saved encoder (features cached) with every head, and the record takes the heads' mean only where the re-run
    reproduces each head it already has (else it stays as it is, and the log says why)."""
    have = depth_heads_of(record)
    if (record.get("per_scene") and len(have) >= study.bench.depth_heads) or not kept_encoder_dir(
        study, arm, seed
    ):
        return record
    encoder = kept_encoder(study, arm, seed)
    depth = study.bench.depth(encoder, arm.split, seed)
    for k, (old, new) in enumerate(zip(have, depth.heads, strict=False)):  # the heads it has
        if abs(new["rmse"] - old["rmse"]) > 1e-4 * abs(old["rmse"]):
            log.warning("arm %s seed %d: depth head %d re-run gives RMSE %.6f, the record %.6f; record left as "
                        "it is (%s)", arm.name, seed, k, new["rmse"], old["rmse"], path)  # fmt: skip
            return record
    record["metrics"]["depth"] = depth.metrics
    record["per_scene"] = {**record.get("per_scene", {}), "depth": depth.per_scene}
    record["depth_heads"] = depth.heads
    atomic_write_json(path, record)
    log.info("arm %s seed %d: depth probe now %d heads, with per-scene values (%s)", arm.name, seed,
             len(depth.heads), path)  # fmt: skip
    return record


def wants_bench_probes(study: Study, arm: Arm) -> bool:
    """The 3D / robot probes of ``cfg.bench_tasks`` run on table A's arms, test split."""
    from spatialboost.studies.replicate.benches import bench_arms

    return bool(study.cfg.bench_tasks) and arm.split == "test" and arm.name in bench_arms()


def run_bench_probes(study: Study, arm: Arm, encoder, seed: int) -> dict[str, Any]:
    return study.bench_probes.run(encoder, seed) if wants_bench_probes(study, arm) else {}


def recipe_dict(study: Study, arm: Arm) -> dict[str, Any]:
    r, s = study.cfg.recipe, study.cfg.sizes
    return {"encoder_lr": arm.encoder_lr or r.encoder_lr, "lr_gates": r.lr_gates,
            "gate_init": r.gate_init if arm.gate_init is None else arm.gate_init,
            "encoder_steps": stage3_steps(study, arm), "batch_size": s.batch_size, "data": arm.data,
            "llm_width": arm.llm_scale * r.llm_width, "mode": arm.mode,
            "instruct_steps": max(1, round(s.instruct_steps * arm.instruct_scale)),
            "recipe": study.cfg.recipe_name, "refs": list(r.refs), "simple_ft_lr": r.simple_ft_lr,
            "encoder": r.encoder or "tiny-vit (2D pre-trained here)", "llm": r.llm,
            **({"cls_anchor": arm.cls_anchor} if arm.cls_anchor else {}),
            **({"grad_accum": s.grad_accum} if s.grad_accum != 1 else {}),
            **({"swap_images": True} if arm.swap_images else {}),
            **({"train_projector": False} if not arm.projector else {}),
            **({"stage2_replay": True} if arm.stage2_replay else {}),
            **({"stage2_data": arm.stage2_data} if arm.stage2_data else {}),
            **({"stage2_plus": arm.stage2_plus} if arm.stage2_plus else {}),
            **({"stage2_stop_at_ab_accuracy": arm.stage2_stop} if arm.stage2_stop else {})}  # fmt: skip


def stage3_steps(study: Study, arm: Arm) -> int:
    return max(1, round(study.cfg.sizes.encoder_steps * arm.steps_scale))


def recipe_key(study: Study, arm: Arm) -> str:
    """Arms with the same training recipe share one training run (e.g. the tuned arm and its winner)."""
    r = recipe_dict(study, arm)
    key = f"{arm.trainer}-{r['mode']}-{r['data']}-lr{r['encoder_lr']:g}-g{r['gate_init']:g}-s{r['encoder_steps']}"
    key += f"-w{r['llm_width']}" if arm.llm_scale != 1 else ""
    key += _recipe_tag(study)
    key += f"-i{r['instruct_steps']}" if arm.instruct_scale != 1.0 else ""
    key += f"-anchor{arm.cls_anchor:g}" if arm.cls_anchor else ""
    key += "-swapped" if arm.swap_images else ""
    key += "-frozenproj" if not arm.projector else ""
    key += own_stage2_suffix(arm.own_stage2)
    # simple FT at 1e-3 keeps the first studies' layout (no lr in the key)
    if arm.trainer == "simple-ft" and study.cfg.recipe.simple_ft_lr != 1e-3:
        key += f"-ftlr{study.cfg.recipe.simple_ft_lr:g}"
    return key + (f"-{arm.target}" if arm.target else "")


def run_dir(study: Study, arm: Arm, seed: int) -> Path:
    return study.out / "runs" / f"seed{seed}" / recipe_key(study, arm)


# --- trainers -----------------------------------------------------------------------------------------------


def train_none(study: Study, arm: Arm, seed: int):
    return create_encoder(str(study.base_path)), {}


def train_llm(study: Study, arm: Arm, seed: int):
    """Stage 3 through the frozen LLM, on top of this seed's shared stages 1+2."""
    from spatialboost.studies.replicate.diagnostics import adapter_stats, loss_curve, weight_change

    r = recipe_dict(study, arm)
    shared = ensure_shared(study, seed, r["llm_width"], r["instruct_steps"], arm.own_stage2)
    cfg = train_config(study, arm, seed, shared)
    run_training(cfg)
    encoder = load_encoder(Path(cfg.run_dir) / "encoder")
    diag: dict[str, Any] = {"stage3_loss": loss_curve(stage_dir(cfg.run_dir, "encoder")),
                            "image_gain": {"stage2": _read_gain(shared, "instruct"),
                                           "stage3": _read_gain(cfg.run_dir, "encoder"),
                                           "blind": _read_gain(shared / "blind", "instruct")}}  # fmt: skip
    diag.update(adapter_stats(encoder))
    if arm.mode == "full":
        diag["weight_rel_change"] = weight_change(encoder, train_none(study, arm, seed)[0])
    if seed == 0 and arm.name in ANSWER_ARMS:
        diag["answers"] = answer_diagnostics(study, cfg)
    return encoder, diag


ANSWER_ARMS = ("sb-dual", "sb-tuned", "sb-full", "val-stage2-5x")  # seed 0: answer-token accuracy


def _read_gain(run_dir: str | Path, stage: str) -> dict[str, Any]:

    path = stage_dir(run_dir, stage) / GAIN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def answer_diagnostics(study: Study, cfg) -> dict[str, Any]:
    from spatialboost.studies.replicate.data import ensure_diag_dataset
    from spatialboost.studies.replicate.diagnostics import answer_accuracy

    data = ensure_diag_dataset(study.out / "data", study.cfg.sizes)
    return {"before": answer_accuracy(cfg, data, after_stage3=False),
            "after": answer_accuracy(cfg, data, after_stage3=True),
            "before_other_images": answer_accuracy(cfg, data, after_stage3=False, shuffle_images=True),
            "after_other_images": answer_accuracy(cfg, data, after_stage3=True, shuffle_images=True)}  # fmt: skip


def train_dense(study: Study, arm: Arm, seed: int):
    """A linear depth/seg head + dual-channel Attn+ on ground truth (same images and steps as stage 3)."""
    from spatialboost.studies.replicate.dense import DenseConfig, load_dense_data, train_dense_head
    from spatialboost.studies.replicate.diagnostics import adapter_stats

    r, s = recipe_dict(study, arm), study.cfg.sizes
    out = run_dir(study, arm, seed)
    reused = _reuse(out)
    if reused is not None:
        return reused
    encoder = boost_encoder(create_encoder(str(study.base_path)), gate="channel", gate_init=r["gate_init"])
    if arm.data not in study._dense:  # loaded once per process for every dense arm on the same data
        study._dense[arm.data] = load_dense_data(study.data(arm.data), encoder, s.image_size)
    dcfg = DenseConfig(target=arm.target, steps=r["encoder_steps"], head_warmup_steps=s.head_warmup_steps,
                       batch_size=s.batch_size, lr=r["encoder_lr"], lr_gates=r["lr_gates"],
                       head_lr=study.cfg.recipe.head_lr, seed=seed)  # fmt: skip
    _, result = train_dense_head(encoder, study._dense[arm.data], dcfg)
    diag = {"warmup_loss": _ends(result.warmup_losses), "joint_loss": _ends(result.losses),
            "joint_loss_curve": result.losses, **adapter_stats(encoder)}  # fmt: skip
    return _save(out, encoder, diag, include_base=False)


def train_simple_ft(study: Study, arm: Arm, seed: int):
    from spatialboost.studies.replicate.diagnostics import weight_change
    from spatialboost.studies.replicate.simple_ft import simple_finetune

    out = run_dir(study, arm, seed)
    reused = _reuse(out)
    if reused is not None:
        return reused
    encoder = create_encoder(str(study.base_path))
    res = simple_finetune(encoder, study.data(arm.data), stage3_steps(study, arm), study.cfg.recipe.simple_ft_lr,
                          seed, study.cfg.sizes.image_size)  # fmt: skip
    diag = {"loss": [res.loss_start, res.loss_end], "label_accuracy": res.val_accuracy,
            "weight_rel_change": weight_change(encoder, create_encoder(str(study.base_path)))}  # fmt: skip
    return _save(out, encoder, diag, include_base=True)


TRAINERS = {"none": train_none, "llm": train_llm, "dense": train_dense, "simple-ft": train_simple_ft}


def _ends(values: list[float]) -> list[float]:
    return [values[0], values[-1]] if values else []


def _reuse(out: Path):
    if (out / "encoder" / "config.json").is_file() and (out / "train.json").is_file():
        log.info("reusing trained encoder %s", out / "encoder")
        return load_encoder(out / "encoder"), json.loads((out / "train.json").read_text())
    return None


def _save(out: Path, encoder, diag: dict[str, Any], include_base: bool):
    save_encoder(encoder, out / "encoder", include_base=include_base)
    atomic_write_json(out / "train.json", diag)
    return encoder.eval(), diag


# --- training configs ---------------------------------------------------------------------------------------


def ensure_shared(
    study: Study, seed: int, llm_width: int = 0, instruct_steps: int = 0, own: OwnStage2 | None = None
) -> Path:
    """Stages 1+2 of ``seed`` (trained once, reused by every LLM arm of that seed, LM width, stage-2 length).
    ``own``: a stage 2 of its own on the same stage 1 (trained once, beside the plain shared run), which also
    replays stage 1's reading conversations / trains on a data variant instead of main / beside main / stops once
    its held-out A/B accuracy reaches ``own.stop`` (``stage2_stop_config``)."""
    cfg = shared_config(study, seed, llm_width, instruct_steps)
    run_training(cfg)  # finished stages are skipped
    if not own:
        return Path(cfg.run_dir)
    if own.replay and not (cfg.stages.align.data or {}).get("datasets"):
        raise ConfigError(
            f"recipe {study.cfg.recipe_name!r} has no reading warm-up (reading_turns) to replay"
        )
    plain = Path(cfg.run_dir)
    main = [str(study.data(own.data))] if own.data else list(cfg.data.datasets)
    plus = [str(study.data(own.plus))] if own.plus else []
    reading = cfg.stages.align.data["datasets"] if own.replay else []
    cfg.run_dir = plain.with_name(plain.name + own_stage2_suffix(own))
    cfg.init_from = str(plain)  # stage 1's output
    if is_tiny_llm(study.cfg.recipe.llm):  # stage 1's token ids: the plain run's corpus BPE
        cfg.model.tokenizer = str(plain / "tokenizer")
    cfg.stages.run = ["instruct"]
    cfg.stages.instruct.data = {"datasets": [*main, *plus, *reading]}
    cfg.image_gain.blind = False
    if own.stop:
        stage2_stop_config(cfg, own.stop)
    run_training(cfg)
    return Path(cfg.run_dir)


# the held-out A/B accuracy a stop-at-accuracy stage 2 checks this many times over its max_steps
STOP_CHECKS = 15


def stage2_stop_config(cfg, target: float) -> None:
    """Stage 2 ends at the first check (about ``STOP_CHECKS`` over its length) whose held-out A/B accuracy with
    the right images reaches ``target`` (``stages.instruct.stop_at_ab_accuracy``)."""
    cfg.stages.instruct.stop_at_ab_accuracy = target
    cfg.image_gain.every = max(1, round(cfg.stages.instruct.max_steps / STOP_CHECKS))


REPLAY_SUFFIX = "-replay"  # a stage-2-replay run (shared stages, stage 3 alike) beside its plain twin
STAGE2_DATA_MARK = "-s2-"  # a run whose own stage 2 trains on another data variant: -s2-<variant>
STAGE2_PLUS_MARK = "-s2plus-"  # a run whose own stage 2 also trains on a data variant: -s2plus-<variant>
STAGE2_STOP_MARK = "-s2stop"  # a run whose own stage 2 stops at an A/B accuracy: -s2stop<accuracy>


def own_stage2_suffix(own: OwnStage2) -> str:
    """What a run with its own stage 2 (shared stages and stage 3 alike) adds to its plain twin's name."""
    return ((REPLAY_SUFFIX if own.replay else "") + (f"{STAGE2_DATA_MARK}{own.data}" if own.data else "")
            + (f"{STAGE2_PLUS_MARK}{own.plus}" if own.plus else "")
            + (f"{STAGE2_STOP_MARK}{own.stop:g}" if own.stop else ""))  # fmt: skip


def plain_run(shared: Path) -> Path:
    """The plain shared run a shared run's stage 1 and tokenizer come from: itself, or the plain twin of a run
    with its own stage 2."""
    name = shared.name
    for mark in (STAGE2_DATA_MARK, STAGE2_PLUS_MARK, STAGE2_STOP_MARK):
        name = name.split(mark)[0]
    return shared.with_name(name.removesuffix(REPLAY_SUFFIX))


def _llm_options(width: int) -> dict[str, int]:
    return {"hidden_size": width, "intermediate_size": 2 * width} if width and width != 64 else {}


def shared_config(study: Study, seed: int, llm_width: int = 0, instruct_steps: int = 0):

    s, r = study.cfg.sizes, study.cfg.recipe
    stages = StagesConfig(
        run=["align", "instruct"],
        align=AlignStage(max_steps=s.align_steps, lr=r.align_lr, warmup_ratio=0.05, **micro_batches(s)),
        instruct=InstructStage(max_steps=instruct_steps or s.instruct_steps, lr=r.instruct_lr, warmup_ratio=0.05,
                               **micro_batches(s)),
    )  # fmt: skip
    width = llm_width or r.llm_width
    path = study.out / "runs" / f"seed{seed}" / f"shared-w{width}{_recipe_tag(study)}"
    if instruct_steps and instruct_steps != s.instruct_steps:
        path = path.with_name(f"{path.name}-i{instruct_steps}")
    cfg = _train_config(study, path, seed, stages, study.data("main"), None, width, {})
    cfg.image_gain.blind = r.blind and seed == 0 and bool(cfg.image_gain.datasets)
    if r.reading_turns:  # stage 1 = the reading warm-up: LM + projector on terse reference-token questions
        from spatialboost.studies.replicate.data import ensure_reading_dataset

        reading = ensure_reading_dataset(study.out / "data", s, dict(r.reading_turns))
        # a random tiny LM learns to read with the projector; a pre-trained one stays frozen (the paper's stage 1)
        cfg.stages.align.train_llm = is_tiny_llm(r.llm)
        cfg.stages.align.data = {"datasets": [str(reading)]}  # the rest inherits cfg.data
    return cfg


def micro_batches(s: Sizes) -> dict[str, int]:
    """An LM stage's batch: ``s.batch_size`` samples a step in ``s.grad_accum`` micro-batches."""
    return {"batch_size": s.batch_size // s.grad_accum, "grad_accum": s.grad_accum}


def _recipe_tag(study: Study) -> str:
    """Runs of the default recipe keep the first study's layout names only for ``paper-text``."""
    return "" if study.cfg.recipe_name == "paper-text" else f"-{study.cfg.recipe_name}"


def train_config(study: Study, arm: Arm, seed: int, shared: Path):

    r = recipe_dict(study, arm)
    stage = EncoderStage(max_steps=r["encoder_steps"], lr=r["encoder_lr"], lr_gates=r["lr_gates"],
                         warmup_ratio=0.05, cls_anchor=arm.cls_anchor, train_projector=arm.projector,
                         **micro_batches(study.cfg.sizes))  # fmt: skip
    stages = StagesConfig(run=["encoder"], encoder=stage)
    boost = {"gate": "channel", "gate_init": r["gate_init"], "mode": arm.mode}
    tokenizer = plain_run(shared) / "tokenizer" if is_tiny_llm(r["llm"]) else None  # pre-trained: its own
    cfg = _train_config(study, run_dir(study, arm, seed), seed, stages, study.data(arm.data), tokenizer,
                        r["llm_width"], boost)  # fmt: skip
    cfg.init_from = str(shared)
    cfg.data.swap_images = arm.swap_images
    cfg.data.max_length = DATA[arm.data].max_length or cfg.data.max_length
    return cfg


def _train_config(study: Study, path: Path, seed, stages, data: Path, tokenizer, llm_width, boost):

    r = study.cfg.recipe
    model = VLMConfig(encoder=str(study.base_path), llm=r.llm, tokenizer=None if tokenizer is None
                      else str(tokenizer), boost=boost,
                      llm_options=_llm_options(llm_width) if is_tiny_llm(r.llm) else {})  # fmt: skip
    # the encoder sees the rendered side (a real encoder's own default, e.g. DINOv2's 224, would upsample)
    data_cfg = DataConfig(datasets=[str(data)], image_size=study.cfg.sizes.image_size,
                          max_length=_max_length(r), refs=list(r.refs),
                          image_tokens=r.image_tokens, cache_features=r.cache_features,
                          feature_cache_dir=str(study.cache / "train-features"))  # fmt: skip
    gain = ImageGainConfig(datasets=[str(study.heldout)], max_samples=study.cfg.sizes.heldout_scenes)
    return TrainConfig(run_dir=path, seed=seed, device="cpu", model=model, data=data_cfg, stages=stages,
                       image_gain=gain, checkpoint=CheckpointConfig(every=study.cfg.sizes.checkpoint_every, keep_last=1),
                       log=LogConfig(every=1, tensorboard=False, progress=not study.cfg.quick))  # fmt: skip


def _max_length(recipe) -> int:
    """The first study's 1024 tokens; conversations with extra turns and references need more room."""
    return 2048 if recipe.extra_turns or recipe.refs else 1024


# --- the tuned arm ------------------------------------------------------------------------------------------


def resolve_tuned(study: Study, arm: Arm) -> Arm | None:
    """The tuned arm with the recipe of the search arm of lowest val depth RMSE, the mean over the val seeds
    it finished (recorded in tuning.json with each candidate's per-seed values)."""
    per_seed: dict[str, list[float]] = {}
    for a in ARMS.names():
        candidate = ARMS.get(a)
        if not (candidate.search and candidate.candidate):
            continue
        paths = [study.result_path(candidate, s) for s in range(study.cfg.val_seeds)]
        if values := [json.loads(p.read_text())["metrics"]["depth"]["rmse"] for p in paths if p.is_file()]:
            per_seed[a] = values
    if not per_seed:
        log.warning("no val search results: skipping the tuned arm")
        return None
    results = {a: sum(v) / len(v) for a, v in per_seed.items()}
    best = ARMS.get(min(results, key=results.get))
    atomic_write_json(study.out / "tuning.json", {"metric": f"val depth RMSE (mean over {val_seeds_span(study.cfg.val_seeds)})",
                                                  "candidates": results, "per_seed": per_seed, "chosen": best.name,
                                                  "recipe": recipe_dict(study, best)})  # fmt: skip
    return replace(best, name=arm.name, label=f"{arm.label}: {best.label}", search=False, tuned=True)

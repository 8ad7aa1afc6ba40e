"""The chain of stages: ``run_training(cfg)`` is what ``spatialboost train`` calls.

Run directory::

    <run_dir>/config.yaml          the config as loaded (defaults filled in; checked on resume)
    <run_dir>/config.resolved.yaml the same with every stage's ``data`` merged: what each stage reads
    <run_dir>/tokenizer/           trained on the corpus for a tiny LLM (else the LLM's own is used)
    <run_dir>/stage1-align/        checkpoints/step-*/, metrics.jsonl, tb/
    <run_dir>/stage2-instruct/
    <run_dir>/stage3-encoder/      checkpoints/step-*/encoder/ as well (models.export layout)
    <run_dir>/encoder/             the final boosted encoder: ``spatialboost export <run_dir> OUT``

Re-running the same command resumes: finished stages are skipped (their output is reused), an
unfinished one continues from its newest checkpoint.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import yaml

from spatialboost.config import ConfigError, flatten, from_dict, save_config, to_dict
from spatialboost.data.tokenizer import corpus_from_records, load_tokenizer, save_tokenizer, train_tokenizer
from spatialboost.dataset_format import read_manifest, read_records
from spatialboost.errors import UserError
from spatialboost.io import OutputDir, atomic_write_json
from spatialboost.models.export import save_encoder
from spatialboost.models.llm import TINY_LLMS, ensure_image_token, ensure_ref_tokens, load_llm_tokenizer
from spatialboost.train import distributed as dist_utils
from spatialboost.train.checkpoint import load_weights
from spatialboost.train.config import STAGE_NAMES, TrainConfig
from spatialboost.train.loop import GAIN_FILE, StageResult, stage2_image_gain, train_stage
from spatialboost.train.stages import STAGES, build_encoder, finished_output, load_encoder_weights, stage_dir

log = logging.getLogger(__name__)

# keys that may change between a run and its resumption without changing what is computed (a stage's
# ``stages.<name>.data.num_workers`` as well as ``data.num_workers``)
RESUMABLE_CHANGES = ("log.", "device", "init_from", "stages.run", "checkpoint.", "data.num_workers")
RESOLVED_FILE = "config.resolved.yaml"


def run_training(cfg: TrainConfig) -> list[StageResult]:
    env = dist_utils.init_distributed(cfg.device)
    if not env.is_main:  # one process speaks for all
        logging.getLogger("spatialboost").setLevel(logging.WARNING)
    try:
        check_config(cfg, env)
        tokenizer = prepare_tokenizer(cfg, env)
        results = []
        for stage in cfg.stages.run:
            log.info("== stage %d: %s ==", STAGES[stage].index, STAGES[stage].title)
            results.append(train_stage(cfg, stage, env, tokenizer))
            if stage == "instruct" and cfg.image_gain.blind and cfg.image_gain.datasets:
                train_blind_baseline(cfg, env, tokenizer)
        if "encoder" in cfg.stages.run and env.is_main:
            write_final_encoder(cfg)
        dist_utils.barrier(env)
        return results
    finally:
        dist_utils.shutdown(env)


RUN_KIND = "training run"  # the OutputDir kind of a run_dir


def blind_config(cfg: TrainConfig) -> TrainConfig:
    """The text-only baseline: the same stages 1+2, seeds and data with every image feature zeroed."""
    blind = copy.deepcopy(cfg)
    blind.run_dir = Path(cfg.run_dir) / "blind"
    blind.blind = True
    blind.init_from = None
    blind.stages.run = [s for s in cfg.stages.run if s in ("align", "instruct")]
    blind.image_gain.blind = False
    return blind


def train_blind_baseline(cfg: TrainConfig, env, tokenizer) -> None:
    """Train the blind baseline (``<run_dir>/blind``) and add its held-out loss to stage 2's image gain."""
    blind = blind_config(cfg)
    log.info("== text-only baseline (images zeroed) for the image gain: %s ==", blind.run_dir)
    check_config(blind, env)
    for stage in blind.stages.run:
        train_stage(blind, stage, env, tokenizer)
    main, text_only = stage2_image_gain(cfg), stage2_image_gain(blind)
    if env.is_main and main and text_only and "blind" not in main:
        main["blind"] = {
            k: v["loss_right"] for k, v in text_only.items() if isinstance(v, dict) and "loss_right" in v
        }
        if "choice" in text_only:
            main["blind"]["choice_acc"] = text_only["choice"]["acc_right"]
        atomic_write_json(stage_dir(cfg.run_dir, "instruct") / GAIN_FILE, main)
    dist_utils.barrier(env)


def check_config(cfg: TrainConfig, env) -> None:
    """Claim ``run_dir`` (refused if it holds files spatialboost did not write), check the paths the config
    names, save the config and its resolved form; refuse to resume a run dir trained with a different one
    (compared resolved: what each stage computes)."""
    run_dir = Path(cfg.run_dir)
    OutputDir.check(run_dir, RUN_KIND, legacy=_legacy_run, hint="choose another run_dir")
    check_paths(cfg)
    path = run_dir / "config.yaml"
    if path.is_file():
        old = flatten(_resolved(yaml.safe_load(path.read_text()) or {}))
        new = flatten(to_dict(cfg.resolved()))
        changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        changed = [k for k in changed if not _resumable(k)]
        if changed:
            raise UserError(
                f"{cfg.run_dir} holds a run with a different config ({', '.join(changed[:5])} differ); "
                "use another run_dir, or delete this one to start over"
            )
    dist_utils.barrier(env)
    if env.is_main:
        out = OutputDir.claim(run_dir, RUN_KIND, legacy=_legacy_run, hint="choose another run_dir")
        save_config(cfg, out.path("config.yaml"))
        save_config(cfg.resolved(), out.path(RESOLVED_FILE))
        out.finish(prune=False)  # the stages below own their sub-directories


def _legacy_run(path: Path) -> list[str] | None:
    """A run dir an earlier version wrote (no marker): a config.yaml holding a training config."""
    try:
        old = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return ["config.yaml"] if isinstance(old, dict) and {"run_dir", "stages", "model"} <= set(old) else None


def check_paths(cfg: TrainConfig) -> None:
    """Before any work: run_dir can be a directory, every dataset a stage reads exists, init_from exists."""
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run_dir {run_dir}: exists and is not a directory")
    if cfg.init_from and not Path(cfg.init_from).is_dir():
        raise UserError(f"init_from {cfg.init_from}: no such run directory")
    for stage in cfg.stages.run:
        roots = cfg.stage_data(stage).datasets
        if not roots:
            raise UserError(
                f"data.datasets is empty (stage {stage}): list dataset dirs made by `spatialboost generate`"
            )
        for root in roots:
            try:
                read_manifest(root)  # names the folder or its manifest and says what to do
            except UserError as e:
                raise UserError(f"data.datasets: {e}") from None


# keys a saved config may still hold from older versions; they no longer exist and change nothing
RETIRED_KEYS = ("crash_after_steps", "fail_on_nonfinite")


def _resolved(saved: dict) -> dict:
    """A saved config read through today's ``TrainConfig`` (defaults filled in, retired keys dropped, every
    stage's ``data`` merged), so a run saved by an older version compares by what it computes."""
    try:
        # a key renamed since it was saved (model.dual_channel) is no mistake of the user's: no warning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            cfg = from_dict(TrainConfig, {k: v for k, v in saved.items() if k not in RETIRED_KEYS})
        return to_dict(cfg.resolved())
    except ConfigError:
        return saved


def _resumable(key: str) -> bool:
    """A flattened key whose change leaves what a run computes unchanged (``stages.<name>.`` is looked
    through for a stage's ``data``)."""
    parts = key.split(".")
    if len(parts) > 3 and parts[0] == "stages" and parts[2] == "data":
        key = ".".join(parts[2:])
    return key.startswith(RESUMABLE_CHANGES)


def prepare_tokenizer(cfg: TrainConfig, env):
    """The configured tokenizer; for a tiny LLM without one, the corpus BPE of ``init_from`` (the stages this
    run continues were trained with it), else a BPE trained on this run's corpus (cached)."""
    seeded = Path(cfg.init_from) / "tokenizer" if cfg.init_from else None
    if cfg.model.tokenizer:
        tok = load_tokenizer(cfg.model.tokenizer)
    elif cfg.model.llm not in TINY_LLMS:
        tok = load_llm_tokenizer(cfg.model.llm)
    elif seeded is not None and (seeded / "tokenizer.json").is_file():
        tok = load_tokenizer(seeded)
    else:
        path = Path(cfg.run_dir) / "tokenizer"
        if env.is_main and not (path / "tokenizer.json").is_file():
            train_corpus_tokenizer(cfg, path)
        dist_utils.barrier(env)
        tok = load_tokenizer(path)
    ensure_image_token(tok)
    if any(cfg.stage_data(stage).refs for stage in STAGE_NAMES):
        ensure_ref_tokens(tok)
    return tok


def train_corpus_tokenizer(cfg: TrainConfig, path: Path) -> None:
    roots = sorted({root for stage in cfg.stages.run for root in cfg.stage_data(stage).datasets})
    if not roots:
        raise UserError("data.datasets is empty: list dataset dirs made by `spatialboost generate`")
    texts = [t for root in roots for t in corpus_from_records(read_records(root))]
    log.info("training a %d-token BPE tokenizer on %d texts", cfg.model.tokenizer_vocab_size, len(texts))
    save_tokenizer(train_tokenizer(texts, vocab_size=cfg.model.tokenizer_vocab_size), path)


def write_final_encoder(cfg: TrainConfig) -> Path:
    """``<run_dir>/encoder``: the boosted encoder of stage 3's final checkpoint (save_encoder layout)."""
    out = finished_output(cfg.run_dir, "encoder")
    if out is None:
        raise UserError(f"{cfg.run_dir}: stage 3 has not finished; nothing to export")
    encoder = build_encoder(cfg, "encoder")  # the encoder alone: no LLM built just to export it
    load_encoder_weights(encoder, _load(out), source=str(out))
    path = save_encoder(encoder, Path(cfg.run_dir) / "encoder", include_base=False)
    log.info("boosted encoder -> %s", path)
    return path


def _load(out: Path):
    return load_weights(out)

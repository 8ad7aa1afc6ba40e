"""The chain of stages: ``run_training(cfg)`` is what ``spatialboost train`` calls.

Run directory::

    <run_dir>/config.yaml          the resolved config (checked on resume)
    <run_dir>/tokenizer/           trained on the corpus for a tiny LLM (else the LLM's own is used)
    <run_dir>/stage1-align/        checkpoints/step-*/, metrics.jsonl, tb/
    <run_dir>/stage2-instruct/
    <run_dir>/stage3-encoder/      checkpoints/step-*/encoder/ as well (models.export layout)
    <run_dir>/encoder/             the final boosted encoder: ``spatialboost export <run_dir> OUT``

Re-running the same command resumes: finished stages are skipped (their output is reused), an
unfinished one continues from its newest checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from spatialboost.config import save_config, to_dict
from spatialboost.errors import UserError
from spatialboost.train import distributed as dist_utils
from spatialboost.train.config import TrainConfig
from spatialboost.train.loop import StageResult, train_stage
from spatialboost.train.stages import STAGES, build_encoder, finished_output, load_trainable

log = logging.getLogger(__name__)

# keys that may change between a run and its resumption without changing what is computed
RESUMABLE_CHANGES = ("log.", "device", "init_from", "stages.run", "checkpoint.", "data.num_workers")


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
        if "encoder" in cfg.stages.run and env.is_main:
            write_final_encoder(cfg)
        dist_utils.barrier(env)
        return results
    finally:
        dist_utils.shutdown(env)


def check_config(cfg: TrainConfig, env) -> None:
    """Save the resolved config; refuse to resume a run dir trained with a different one."""
    path = Path(cfg.run_dir) / "config.yaml"
    if path.is_file():
        old, new = _flatten(yaml.safe_load(path.read_text()) or {}), _flatten(to_dict(cfg))
        changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        changed = [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]
        if changed:
            raise UserError(
                f"{cfg.run_dir} holds a run with a different config ({', '.join(changed[:5])} differ); "
                "use another run_dir, or delete this one to start over"
            )
    dist_utils.barrier(env)
    if env.is_main:
        save_config(cfg, path)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def prepare_tokenizer(cfg: TrainConfig, env):
    """The configured tokenizer; for a tiny LLM without one, a BPE trained on the corpus (cached)."""
    from spatialboost.data.tokenizer import load_tokenizer
    from spatialboost.models.llm import TINY_LLMS, ensure_image_token, load_llm_tokenizer

    if cfg.model.tokenizer:
        tok = load_tokenizer(cfg.model.tokenizer)
    elif cfg.model.llm not in TINY_LLMS:
        tok = load_llm_tokenizer(cfg.model.llm)
    else:
        path = Path(cfg.run_dir) / "tokenizer"
        if env.is_main and not (path / "tokenizer.json").is_file():
            train_corpus_tokenizer(cfg, path)
        dist_utils.barrier(env)
        tok = load_tokenizer(path)
    ensure_image_token(tok)
    return tok


def train_corpus_tokenizer(cfg: TrainConfig, path: Path) -> None:
    from spatialboost.data.dataset import read_records
    from spatialboost.data.tokenizer import corpus_from_records, save_tokenizer, train_tokenizer

    roots = sorted({root for stage in cfg.stages.run for root in cfg.stage_data(stage).datasets})
    if not roots:
        raise UserError("data.datasets is empty: list dataset dirs made by `spatialboost generate`")
    texts = [t for root in roots for t in corpus_from_records(read_records(root))]
    log.info("training a %d-token BPE tokenizer on %d texts", cfg.model.tokenizer_vocab_size, len(texts))
    save_tokenizer(train_tokenizer(texts, vocab_size=cfg.model.tokenizer_vocab_size), path)


def write_final_encoder(cfg: TrainConfig) -> Path:
    """``<run_dir>/encoder``: the boosted encoder of stage 3's final checkpoint (save_encoder layout)."""
    from spatialboost.models.export import save_encoder

    out = finished_output(cfg.run_dir, "encoder")
    if out is None:
        raise UserError(f"{cfg.run_dir}: stage 3 has not finished; nothing to export")
    encoder = build_encoder(cfg, "encoder")  # the encoder alone: no LLM built just to export it
    encoder_weights = {
        k.removeprefix("encoder."): v for k, v in _load(out).items() if k.startswith("encoder.")
    }
    load_trainable(encoder, encoder_weights, source=str(out))
    path = save_encoder(encoder, Path(cfg.run_dir) / "encoder", include_base=False)
    log.info("boosted encoder -> %s", path)
    return path


def _load(out: Path):
    from spatialboost.train.checkpoint import load_weights

    return load_weights(out)

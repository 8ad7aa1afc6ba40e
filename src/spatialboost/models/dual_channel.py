"""Dual-channel attention (paper Eq. 1, from CogVideo) and the baselines it is compared with.

For every chosen attention layer the original module ``Attn`` stays frozen, an exact copy ``Attn+`` is
trained, and a per-layer gate ``a`` (zero at init) mixes them::

    out = sigmoid(a) * Attn(x) + (1 - sigmoid(a)) * Attn+(x)

Since ``Attn+ == Attn`` at init, the boosted encoder starts as the pre-trained function and
``d out / d a`` is exactly zero at step 0: only ``Attn+`` moves first, which is why it must be
trainable (a deep copy of a frozen module is frozen too; ``requires_grad_(True)`` is explicit here).

``DualChannelAttention`` wraps the attention MODULE (peft ``LoraLayer`` style: it holds the original
as ``.base`` and adds ``.plus`` and ``.gate``), so it works for every family in ``hf_encoders``. Its
fused forward builds one (6D, D) QKV projection from the live weights of both channels, runs one SDPA
call over 2x heads (RoPE applied to both, as DINOv3 does) and the two output projections, then mixes
them with ``torch.lerp`` -- the same arithmetic as Eq. 1, without a second pass through the module.
``fused=False`` runs the naive copy-and-call reference (used by tests and the benchmark).

Gate shapes: "channel" (D,) -- the paper's; "head" (num_heads,) repeated over each head's head_dim
block of output channels; "scalar" (1,). ``mode="lora"`` (peft LoRA on the attention projections) and
``mode="full"`` (the whole encoder trains) are the paper's baselines.

``add_dual_channel`` modifies the encoder IN PLACE and returns the same object, with the options
recorded as ``encoder.boost_config`` (a ``BoostConfig``) so ``models.export`` can rebuild it.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from spatialboost.config import ConfigError
from spatialboost.models.encoder_base import VisionEncoder

Mode = Literal["dual", "lora", "full"]  # "dual" (Eq. 1) | peft LoRA | the whole encoder trains
Gate = Literal["channel", "head", "scalar"]  # (D,) | (num_heads,) | (1,)
MODES: tuple[str, ...] = typing.get_args(Mode)
GATES: tuple[str, ...] = typing.get_args(Gate)


@dataclass
class BoostConfig:
    """The options of ``add_dual_channel``; also the typed ``model.dual_channel`` section of a training
    config (``spatialboost.config`` checks the Literal fields when the config loads)."""

    mode: Mode = "dual"
    gate: Gate = "channel"
    layers: list[int] | None = None  # block indices (negative from the end); None = all
    gate_init: float = 0.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: list[str] | None = None  # projection names; None = the family's q, k, v, out
    fused: bool = True  # dual mode: fused forward (False = naive copy-and-call reference)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.gate not in GATES:
            raise ConfigError(f"gate must be one of {list(GATES)}, got {self.gate!r}")
        if self.lora_rank < 1:
            raise ConfigError(f"lora_rank must be >= 1, got {self.lora_rank}")


class DualChannelAttention(nn.Module):
    """Holds the frozen attention ``base``, its trainable copy ``plus`` and the gate ``a``."""

    def __init__(
        self,
        base: nn.Module,
        proj_names: tuple[str, str, str, str],
        gate: str = "channel",
        gate_init: float = 0.0,
        rope: Callable | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.plus = copy.deepcopy(base).requires_grad_(True)
        self.proj_names = proj_names
        self.num_heads = getattr(base, "num_heads", None) or base.num_attention_heads
        self.head_dim = base.head_dim
        self.scaling = getattr(base, "scaling", None) or base.scale
        self.dim = getattr(base, proj_names[3]).out_features
        self.gate_kind = gate
        size = {"channel": self.dim, "head": self.num_heads, "scalar": 1}[gate]
        self.gate = nn.Parameter(torch.full((size,), float(gate_init)))
        self.rope = rope
        self.fused = fused

    def alpha(self) -> torch.Tensor:
        """sigmoid(a) broadcast to the D output channels."""
        a = torch.sigmoid(self.gate)
        if self.gate_kind == "head":
            return a.repeat_interleave(self.head_dim)
        return a.expand(self.dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        if self.fused:
            out, out_plus = self._fused_channels(hidden_states, attention_mask, position_embeddings)
        else:
            out, out_plus = self._naive_channels(hidden_states, attention_mask, position_embeddings, **kwargs)
        # alpha * Attn + (1 - alpha) * Attn+; exactly Attn when the channels agree, and d/d alpha = Attn - Attn+
        return torch.lerp(out_plus, out, self.alpha()), None

    def _naive_channels(self, x, attention_mask, position_embeddings, **kwargs):
        extra = {} if position_embeddings is None else {"position_embeddings": position_embeddings}
        out, _ = self.base(x, attention_mask=attention_mask, **extra, **kwargs)
        out_plus, _ = self.plus(x, attention_mask=attention_mask, **extra, **kwargs)
        return out, out_plus

    def _fused_channels(self, x, attention_mask, position_embeddings):
        b, t, _ = x.shape
        h2, hd = 2 * self.num_heads, self.head_dim
        qkv = self._qkv(x).view(b, t, 3, h2, hd).permute(2, 0, 3, 1, 4)  # (3, B, 2H, T, hd)
        query, key, value = qkv.unbind(0)  # heads 0..H-1: Attn, heads H..2H-1: Attn+
        if self.rope is not None and position_embeddings is not None:
            query, key = self.rope(query, key, position_embeddings)
        dropout = _dropout_p(self.base) if self.training else 0.0
        y = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=self.scaling
        )
        y = y.transpose(1, 2).reshape(b, t, 2, self.num_heads * hd)  # (B, T, 2, D)
        o = self.proj_names[3]
        out = getattr(self.base, o)(y[:, :, 0])
        out_plus = getattr(self.plus, o)(y[:, :, 1])
        return out, out_plus

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, 6D) laid out as q, q+, k, k+, v, v+ (each D = H heads of hd)."""
        names = self.proj_names[:3]
        if not (torch.is_grad_enabled() and any(p.requires_grad for p in self.plus.parameters())):
            # inference: one (6D, D) matmul over the live weights of both channels
            weight, bias = _stack_linear([getattr(m, n) for n in names for m in (self.base, self.plus)])
            return F.linear(x, weight, bias)
        # training: two matmuls, so backward computes weight gradients for Attn+ only
        b, t, _ = x.shape
        base = F.linear(x, *_stack_linear([getattr(self.base, n) for n in names]))  # (B, T, 3D)
        plus = F.linear(x, *_stack_linear([getattr(self.plus, n) for n in names]))
        both = torch.stack([base.view(b, t, 3, -1), plus.view(b, t, 3, -1)], dim=3)  # (B, T, 3, 2, D)
        return both.view(b, t, -1)


def _stack_linear(layers: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the live weights (and biases; zeros where one is missing) of several Linears."""
    weight = torch.cat([m.weight for m in layers], dim=0)
    if all(m.bias is None for m in layers):
        return weight, None
    bias = torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in layers])
    return weight, bias


def _dropout_p(attn: nn.Module) -> float:
    for name in ("attention_dropout", "dropout"):
        p = getattr(attn, name, None)
        if isinstance(p, float):
            return p
    return 0.0


def add_dual_channel(
    encoder: VisionEncoder,
    gate: str = "channel",
    layers: list[int] | None = None,
    gate_init: float = 0.0,
    mode: str = "dual",
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    lora_targets: list[str] | None = None,
    fused: bool = True,
) -> VisionEncoder:
    """Boost ``encoder`` IN PLACE (returns the same object); everything but the adapter is frozen."""
    if getattr(encoder, "boost_config", None) is not None:
        raise ValueError(f"encoder is already boosted ({encoder.boost_config}); build a fresh one")
    cfg = BoostConfig(mode, gate, None if layers is None else list(layers), gate_init, lora_rank, lora_alpha,
                      None if lora_targets is None else list(lora_targets), fused)  # fmt: skip
    cfg.validate()
    slots = _selected_slots(encoder, cfg.layers)
    encoder.requires_grad_(False)
    if cfg.mode == "dual":
        rope = getattr(type(encoder), "rope", None)
        for block, attr in slots:
            wrapped = DualChannelAttention(
                getattr(block, attr), encoder.proj_names, gate, gate_init, rope, fused
            )
            setattr(block, attr, wrapped)
    elif cfg.mode == "lora":
        _inject_lora(encoder, slots, cfg)
    else:
        encoder.requires_grad_(True)
    encoder.boost_config = cfg
    return encoder


def check_layers(encoder: VisionEncoder, layers: list[int] | None) -> None:
    """ConfigError when ``layers`` names blocks the encoder does not have (what add_dual_channel would raise)."""
    _selected_slots(encoder, layers)


def _selected_slots(encoder: VisionEncoder, layers: list[int] | None) -> list[tuple[nn.Module, str]]:
    slots = encoder.attention_slots()
    if layers is None:
        return slots
    n = len(slots)
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ConfigError(f"dual-channel layers {bad} out of range for an encoder with {n} blocks")
    return [slots[i] for i in sorted({i % n for i in layers})]


def _inject_lora(encoder: VisionEncoder, slots: list[tuple[nn.Module, str]], cfg: BoostConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    targets = cfg.lora_targets or list(encoder.proj_names)
    attn_ids = {id(getattr(block, attr)) for block, attr in slots}
    attn_names = [name for name, m in encoder.named_modules() if id(m) in attn_ids]
    full_names = [f"{name}.{t}" for name in attn_names for t in targets]
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=full_names, lora_dropout=0.0)
    inject_adapter_in_model(lora, encoder)
    for name, p in encoder.named_parameters():
        p.requires_grad_("lora_" in name)


def trainable_parameters(encoder: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters an optimiser should see (name -> parameter)."""
    return {name: p for name, p in encoder.named_parameters() if p.requires_grad}


def _dual_names(encoder: nn.Module) -> list[str]:
    return [name for name, m in encoder.named_modules() if isinstance(m, DualChannelAttention)]


def adapter_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """What training changed: Attn+ and gates (dual), LoRA weights (lora), or every weight (full)."""
    cfg: BoostConfig | None = getattr(encoder, "boost_config", None)
    if cfg is None:
        raise ValueError("encoder is not boosted (call add_dual_channel first)")
    state = encoder.state_dict()
    if cfg.mode == "full":
        return {k: v.detach() for k, v in state.items()}
    if cfg.mode == "lora":
        return {k: v.detach() for k, v in state.items() if "lora_" in k}
    keep = tuple(p for n in _dual_names(encoder) for p in (f"{n}.plus.", f"{n}.gate"))
    return {k: v.detach() for k, v in state.items() if k.startswith(keep)}


def load_adapter_state_dict(encoder: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``adapter_state_dict`` output into an encoder boosted with the same options (keys must match)."""
    expected = set(adapter_state_dict(encoder))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"adapter keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    encoder.load_state_dict(state, strict=False)


def base_state_dict(encoder: VisionEncoder) -> dict[str, torch.Tensor]:
    """The wrapped HF model's own weights under its original names (wrappers and adapters removed)."""
    renames = {f"{n}.base.": f"{n}." for n in _dual_names(encoder)}
    drop = tuple(p for n in _dual_names(encoder) for p in (f"{n}.plus.", f"{n}.gate"))
    out = {}
    for k, v in encoder.state_dict().items():
        if k.startswith(drop) or "lora_" in k:
            continue
        for old, new in renames.items():
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        k = k.replace(".base_layer.", ".")
        out[k.removeprefix("model.")] = v.detach()
    return out


def boost_options(encoder: nn.Module) -> dict | None:
    cfg = getattr(encoder, "boost_config", None)
    return None if cfg is None else dataclasses.asdict(cfg)

"""Dual-channel attention (paper Eq. 1, from CogVideo) and the baselines it is compared with.

For every chosen attention layer the original module ``Attn`` stays frozen, an exact copy ``Attn+`` is
trained, and a per-layer gate ``a`` (zero at init) mixes them::

    out = sigmoid(a) * Attn(x) + (1 - sigmoid(a)) * Attn+(x)

Since ``Attn+ == Attn`` at init, the boosted encoder starts as the pre-trained function and
``d out / d a`` is exactly zero at step 0: only ``Attn+`` moves first, which is why it must be
trainable (a deep copy of a frozen module is frozen too; ``requires_grad_(True)`` is explicit here).

``DualChannelAttention`` wraps the attention MODULE (peft ``LoraLayer`` style: it holds the original
as ``.base`` and adds ``.plus`` and ``.gate``), so it works for every family in ``hf_encoders``. Its
fused forward takes one of two paths, both the arithmetic of Eq. 1 without a second pass through the
module (RoPE applied to both channels, as DINOv3 does):

- weights constant (no autograd: ``no_grad``, ``inference_mode``, or every parameter frozen) -- one
  (6D, D) QKV matmul, one SDPA call over 2H heads, and one (D, 2D) output matmul with the gate folded
  in: [diag(alpha) W_o | diag(1 - alpha) W_o+] [h; h+] + lerp(b_o+, b_o, alpha). Those weights
  (``folded_weights()``) are cached and rebuilt when any source tensor changes (``WeightCache``: version
  counters, addresses, dtype, device), so optimizer steps, ``load_state_dict`` and ``.to()`` are seen;
  they hold 8 D^2 numbers per layer (as many as both channels' attention weights) and are freed by the
  next training forward or ``drop_weight_cache()``. Without autograd on a CPU in float32, the two linear
  maps run through oneDNN with the weights pre-packed once in its blocked layout (``LINEAR_KERNELS``,
  ``BoostConfig.inference_kernel``: "auto" | "onednn" | "aten"; "auto" from a width of 256 up); measured
  ~10% faster than the per-call aten matmul at ViT-S size on an AVX2 host
  (``benchmarks/bench_dual_channel.py`` times both beside the naive wrapper).
  The fold sums both channels in one matmul: at init the output equals the base's up to float32
  rounding (a few ulp), not bit for bit;
- training (autograd needs the weights) -- per channel one (3D, D) QKV matmul (the frozen channel's
  concatenated weight cached), SDPA and its output projection, mixed with ``torch.lerp``: weight
  gradients for ``Attn+`` only, and bit-identical channels at init, so the output is exactly the
  base's and the step-0 gate gradient exactly zero.

``fused=False`` runs the naive copy-and-call reference (used by tests and the benchmark).

Gate shapes: "channel" (D,) -- the paper's; "head" (num_heads,) repeated over each head's head_dim
block of output channels; "scalar" (1,). ``mode="lora"`` (peft LoRA on the attention projections) and
``mode="full"`` (the whole encoder trains; ``"full_finetune"`` is accepted too, as ``"dual_channel"`` for
``"dual"``) are the paper's baselines (``models.config.MODE_TITLES``).

What each mode trains is declared once, in ``adapter_keys`` (peft's ``adapter_layer_names``: Attn+ and the
gates, LoRA's layers, or every weight); freezing, optimiser groups and state dicts all follow it.

``boost_encoder(encoder, BoostConfig)`` modifies the encoder IN PLACE and returns the same object, with
the options recorded as ``encoder.boost_config`` so ``models.export`` can rebuild it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import platform
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from spatialboost.config import ConfigError
from spatialboost.models.config import BoostConfig
from spatialboost.models.encoder_base import VisionEncoder


class DualChannelAttention(nn.Module):
    """Holds the frozen attention ``base``, its trainable copy ``plus`` and the gate ``a``."""

    adapter_layer_names = ("plus", "gate")  # what training adds: Attn+ (a module) and the gate (a tensor)

    def __init__(
        self,
        base: nn.Module,
        proj_names: tuple[str, str, str, str],
        gate: str = "channel",
        gate_init: float = 0.0,
        rope: Callable | None = None,
        fused: bool = True,
        inference_kernel: str = "auto",
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
        self.inference_kernel = inference_kernel
        # derived weights, never saved: the folded inference weights and each channel's (3D, D) QKV
        self._folded = WeightCache()
        self._qkv_cache = {"base": WeightCache(), "plus": WeightCache()}
        self.original_only = False  # True (``original_only``): Attn alone, as the encoder was before boosting

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
        if self.original_only:
            return self._channel(
                self.base, hidden_states, attention_mask, position_embeddings, **kwargs
            ), None
        if self.fused and not self._weights_need_grad():
            return self._folded_forward(hidden_states, attention_mask, position_embeddings), None
        if self.fused:
            self._folded.clear()  # the next optimizer step makes it stale anyway; free its memory now
            out, out_plus = self._autograd_channels(hidden_states, attention_mask, position_embeddings)
        else:
            out, out_plus = self._naive_channels(hidden_states, attention_mask, position_embeddings, **kwargs)
        # alpha * Attn + (1 - alpha) * Attn+; exactly Attn when the channels agree, and d/d alpha = Attn - Attn+
        return torch.lerp(out_plus, out, self.alpha()), None

    def drop_weight_cache(self) -> None:
        """Forget the derived weights (rebuilt on the next forward). Only needed after writing weights
        through ``.data`` or a numpy view, which bypass the version counters ``WeightCache`` watches."""
        for cache in (self._folded, *self._qkv_cache.values()):
            cache.clear()

    def _apply(self, fn, recurse=True):
        self.drop_weight_cache()  # .to() / .half() / .cuda(): rebuilt from the converted weights
        return super()._apply(fn, recurse)

    def _weights_need_grad(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())

    def _naive_channels(self, x, attention_mask, position_embeddings, **kwargs):
        out = self._channel(self.base, x, attention_mask, position_embeddings, **kwargs)
        return out, self._channel(self.plus, x, attention_mask, position_embeddings, **kwargs)

    @staticmethod
    def _channel(attn: nn.Module, x, attention_mask, position_embeddings, **kwargs) -> torch.Tensor:
        """One attention module called as its encoder calls it (``Attn`` or ``Attn+``); its output, no weights."""
        extra = {} if position_embeddings is None else {"position_embeddings": position_embeddings}
        return attn(x, attention_mask=attention_mask, **extra, **kwargs)[0]

    def _attend(self, qkv, heads: int, attention_mask, position_embeddings) -> torch.Tensor:
        """(B, T, 3 * heads * hd) laid out q, k, v -> attention output (B, T, heads * hd)."""
        b, t, _ = qkv.shape
        # unbind the q/k/v axis in place (dim 2), then move heads forward: under autograd the gradient
        # is stacked straight back into qkv's (B, T, 3, heads, hd) layout, one copy (permuting first
        # stacks on a new leading axis and needs a second copy to lay it out again)
        query, key, value = (u.transpose(1, 2) for u in qkv.view(b, t, 3, heads, self.head_dim).unbind(2))
        if self.rope is not None and position_embeddings is not None:
            query, key = self.rope(query, key, position_embeddings)  # (B, heads, T, hd)
        dropout = _dropout_p(self.base) if self.training else 0.0
        y = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=self.scaling
        )
        return y.transpose(1, 2).reshape(b, t, heads * self.head_dim)

    # -- inference: weights constant, gate folded into one output projection ----------------------------
    def _folded_forward(self, x, attention_mask, position_embeddings) -> torch.Tensor:
        """One (6D, D) QKV matmul, one SDPA call over 2H heads, one (D, 2D) output matmul."""
        kernel = pick_inference_kernel(self.inference_kernel, x)
        qkv, out = self._folded.get(
            self._folded_sources(), lambda: kernel.pack_folded(self.folded_weights()), kernel.name
        )
        y = self._attend(kernel.apply(qkv, x), 2 * self.num_heads, attention_mask, position_embeddings)
        return kernel.apply(out, y)  # (B, T, 2D) = [h; h+] -> (B, T, D)

    def folded_weights(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """Eq. 1 as two linear maps: QKV (6D, D) laid out q, q+, k, k+, v, v+ (heads 0..H-1 are Attn's,
        H..2H-1 Attn+'s), and the output projection with the gate folded in,
        alpha * (W_o h + b_o) + (1 - alpha) * (W_o+ h+ + b_o+) = [diag(alpha) W_o | diag(1 - alpha) W_o+] [h; h+] + b."""
        q, k, v, o = self.proj_names
        w_qkv, b_qkv = _stack_linear([getattr(m, n) for n in (q, k, v) for m in (self.base, self.plus)])
        a = self.alpha()  # (D,)
        out, out_plus = getattr(self.base, o), getattr(self.plus, o)
        w_out = torch.cat([a[:, None] * out.weight, (1 - a)[:, None] * out_plus.weight], dim=1)  # (D, 2D)
        b_out = None
        if out.bias is not None or out_plus.bias is not None:
            b_out = torch.lerp(_bias(out_plus), _bias(out), a)
        return w_qkv, b_qkv, w_out, b_out

    def _folded_sources(self) -> list[torch.Tensor]:
        layers = [getattr(m, n) for m in (self.base, self.plus) for n in self.proj_names]
        return [*_linear_tensors(layers), self.gate]

    # -- training: autograd over both channels, weight gradients for Attn+ only -------------------------
    def _autograd_channels(self, x, attention_mask, position_embeddings):
        """Per channel one (3D, D) QKV matmul, SDPA over H heads and the output projection. Not one (6D, D)
        matmul: autograd would compute the frozen channel's weight gradient as well, and stacking both
        channels for one SDPA call costs two (B, T, 6D) copies (measured slower than two calls)."""
        outs = []
        for name, channel in (("base", self.base), ("plus", self.plus)):
            w_qkv, b_qkv = self._channel_qkv(name, channel)
            y = self._attend(F.linear(x, w_qkv, b_qkv), self.num_heads, attention_mask, position_embeddings)
            outs.append(getattr(channel, self.proj_names[3])(y))  # (B, T, D)
        return outs

    def _channel_qkv(self, name: str, channel: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        layers = [getattr(channel, n) for n in self.proj_names[:3]]
        sources = _linear_tensors(layers)
        if any(t.requires_grad for t in sources):
            return _stack_linear(layers)  # built under autograd: gradients reach each projection
        return self._qkv_cache[name].get(sources, lambda: _stack_linear(layers))


class WeightCache:
    """Tensors derived from some source tensors, rebuilt whenever a source may have changed.

    A source's key is (address, strides, version counter, dtype, device, shape): an in-place write
    (optimizer step, ``load_state_dict``, ``copy_`` under ``no_grad``) moves its version counter; a replaced,
    moved or converted tensor has another address, dtype or device, and a view of the same storage laid out
    otherwise (a transposed square weight shares address, shape and counter) other strides. The cache keeps the sources' storages
    alive, so a freed address cannot come back under another tensor with an equal version count. Writes
    through ``.data`` or numpy views bypass version counting by design, and inference tensors (weights
    created under ``inference_mode``) have no counter (``drop_weight_cache`` after editing those). The
    derived tensors are built outside autograd and outside inference mode, so they serve ``no_grad``,
    ``inference_mode`` and backward-to-the-input alike; copies and pickles start empty.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._key: tuple | None = None
        self._pins: tuple[torch.Tensor, ...] = ()
        self._value = None

    def get(self, sources: list[torch.Tensor], build: Callable, tag: str = ""):
        """``build()``'s value, rebuilt when a source changed or ``tag`` (what else the value depends on) did."""
        key = (tag, *((t.data_ptr(), t.stride(), _version(t), t.dtype, t.device, t.shape) for t in sources))
        if key != self._key:
            with torch.inference_mode(False), torch.no_grad():
                self._value = build()
                self._pins = tuple(t.detach() for t in sources)
            self._key = key
        return self._value

    def __getstate__(self) -> dict:
        return {"_key": None, "_pins": (), "_value": None}


# -- the inference path's linear maps: one kernel packs a (weight, bias) once and applies it per call ------
class AtenLinear:
    """``F.linear`` on the dense weight: every device and dtype, and autograd to the input."""

    name = "aten"

    def pack(self, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        return weight, bias

    def apply(self, packed: tuple, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *packed)

    def pack_folded(self, folded: tuple) -> tuple[tuple, tuple]:
        w_qkv, b_qkv, w_out, b_out = folded
        return self.pack(w_qkv, b_qkv), self.pack(w_out, b_out)


class OneDNNLinear(AtenLinear):
    """oneDNN's linear with the weight reordered once into its blocked layout (what inductor's freezing
    does on CPU) and the bias added inside the kernel: CPU, float32, no autograd (the op has no backward)."""

    name = "onednn"

    def pack(self, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous()), bias

    def apply(self, packed: tuple, x: torch.Tensor) -> torch.Tensor:
        weight, bias = packed
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


LINEAR_KERNELS: dict[str, AtenLinear] = {k.name: k for k in (AtenLinear(), OneDNNLinear())}


# "auto" uses oneDNN from this width up. Measured on an AVX2 host (2 threads; oneDNN/aten time of the
# (6D, D) QKV and (D, 2D) output maps at 130-2056 tokens): 0.80-1.01 at D = 384, 0.88-1.00 at D = 256,
# 0.86-1.15 at D = 192, 0.95-1.25 at D = 128, up to 2.2 at D <= 64 (the per-call overhead dominates)
ONEDNN_MIN_DIM = 256


def pick_inference_kernel(choice: str, x: torch.Tensor) -> AtenLinear:
    """The kernel for this call: oneDNN where it applies (``"auto"`` and ``"onednn"``: a float32 CPU input
    without autograd, on a torch build whose oneDNN linear works; ``"auto"`` only on x86 and for a width of
    at least ``ONEDNN_MIN_DIM``), else aten."""
    if choice == "aten" or x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
        return LINEAR_KERNELS["aten"]
    if choice == "auto" and (
        platform.machine().lower() not in ("x86_64", "amd64") or x.shape[-1] < ONEDNN_MIN_DIM
    ):
        return LINEAR_KERNELS["aten"]
    return LINEAR_KERNELS["onednn" if onednn_linear_works() else "aten"]


@functools.cache
def onednn_linear_works() -> bool:
    """Whether this torch build has oneDNN's packed linear and it agrees with ``F.linear`` (checked once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    kernel = LINEAR_KERNELS["onednn"]
    g = torch.Generator().manual_seed(0)
    x, w, b = (
        torch.randn(3, 5, 16, generator=g),
        torch.randn(24, 16, generator=g),
        torch.randn(24, generator=g),
    )
    try:
        with torch.no_grad():
            got = kernel.apply(kernel.pack(w, b), x)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return got.shape == (3, 5, 24) and torch.allclose(got, F.linear(x, w, b), atol=1e-4, rtol=1e-4)


def _version(t: torch.Tensor) -> int:
    """The tensor's version counter; inference tensors (a model built under ``inference_mode``) have none,
    and an in-place edit of one is not seen (``drop_weight_cache`` after it)."""
    return -1 if t.is_inference() else t._version


def _linear_tensors(layers: list[nn.Linear]) -> list[torch.Tensor]:
    return [t for m in layers for t in (m.weight, m.bias) if t is not None]


def _bias(layer: nn.Linear) -> torch.Tensor:
    return layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)


def _stack_linear(layers: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the live weights (and biases; zeros where one is missing) of several Linears."""
    weight = torch.cat([m.weight for m in layers], dim=0)
    if all(m.bias is None for m in layers):
        return weight, None
    return weight, torch.cat([_bias(m) for m in layers])


def _dropout_p(attn: nn.Module) -> float:
    for name in ("attention_dropout", "dropout"):
        p = getattr(attn, name, None)
        if isinstance(p, float):
            return p
    return 0.0


def boost_encoder(encoder: VisionEncoder, config: BoostConfig | None = None, **options) -> VisionEncoder:
    """Boost ``encoder`` IN PLACE (returns the same object) by ``config`` (or ``BoostConfig(**options)``), in one
    of three modes (``BoostConfig.mode``): ``dual`` (the paper's dual-channel attention, Attn+ beside the
    frozen Attn), ``lora`` (low-rank adapters on the attention projections) or ``full`` (every weight trains);
    everything but the adapter is frozen."""
    if getattr(encoder, "boost_config", None) is not None:
        raise ValueError(f"encoder is already boosted ({encoder.boost_config}); build a fresh one")
    if config is not None and options:
        raise TypeError("pass either a BoostConfig or keyword options, not both")
    cfg = dataclasses.replace(config) if config is not None else BoostConfig(**options)
    cfg.validate()
    slots = _selected_slots(encoder, cfg.layers)
    if cfg.mode == "dual":
        if cfg.inference_kernel == "onednn" and not onednn_linear_works():
            raise ConfigError(
                "inference_kernel 'onednn': this torch build has no working oneDNN linear "
                f"(torch {torch.__version__}, mkldnn available: {torch.backends.mkldnn.is_available()}); "
                "use 'auto' or 'aten'"
            )
        rope = getattr(type(encoder), "rope", None)
        for block, attr in slots:
            wrapped = DualChannelAttention(
                getattr(block, attr),
                encoder.proj_names,
                cfg.gate,
                cfg.gate_init,
                rope,
                cfg.fused,
                cfg.inference_kernel,
            )
            setattr(block, attr, wrapped)
    elif cfg.mode == "lora":
        _inject_lora(encoder, slots, cfg)
    encoder.boost_config = cfg
    mark_only_adapter_trainable(encoder)
    return encoder


@contextlib.contextmanager
def original_only(encoder: nn.Module) -> Iterator[None]:
    """Within the block, every dual-channel layer of ``encoder`` runs its frozen Attn alone: the encoder
    before boosting, whatever Attn+ and the gates hold (the reference of stage 3's CLS anchor)."""
    layers = [m for m in encoder.modules() if isinstance(m, DualChannelAttention)]
    if not layers:
        raise ValueError("original_only needs a dual-channel encoder (boost_encoder(..., mode='dual'))")
    for m in layers:
        m.original_only = True
    try:
        yield
    finally:
        for m in layers:
            m.original_only = False


# the name before the three modes shared one entry point; kept so that code written against it still runs
add_dual_channel = boost_encoder


def check_layers(encoder: VisionEncoder, layers: list[int] | None) -> None:
    """ConfigError when ``layers`` names blocks the encoder does not have (what boost_encoder would raise)."""
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
    targets = cfg.lora_targets or list(encoder.proj_names)
    attn_ids = {id(getattr(block, attr)) for block, attr in slots}
    attn_names = [name for name, m in encoder.named_modules() if id(m) in attn_ids]
    full_names = [f"{name}.{t}" for name in attn_names for t in targets]
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=full_names, lora_dropout=0.0)
    inject_adapter_in_model(lora, encoder)


# ----------------------------------------------------------------------------------------------------
# The adapter, declared once (peft's ``adapter_layer_names``). ``adapter_keys`` names every tensor the
# boost trains, with its role; freezing, the optimiser's parameter groups (``train.stages``), the adapter
# and base state dicts and both saved layouts (``models.export``, ``models.hf_export``) all read it.

GATE = "gate"  # the role of the dual-channel gates: their own learning rate, no weight decay
ADAPTER = "adapter"  # the role of every other trained tensor (Attn+, LoRA factors, full fine-tuning)


def adapter_keys(encoder: nn.Module) -> dict[str, str]:
    """State-dict key -> role (``ADAPTER`` | ``GATE``) of every tensor the encoder's boost trains:
    Attn+ and gates (dual-channel), peft's LoRA layers (``LoraLayer.adapter_layer_names``), or every
    weight (full fine-tuning). Raises if the encoder is not boosted."""
    cfg: BoostConfig | None = getattr(encoder, "boost_config", None)
    if cfg is None:
        raise ValueError("encoder is not boosted (call boost_encoder first)")
    keys = encoder.state_dict().keys()
    if cfg.mode == "full":
        return dict.fromkeys(keys, ADAPTER)
    if cfg.mode == "lora":
        names = set(LoraLayer.adapter_layer_names)
        return {k: ADAPTER for k in keys if names.intersection(k.split("."))}
    plus, gate = DualChannelAttention.adapter_layer_names
    roles = {}
    for name in _dual_names(encoder):
        prefix = f"{name}." if name else ""
        roles.update({k: ADAPTER for k in keys if k.startswith(f"{prefix}{plus}.")})
        roles[f"{prefix}{gate}"] = GATE
    return roles


def mark_only_adapter_trainable(encoder: nn.Module) -> dict[str, nn.Parameter]:
    """requires_grad on the adapter's parameters only (by name, whatever an earlier stage froze); returns them."""
    keys = adapter_keys(encoder)
    adapter = {}
    for name, p in encoder.named_parameters():
        p.requires_grad_(name in keys)
        if name in keys:
            adapter[name] = p
    return adapter


def trainable_parameters(encoder: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters an optimiser should see now (name -> parameter): those with requires_grad."""
    return {name: p for name, p in encoder.named_parameters() if p.requires_grad}


def _dual_names(encoder: nn.Module) -> list[str]:
    return [name for name, m in encoder.named_modules() if isinstance(m, DualChannelAttention)]


def adapter_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """What training changed (``adapter_keys``): Attn+ and gates, LoRA weights, or every weight."""
    keys = adapter_keys(encoder)
    return {k: v.detach() for k, v in encoder.state_dict().items() if k in keys}


def load_adapter_state_dict(encoder: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``adapter_state_dict`` output into an encoder boosted with the same options (keys must match)."""
    expected = set(adapter_keys(encoder))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"adapter keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    encoder.load_state_dict(state, strict=False)


def base_state_dict(encoder: VisionEncoder) -> dict[str, torch.Tensor]:
    """The wrapped HF model's own weights under its original names (wrappers and added adapters removed;
    a full fine-tune's weights are its base)."""
    cfg: BoostConfig | None = getattr(encoder, "boost_config", None)
    added = adapter_keys(encoder) if cfg is not None and cfg.mode != "full" else {}
    renames = {f"{n}.base.": f"{n}." for n in _dual_names(encoder)}
    out = {}
    for k, v in encoder.state_dict().items():
        if k in added:
            continue
        for old, new in renames.items():
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        k = k.replace(".base_layer.", ".")  # peft keeps the wrapped Linear as ``base_layer``
        out[k.removeprefix("model.")] = v.detach()
    return out


def boost_options(encoder: nn.Module) -> dict | None:
    cfg = getattr(encoder, "boost_config", None)
    return None if cfg is None else dataclasses.asdict(cfg)

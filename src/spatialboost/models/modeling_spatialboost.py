"""SpatialBoost dual-channel attention for transformers vision encoders -- the file an hf export ships.

Self-contained on purpose: it imports only torch, transformers and safetensors (which transformers
needs anyway), never ``spatialboost``. ``spatialboost export RUN --out DIR`` copies it next to the
``config.json`` whose ``auto_map`` names it, so that

    model = AutoModel.from_pretrained(DIR, trust_remote_code=True)

builds the boosted encoder with nothing else installed. Each class subclasses the base family's own
model (``Dinov2Model``, ``Dinov2WithRegistersModel``, ``DINOv3ViTModel``, ``CLIPVisionModel``,
``Siglip2VisionModel``) and replaces the attention module of each boosted block (``config.spatialboost
["layers"]``) by ``DualChannelAttention``: the original module ``base``, its trained copy ``plus`` and a
gate ``a`` (paper Eq. 1, from CogVideo)::

    out = sigmoid(a) * Attn(x) + (1 - sigmoid(a)) * Attn+(x)

Each channel has its own softmax, so the result is not one attention with merged weights: this is a
plain DINOv2 (etc.) network with a second attention path per boosted block, not a DINOv2 checkpoint.

Gate shapes (``config.spatialboost["gate"]``): ``"channel"`` (D,), ``"head"`` (num_heads,) repeated over
each head's head_dim output channels, ``"scalar"`` (1,).

A folder with ``spatialboost_adapter.safetensors`` and no ``model.safetensors`` holds only ``plus`` and
the gates; ``from_pretrained`` then loads the base weights from ``config.spatialboost["base_model"]``
(a hub id or a local transformers checkpoint), like a peft adapter.

``model.forward_features(pixel_values) -> (cls (B, D), patch (B, N, D))`` returns the tokens SpatialBoost's
probes use (after the family's final norm, prefix tokens removed); the usual ``model(pixel_values)``
outputs are the family's own.
"""

from __future__ import annotations

import copy

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    PretrainedConfig,
    Siglip2VisionConfig,
    Siglip2VisionModel,
)
from transformers.utils import cached_file

ADAPTER_WEIGHTS = "spatialboost_adapter.safetensors"
FULL_WEIGHTS = "model.safetensors"


class DualChannelAttention(nn.Module):
    """The frozen attention ``base``, its trained copy ``plus`` and the gate ``a``, mixed per output channel."""

    def __init__(self, base: nn.Module, gate: str, num_heads: int, dim: int) -> None:
        super().__init__()
        self.base = base
        self.plus = copy.deepcopy(base)
        self.gate_kind = gate
        self.head_dim = dim // num_heads
        size = {"channel": dim, "head": num_heads, "scalar": 1}[gate]
        self.gate = nn.Parameter(torch.zeros(size))
        self.dim = dim

    def alpha(self) -> torch.Tensor:
        """sigmoid(a) broadcast to the D output channels."""
        a = torch.sigmoid(self.gate)
        if self.gate_kind == "head":
            return a.repeat_interleave(self.head_dim)
        return a.expand(self.dim)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        out = self.base(hidden_states, *args, **kwargs)[0]  # (B, T, D)
        out_plus = self.plus(hidden_states, *args, **kwargs)[0]  # (B, T, D)
        return torch.lerp(out_plus, out, self.alpha()), None  # alpha * Attn + (1 - alpha) * Attn+


class SpatialBoostMixin:
    """What every family adds: the boosted blocks, adapter-only loading and ``forward_features``."""

    blocks_path: str  # dotted path of the block list inside the family's model
    attn_attr: str  # the attention module's attribute inside a block
    family_class: type  # the base family's model class

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.boost()

    def boost(self) -> None:
        opts = self.config.spatialboost
        blocks = self.get_submodule(self.blocks_path)
        for i in opts["layers"]:
            attn = getattr(blocks[i], self.attn_attr)
            dual = DualChannelAttention(
                attn, opts["gate"], self.config.num_attention_heads, self.config.hidden_size
            )
            setattr(blocks[i], self.attn_attr, dual)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        config = kwargs.get("config")
        if not isinstance(config, PretrainedConfig):
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path)
        base_ref = config.spatialboost.get("base_model")
        if not base_ref or _has_file(pretrained_model_name_or_path, FULL_WEIGHTS, kwargs):
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return cls.from_base_and_adapter(base_ref, pretrained_model_name_or_path, config, kwargs)

    @classmethod
    def from_base_and_adapter(cls, base_ref: str, adapter_ref: str, config: PretrainedConfig, kwargs: dict):
        """The base family's weights from ``base_ref`` plus ``plus`` and the gates from ``adapter_ref``.

        The base is loaded by its own class (every weight and buffer set by transformers), then given this
        class, which adds nothing but the wrapped attention of the boosted blocks (no second random init)."""
        hub = {k: kwargs[k] for k in ("cache_dir", "token", "local_files_only") if k in kwargs}
        dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
        if isinstance(dtype, torch.dtype):
            hub["dtype"] = dtype
        model = cls.family_class.from_pretrained(base_ref, **hub)
        config._attn_implementation = model.config._attn_implementation
        model.__class__ = cls
        model.config = config
        model.boost()  # plus = a copy of the base attention, gate = zeros; both overwritten below
        adapter_file = cached_file(adapter_ref, ADAPTER_WEIGHTS, revision=kwargs.get("revision"),
                                   **{k: v for k, v in hub.items() if k != "dtype"})  # fmt: skip
        adapter = load_file(adapter_file)
        expected = {k for k in model.state_dict() if ".plus." in k or k.endswith(".gate")}
        if set(adapter) != expected:
            missing, unexpected = sorted(expected - set(adapter)), sorted(set(adapter) - expected)
            raise ValueError(
                f"{adapter_file}: adapter keys do not match (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        model.load_state_dict(adapter, strict=False)
        return model.eval()

    def forward_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) normalised pixels -> cls (B, D), patch (B, N, D): the tokens SpatialBoost probes."""
        tokens = self(pixel_values).last_hidden_state  # (B, T, D), after the final norm
        prefix = 1 + getattr(self.config, "num_register_tokens", 0)
        return tokens[:, 0], tokens[:, prefix:]


def _has_file(repo: str, name: str, kwargs: dict) -> bool:
    hub = {k: kwargs[k] for k in ("cache_dir", "token", "local_files_only", "revision") if k in kwargs}
    return cached_file(repo, name, _raise_exceptions_for_missing_entries=False, **hub) is not None


# -- per-family behaviour beyond the table ---------------------------------------------------------------------


class _ClipFeatures:
    """CLIP vision: SpatialBoost's tokens are post_layernorm of every token."""

    def forward_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        other_size = tuple(pixel_values.shape[-2:]) != (self.config.image_size,) * 2
        tokens = self(pixel_values, interpolate_pos_encoding=other_size).last_hidden_state
        normed = self.post_layernorm(tokens)  # (B, 1 + N, D)
        return normed[:, 0], normed[:, 1:]


class _Siglip2Pixels:
    """SigLIP2 vision (NaFlex): also takes (B, 3, H, W) pixels and patchifies them itself; no CLS token."""

    def forward(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None, **kwargs):
        """NaFlex inputs as the family takes them, or (B, 3, H, W) pixels (a square-crop processor's)."""
        if pixel_values.dim() == 4:
            pixel_values, pixel_attention_mask, spatial_shapes = self.patchify(pixel_values)
        return super().forward(pixel_values, pixel_attention_mask, spatial_shapes, **kwargs)

    def patchify(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> patches (B, N, p*p*C) in the processor's layout, an all-ones mask, (h, w) shapes."""
        b, c, height, width = pixels.shape
        p = self.config.patch_size
        h, w = height // p, width // p
        patches = pixels.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * c)
        mask = torch.ones(b, h * w, dtype=torch.long, device=pixels.device)
        shapes = torch.tensor([[h, w]], device=pixels.device).expand(b, 2)
        return patches, mask, shapes

    def forward_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(pixel_values)
        tokens = out.last_hidden_state  # (B, N, D), no CLS token
        cls = out.pooler_output if self.config.vision_use_head else tokens.mean(dim=1)
        return cls, tokens


# -- the families: one row each -> SpatialBoost<Config> (model_type spatialboost_<type>) and SpatialBoost<Model> --

# (family config class, family model class, dotted path of its blocks, attention attribute, extra behaviour)
FAMILIES = (
    (Dinov2Config, Dinov2Model, "encoder.layer", "attention", ()),
    (Dinov2WithRegistersConfig, Dinov2WithRegistersModel, "encoder.layer", "attention", ()),
    (
        DINOv3ViTConfig,
        DINOv3ViTModel,
        "model.layer",
        "attention",
        (),
    ),  # RoPE: the layer hands both channels it
    (CLIPVisionConfig, CLIPVisionModel, "encoder.layers", "self_attn", (_ClipFeatures,)),
    (Siglip2VisionConfig, Siglip2VisionModel, "encoder.layers", "self_attn", (_Siglip2Pixels,)),
)


def _boosted_pair(
    config_base: type, model_base: type, blocks_path: str, attn_attr: str, extra: tuple
) -> tuple:
    """The remote-code classes of one family: a config with its own model type, a model that boosts."""
    config_cls = type(f"SpatialBoost{config_base.__name__}", (config_base,),
                      {"model_type": f"spatialboost_{config_base.model_type}", "__module__": __name__})  # fmt: skip
    model_cls = type(f"SpatialBoost{model_base.__name__}", (*extra, SpatialBoostMixin, model_base),
                     {"config_class": config_cls, "family_class": model_base, "blocks_path": blocks_path,
                      "attn_attr": attn_attr, "__module__": __name__})  # fmt: skip
    return config_cls, model_cls


for _row in FAMILIES:
    for _cls in _boosted_pair(*_row):
        globals()[_cls.__name__] = _cls  # what config.json's auto_map names

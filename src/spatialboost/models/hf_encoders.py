"""Wrappers that put HF transformers vision models behind the ``VisionEncoder`` contract.

One class per family: DINOv2, DINOv2 with registers, DINOv3 ViT (RoPE), SigLIP2 vision (NaFlex), CLIP
vision (also OpenCLIP checkpoints in HF format). Each wrapper holds the HF model as ``self.model`` and
runs its blocks itself, so ``forward_intermediates`` can stop early and the dual-channel adapter can
replace each block's attention module (``attention_slots``) without the family noticing.

Shapes: B batch, T tokens (prefix + patches), D embed dim, (h, w) patch grid, N = h * w.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from torch import nn
from transformers import (
    AutoConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    PretrainedConfig,
    PreTrainedModel,
    Siglip2VisionConfig,
    Siglip2VisionModel,
)
from transformers.models.dinov3_vit.modeling_dinov3_vit import apply_rotary_pos_emb

from spatialboost.errors import UnknownNameError, UserError
from spatialboost.image_transform import IMAGENET_MEAN, IMAGENET_STD
from spatialboost.models.encoder_base import EncoderOutput, EncoderSpec, VisionEncoder
from spatialboost.models.encoder_files import CONFIG, EncoderFormatError

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
# the shape of every family's tiny random test config (``tiny-*``: what tests parametrise over)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4)
APACHE = {"license": "apache-2.0"}


@dataclass(frozen=True)
class FamilyInfo:
    """What code outside the encoder needs to know about a family, kept beside its encoder class: the model
    card (``display_name``, ``licenses``), the registry (``hub`` short names, the ``tiny`` test config) and,
    from the class itself, the hf export's remote-code classes (``HFEncoder.remote_classes``), the
    transformers class a plain export loads as (``model_class``) and preprocessing (``default_mean`` /
    ``default_std`` / ``default_image_size``). ``tests/test_encoders.py`` fails for a family missing any."""

    display_name: str  # "DINOv2", "CLIP vision": how the model card names the family
    licenses: dict[str, dict[str, str]]  # hub id prefix -> license metadata of those checkpoints' own cards
    hub: dict[str, str]  # registered short name -> hub id
    tiny: tuple[str, dict[str, Any]]  # registered random test config: (name, config fields)


class HFEncoder(VisionEncoder):
    """Common loop: embed -> blocks -> final norm -> (cls, patch). Subclasses fill the family details."""

    family: ClassVar[str]
    info: ClassVar[FamilyInfo]
    config_class: ClassVar[type[PretrainedConfig]]
    model_class: ClassVar[type[PreTrainedModel]]
    model_types: ClassVar[tuple[str, ...]]
    attn_attr: ClassVar[str] = "attention"  # the attention module's attribute name inside a block
    proj_names: ClassVar[tuple[str, str, str, str]] = ("q_proj", "k_proj", "v_proj", "o_proj")
    default_mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    default_std: ClassVar[tuple[float, float, float]] = IMAGENET_STD

    def __init__(
        self,
        model: PreTrainedModel,
        name: str,
        image_size: int | None = None,
        mean=None,
        std=None,
        interpolation: str | None = None,
    ):
        super().__init__()
        self.model = model
        cfg = model.config
        self.spec = EncoderSpec(
            name=name,
            family=self.family,
            embed_dim=cfg.hidden_size,
            patch_size=_int(cfg.patch_size),
            image_size=image_size or self.default_image_size(cfg),
            num_layers=cfg.num_hidden_layers,
            num_heads=cfg.num_attention_heads,
            num_prefix_tokens=self.prefix_tokens(cfg),
            mean=tuple(mean or self.default_mean),
            std=tuple(std or self.default_std),
            interpolation=interpolation or "bicubic",
        )

    @classmethod
    def remote_classes(cls) -> tuple[str, str]:
        """(config class, model class) names of the family in ``modeling_spatialboost.py`` (its table builds
        ``SpatialBoost<transformers class name>`` for each)."""
        return f"SpatialBoost{cls.config_class.__name__}", f"SpatialBoost{cls.model_class.__name__}"

    # -- family hooks -------------------------------------------------------------------------
    @staticmethod
    def default_image_size(cfg: PretrainedConfig) -> int:
        return _int(cfg.image_size)

    @staticmethod
    def prefix_tokens(cfg: PretrainedConfig) -> int:
        return 1

    @property
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """(B, 3, H, W) -> tokens (B, T, D) and the keyword arguments every block needs."""
        raise NotImplementedError

    def pool(self, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normed tokens (B, T, D) -> cls (B, D), patch (B, N, D)."""
        return normed[:, 0], normed[:, self.spec.num_prefix_tokens :]

    # -- contract -----------------------------------------------------------------------------
    def attention_slots(self) -> list[tuple[nn.Module, str]]:
        """(block, attribute) of every block's attention module, in depth order."""
        return [(block, self.attn_attr) for block in self.blocks]

    def forward_intermediates(
        self, pixels: torch.Tensor, layers: list[int] | None = None
    ) -> list[EncoderOutput]:
        n = len(self.blocks)
        wanted = [n - 1] if layers is None else [self._index(i, n) for i in layers]
        grid = self._grid(pixels)
        x, block_kwargs = self.embed(pixels)  # (B, T, D)
        states: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            x = block(x, **block_kwargs)
            if i in wanted:
                states[i] = x
        outputs = []
        for i in wanted:
            cls, patch = self.pool(self.final_norm(states[i]))
            outputs.append(EncoderOutput(cls=cls, patch=patch, grid=grid))
        return outputs

    def _grid(self, pixels: torch.Tensor) -> tuple[int, int]:
        p = self.spec.patch_size
        h, w = pixels.shape[-2:]
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {p} (see models.preprocess)")
        return h // p, w // p

    @staticmethod
    def _index(i: int, n: int) -> int:
        if not -n <= i < n:
            raise IndexError(f"layer {i} out of range for an encoder with {n} blocks")
        return i % n


def _int(v: Any) -> int:
    return int(v[0] if isinstance(v, (list, tuple)) else v)


class Dinov2Encoder(HFEncoder):
    family = "dinov2"
    info = FamilyInfo(
        display_name="DINOv2",
        licenses={"facebook/dinov2-": APACHE},
        hub={f"dinov2-{s}": f"facebook/dinov2-{s}" for s in ("small", "base", "large", "giant")},
        tiny=("tiny-dinov2", dict(TINY, image_size=32, mlp_ratio=2)),
    )
    config_class = Dinov2Config
    model_class = Dinov2Model
    model_types = ("dinov2",)

    @staticmethod
    def default_image_size(cfg: PretrainedConfig) -> int:
        return 224 if cfg.image_size == 518 else _int(cfg.image_size)  # hub DINOv2 crops 224

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layer

    @property
    def final_norm(self) -> nn.Module:
        return self.model.layernorm

    def embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.model.embeddings(pixels), {"attention_mask": None}


class Dinov2RegistersEncoder(Dinov2Encoder):
    family = "dinov2-registers"
    info = FamilyInfo(
        display_name="DINOv2 with registers",
        licenses={"facebook/dinov2-with-registers-": APACHE},
        hub={
            f"dinov2-reg-{s}": f"facebook/dinov2-with-registers-{s}"
            for s in ("small", "base", "large", "giant")
        },
        tiny=("tiny-dinov2-reg", dict(TINY, image_size=32, mlp_ratio=2, num_register_tokens=2)),
    )
    config_class = Dinov2WithRegistersConfig
    model_class = Dinov2WithRegistersModel
    model_types = ("dinov2_with_registers",)

    @staticmethod
    def prefix_tokens(cfg: PretrainedConfig) -> int:
        return 1 + cfg.num_register_tokens


class Dinov3Encoder(HFEncoder):
    """DINOv3 ViT: CLS + registers, RoPE on the patch tokens' queries and keys (``rope`` below)."""

    family = "dinov3"
    info = FamilyInfo(
        display_name="DINOv3 ViT",
        licenses={
            "facebook/dinov3-": {
                "license": "other",
                "license_name": "dinov3-license",
                "license_link": "https://ai.meta.com/resources/models-and-libraries/dinov3-license/",
            }
        },
        hub={
            "dinov3-vits16": "facebook/dinov3-vits16-pretrain-lvd1689m",
            "dinov3-vitb16": "facebook/dinov3-vitb16-pretrain-lvd1689m",
            "dinov3-vitl16": "facebook/dinov3-vitl16-pretrain-lvd1689m",
            "dinov3-vit7b16": "facebook/dinov3-vit7b16-pretrain-lvd1689m",
        },
        tiny=("tiny-dinov3", dict(TINY, image_size=32, num_register_tokens=2)),
    )
    config_class = DINOv3ViTConfig
    model_class = DINOv3ViTModel
    model_types = ("dinov3_vit",)

    @staticmethod
    def prefix_tokens(cfg: PretrainedConfig) -> int:
        return 1 + cfg.num_register_tokens

    @staticmethod
    def rope(q: torch.Tensor, k: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]):
        """The family's own rotary embedding, applied to (B, heads, T, hd) queries and keys."""
        cos, sin = position_embeddings
        return apply_rotary_pos_emb(q, k, cos, sin)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.model.layer

    @property
    def final_norm(self) -> nn.Module:
        return self.model.norm

    def embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        x = self.model.embeddings(pixels)
        return x, {"position_embeddings": self.model.rope_embeddings(pixels)}


class _ClipLayout(HFEncoder):
    """The module layout CLIP and SigLIP2 share (SigLIP's vision tower is CLIP's code): ``encoder.layers``
    blocks, attention at ``self_attn`` with an ``out_proj``, a ``post_layernorm`` on every token."""

    attn_attr = "self_attn"
    proj_names = ("q_proj", "k_proj", "v_proj", "out_proj")

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.model.post_layernorm


class ClipEncoder(_ClipLayout):
    """CLIP / OpenCLIP (HF format). Tokens after ``post_layernorm`` (applied to every token, not only CLS)."""

    family = "clip"
    info = FamilyInfo(
        display_name="CLIP vision",
        licenses={"laion/CLIP-": {"license": "mit"}},
        hub={
            "clip-vit-l14": "openai/clip-vit-large-patch14",
            "openclip-vit-h14": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
            "openclip-vit-bigg14": "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
        },
        tiny=("tiny-clip", dict(TINY, image_size=32)),
    )
    config_class = CLIPVisionConfig
    model_class = CLIPVisionModel
    model_types = ("clip_vision_model", "clip")
    default_mean = CLIP_MEAN
    default_std = CLIP_STD

    def embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        other_size = tuple(pixels.shape[-2:]) != (self.model.config.image_size,) * 2
        x = self.model.embeddings(pixels, interpolate_pos_encoding=other_size)
        return self.model.pre_layrnorm(x), {"attention_mask": None}


class Siglip2Encoder(_ClipLayout):
    """SigLIP2 vision (NaFlex): this wrapper patchifies (B, 3, H, W) itself; no CLS token.

    ``cls`` is the attention-pooling head's output when the model has one, else the mean patch token.
    """

    family = "siglip2"
    info = FamilyInfo(
        display_name="SigLIP2 vision",
        licenses={"google/siglip2-": APACHE},
        hub={
            "siglip2-base": "google/siglip2-base-patch16-naflex",
            "siglip2-so400m": "google/siglip2-so400m-patch16-naflex",
            "siglip2-giant": "google/siglip2-giant-opt-patch16-256",
        },
        tiny=("tiny-siglip2", dict(TINY, num_patches=64)),
    )
    config_class = Siglip2VisionConfig
    model_class = Siglip2VisionModel
    model_types = ("siglip2_vision_model", "siglip2")
    default_mean = HALF
    default_std = HALF

    @staticmethod
    def default_image_size(cfg: PretrainedConfig) -> int:
        return int(round(cfg.num_patches**0.5)) * cfg.patch_size

    @staticmethod
    def prefix_tokens(cfg: PretrainedConfig) -> int:
        return 0

    def embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        b, c, height, width = pixels.shape
        p = self.spec.patch_size
        h, w = height // p, width // p
        # (B, C, h, p, w, p) -> (B, h, w, p, p, C) -> (B, N, p*p*C), the processor's patch layout
        patches = pixels.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * c)
        shapes = torch.tensor([[h, w]], device=pixels.device).expand(b, 2)
        return self.model.embeddings(patches, shapes), {"attention_mask": None}

    def pool(self, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls = self.model.head(normed) if self.model.use_head else normed.mean(dim=1)
        return cls, normed


FAMILIES: dict[str, type[HFEncoder]] = {
    cls.family: cls
    for cls in (Dinov2Encoder, Dinov2RegistersEncoder, Dinov3Encoder, ClipEncoder, Siglip2Encoder)
}


def family_for_model_type(model_type: str) -> type[HFEncoder] | None:
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def family_for_model(model: nn.Module) -> type[HFEncoder] | None:
    return next((f for f in FAMILIES.values() if isinstance(model, f.model_class)), None)


def wrap_model(model: nn.Module, name: str, source: dict[str, Any], **spec_kwargs: Any) -> HFEncoder:
    """Put a built transformers vision model behind the contract (shares its weights)."""
    family = family_for_model(model)
    if family is None:
        known = ", ".join(f.model_class.__name__ for f in FAMILIES.values())
        raise TypeError(f"cannot wrap {type(model).__name__}; supported model classes: {known}")
    model.config._attn_implementation = "sdpa"
    encoder = family(model.eval(), name=name, **spec_kwargs)
    encoder.spec.extra["source"] = source
    return encoder.eval()


def build_from_config(family: str, config: dict[str, Any]) -> nn.Module:
    """A random-weight HF model of ``family`` from plain config fields (no download)."""
    fam = FAMILIES[family]
    cfg = fam.config_class(**config)
    cfg._attn_implementation = "sdpa"
    return fam.model_class(cfg)


def load_pretrained(
    name_or_path: str, pretrained: bool, overrides: dict[str, Any], local: bool = False
) -> HFEncoder:
    """A transformers checkpoint (hub id, or a ``save_pretrained`` folder when ``local``) behind the contract.

    Dispatches on the checkpoint's ``model_type``; ``from_pretrained`` when ``pretrained``, else random weights
    from its config. ``overrides`` are config fields."""
    try:
        auto_cfg = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:  # not cached offline, no such repo, or a config without model_type
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{name_or_path}: cannot read a transformers config ({reason})") from None
    family = family_for_model_type(auto_cfg.model_type)
    if family is None:
        known = sorted(t for f in FAMILIES.values() for t in f.model_types)
        raise UnknownNameError(
            f"{name_or_path}: model_type {auto_cfg.model_type!r} is not a supported vision encoder; known: {known}"
        )
    if pretrained:
        model = family.model_class.from_pretrained(name_or_path, attn_implementation="sdpa", **overrides)
    else:
        cfg = family.config_class.from_pretrained(name_or_path, **overrides)
        model = family.model_class(cfg)
    kind = "path" if local else "hub"
    ref = str(Path(name_or_path).resolve()) if local else name_or_path
    source = {"kind": kind, "ref": ref, "family": family.family, "pretrained": pretrained}
    mean, std, size, interpolation = _processor_conventions(name_or_path, local)
    return wrap_model(model, name=name_or_path, source=source, mean=mean, std=std, image_size=size,
                      interpolation=interpolation)  # fmt: skip


PIL_INTERPOLATION = {2: "bilinear", 3: "bicubic"}  # a preprocessor config's ``resample`` (PIL codes)


def _processor_conventions(name_or_path: str, local: bool) -> tuple[Any, Any, int | None, str | None]:
    """mean/std/crop size/interpolation from a checkpoint's ``preprocessor_config.json``; the family's defaults
    only when the checkpoint has none (said in the log). A file that exists but cannot be read is a UserError."""
    file = _preprocessor_file(name_or_path, local)
    if file is None:
        log.info("%s has no preprocessor_config.json: the family's mean/std/size apply", name_or_path)
        return None, None, None, None
    try:
        pre = json.loads(file.read_text(encoding="utf-8"))
        size = pre.get("crop_size") or pre.get("size") or {}
        side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
        resample = pre.get("resample")
        if resample is not None and resample not in PIL_INTERPOLATION:
            log.info("%s: resample %s has no torch equivalent here; bicubic applies", file, resample)
        interpolation = PIL_INTERPOLATION.get(resample)
        return pre.get("image_mean"), pre.get("image_std"), int(side) if side else None, interpolation
    except (ValueError, AttributeError, TypeError) as e:
        raise UserError(f"{file}: unreadable preprocessor config ({e}); fix or remove the file") from None


def _preprocessor_file(name_or_path: str, local: bool) -> Path | None:
    if local:
        file = Path(name_or_path) / "preprocessor_config.json"
        return file if file.is_file() else None
    try:
        return Path(hf_hub_download(name_or_path, "preprocessor_config.json"))
    except EntryNotFoundError:  # the repo has no such file (or, offline, it was never cached)
        return None


def model_from_saved_config(path: Path, config: dict[str, Any]) -> torch.nn.Module:
    """The base HF model of a saved ``config`` (random weights, to be overwritten), the caller's RNG untouched."""
    family = config["spec"].get("family")
    if family not in FAMILIES:
        raise EncoderFormatError(f"{path / CONFIG}: unknown family {family!r}; known: {sorted(FAMILIES)}")
    hf_config = {
        k: v for k, v in config["hf_config"].items() if k not in ("model_type", "transformers_version")
    }
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG as it was
        return build_from_config(family, hf_config)

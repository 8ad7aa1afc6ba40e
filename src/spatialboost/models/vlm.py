"""SpatialVLM: vision encoder f_V -> projector g_P -> causal LM f_L (LLaVA-1.5 layout, paper section 3).

Image tokens: every ``<image>`` placeholder is expanded to N copies of the image token id up front
(``data.conversation``; N = patch tokens per image), and ``embed`` overwrites those N embeddings with the
projected patch tokens of that image. Images are taken in the order their token blocks appear in
``input_ids`` (row-major), which is how the collators order ``pixel_values``: several images per
sample (multi-view) just means several blocks.

Reference tokens (``data.refs``): each ``<point>`` / ``<region>`` token's embedding gets the projected
encoder feature of its place added (the weights come from the collator: ``ref_rows``, ``ref_images``,
``ref_patches``, ``ref_vals``). Image tokens may be switched off (``num_image_tokens`` 0 in the data) while
references still read the image. ``image_features`` (cached frozen patch features) may replace
``pixel_values`` when the encoder is frozen; ``blind=True`` zeroes every image feature (the text-only
baseline: same model, same steps, nothing from the image).

Loss: next-token cross-entropy, **summed over the answer tokens of the whole batch and divided by their
number** (a token-level mean over the batch, not a mean of per-sample means). Padded and packed batches
of the same conversations therefore give the same loss. An empty label mask raises.

Building: ``SpatialVLM.from_config(VLMConfig, tokenizer, seed=...)`` assembles encoder (boosted on request),
LLM and projector, every random init seeded from ``seed`` (nanoVLM's ``VisionLanguageModel(cfg)``). The
parts are ``vlm.encoder``, ``vlm.projector`` and ``vlm.llm``; what each training stage trains and how it
is saved belong to ``train.stages`` and ``train.checkpoint``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spatialboost.constants import LM_IGNORE_INDEX
from spatialboost.errors import EmptyLabelsError
from spatialboost.models.attention import supports_varlen, use_varlen_attention, varlen_kwargs
from spatialboost.models.config import VLMConfig
from spatialboost.models.dual_channel import boost_encoder, check_layers, original_only
from spatialboost.models.encoder_base import VisionEncoder
from spatialboost.models.encoders import create_encoder
from spatialboost.models.llm import build_llm, ensure_image_token, ref_token_ids
from spatialboost.models.preprocess import transform_for
from spatialboost.models.projector import MLPProjector
from spatialboost.rng import seeded

log = logging.getLogger(__name__)


@dataclass
class VLMOutput:
    loss: torch.Tensor | None  # scalar: mean over the batch's answer tokens
    logits: torch.Tensor | None  # (R, L, V); None when the loss was computed with return_logits=False
    num_label_tokens: int
    # stage 3's CLS anchor (``cls_anchor_loss``), unweighted; None when ``SpatialVLM.cls_anchor`` is 0
    anchor: torch.Tensor | None = None


def block_causal_mask(seq_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(R, L) conversation ids (0 = padding) -> (R, 1, L, L) additive mask, causal inside each conversation.

    Padding positions see only themselves (a fully masked row would give NaNs); they carry no labels.
    """
    L = seq_ids.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=seq_ids.device).tril()  # (L, L) key <= query
    same = seq_ids[:, :, None] == seq_ids[:, None, :]  # (R, L, L)
    real_key = (seq_ids > 0)[:, None, :]
    eye = torch.eye(L, dtype=torch.bool, device=seq_ids.device)
    allowed = (same & causal & real_key) | eye  # (R, L, L)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seq_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]  # (R, 1, L, L)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy summed over labelled targets / their count; raises if there are none."""
    targets = labels[:, 1:]  # (R, L-1): token t+1 is predicted at position t
    count = _count_labels(targets)
    logits = logits[:, :-1].float()
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
    return total / count, count


def labelled_lm_loss(
    hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module
) -> tuple[torch.Tensor, int]:
    """``causal_lm_loss`` from the last hidden states (R, L, D), projecting only the labelled positions.

    Answers are a small share of a VLM batch (image tokens and questions are not targets), so this skips
    most of the (R, L, V) logits, their log-softmax and its backward.
    """
    targets = labels[:, 1:]  # (R, L-1)
    keep = targets != LM_IGNORE_INDEX
    count = _count_labels(targets)
    logits = lm_head(hidden[:, :-1][keep]).float()  # (T, V), T = count
    return F.cross_entropy(logits, targets[keep], reduction="sum") / count, count


def gather_patches(feats: torch.Tensor, images: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """(n, N, D) patch features -> (E, D): row e is ``feats[images[e], patches[e]]``, with a backward that is
    bit-reproducible on CPU.

    Reference tokens read the same patch many times (a region covers patches its neighbours cover too, a
    point's bilinear weights share corners), so the gradient of this gather sums several rows into one
    patch. Advanced indexing (``feats[images, patches]``) does that sum in ``index_put_(accumulate=True)``,
    which on CPU runs as unordered atomic adds over threads once it has >= 32768 elements and more than one
    thread: the float rounding then depends on thread timing and the stage-3 weights on the machine's load
    (issue 26). ``index_select``'s backward is ``index_add_``, which adds the rows in index order."""
    flat = feats.reshape(-1, feats.shape[-1])  # (n * N, D)
    return flat.index_select(0, images * feats.shape[1] + patches)


def cls_anchor_loss(encoder: nn.Module, pixel_values: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """How far the boosted encoder's CLS token ``cls`` (n, D) has moved from the frozen original's on the same
    images: sum of squared differences over the sum of the original's squares (0 at init; 1 = moved as far as
    the token is long). The original runs without gradient, its dual-channel layers on Attn alone."""
    with torch.no_grad(), original_only(encoder):
        ref = encoder.forward_features(pixel_values).cls.to(cls.dtype)
    return relative_drift(cls, ref)


def relative_drift(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """sum |x - ref|^2 / sum |ref|^2 over every row: how far ``x`` moved from ``ref``, in units of its squared
    norm (the CLS anchor's measure, and what ``benchmarks/knn_tokens.py`` reports for finished runs)."""
    return (x - ref).square().sum() / ref.square().sum().clamp_min(1e-12)


def _count_labels(targets: torch.Tensor) -> int:
    count = int((targets != LM_IGNORE_INDEX).sum())
    if count == 0:
        raise EmptyLabelsError(
            "batch has an empty label mask: nothing to learn from (tokenization mismatch?)"
        )
    return count


# Causal LMs whose forward is exactly ``lm_head(model(...).last_hidden_state)`` (no logit scaling or
# soft-capping), so ``labelled_lm_loss`` equals the loss over their full logits.
_PLAIN_LM_HEAD = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}


class SpatialVLM(nn.Module):
    """``encoder`` (a ``VisionEncoder``) -> ``projector`` -> ``llm`` (an HF causal LM).

    ``varlen_attention`` (default) switches an ``"sdpa"`` LLM to ``models.attention``'s ``"sdpa_varlen"``,
    which runs packed rows conversation by conversation; ``False`` keeps the explicit block-diagonal mask.
    """

    def __init__(
        self,
        encoder: VisionEncoder,
        llm: nn.Module,
        image_token_id: int,
        projector: nn.Module | None = None,
        varlen_attention: bool = True,
        ref_token_ids: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.llm = llm
        if varlen_attention:
            use_varlen_attention(llm)
        self.projector = projector or MLPProjector(encoder.spec.embed_dim, llm.config.hidden_size)
        self.image_token_id = image_token_id
        self.ref_token_ids = tuple(ref_token_ids)
        self.blind = False  # True: every image feature is zeroed (the text-only baseline)
        # > 0 (stage 3, ``stages.encoder.cls_anchor``): training forwards also return ``cls_anchor_loss``
        self.cls_anchor = 0.0

    @classmethod
    def from_config(
        cls, cfg: VLMConfig, tokenizer, seed: int = 0, boosted: bool = False, check_boost_layers: bool = False
    ) -> SpatialVLM:
        """Encoder (``boosted``: with ``cfg.boost``'s adapter) -> projector -> LLM, as training builds it.

        ``tokenizer`` sizes the LLM's embeddings and gets ``<image>`` (and the reference tokens' ids come
        from it). Random inits are seeded from ``seed``: the encoder from ``seed``, its adapter from
        ``seed + 1``, the LLM from ``seed``, the projector from ``seed + 2`` (a rebuilt model is bit-identical).
        """
        encoder = encoder_from_config(cfg, seed, boosted, check_boost_layers)
        llm = build_llm(
            cfg.llm,
            tokenizer,
            seed=seed,
            attn_implementation=cfg.attn_implementation,
            **cfg.llm_options.for_llm(cfg.llm),
        )
        image_token_id = ensure_image_token(tokenizer, llm)
        with seeded(seed + 2):
            projector = MLPProjector(encoder.spec.embed_dim, llm.config.hidden_size, _out_scale(cfg, llm))
        return cls(encoder, llm, image_token_id, projector=projector, ref_token_ids=ref_token_ids(tokenizer))

    def num_image_tokens(self, image_size: int | None = None) -> int:
        """Patch tokens per image at ``image_size`` (default: the encoder's) = ids per ``<image>``."""
        return transform_for(self.encoder.spec, image_size).tokens_per_image

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> (n, N, D_enc) encoder patch tokens (zeros when ``blind``)."""
        feats = self.encoder.forward_features(pixel_values).patch
        return torch.zeros_like(feats) if self.blind else feats

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> (n, N, D_llm) projected patch tokens."""
        return self.projector(self.patch_features(pixel_values))

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        refs: dict[str, torch.Tensor] | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (R, L, D_llm): each image's patch tokens in its block of image ids, and each
        reference token's place feature added to its own embedding."""
        embeds = self.llm.get_input_embeddings()(input_ids)  # (R, L, D)
        is_image = input_ids == self.image_token_id  # (R, L)
        n_slots = int(is_image.sum())
        if image_features is None and pixel_values is not None and len(pixel_values):
            image_features = self.patch_features(pixel_values)  # (n, N, D_enc)
        elif image_features is not None and self.blind:
            image_features = torch.zeros_like(image_features)
        if image_features is None:
            if n_slots or (refs and "ref_rows" in refs):
                raise ValueError(
                    f"input_ids hold {n_slots} image tokens or references but no pixel_values (or image_features) were given"
                )
            return embeds
        n, N = image_features.shape[:2]
        if n_slots:
            if n_slots != n * N:
                raise ValueError(
                    f"{n_slots} image tokens in input_ids for {n} images x {N} patch tokens; "
                    f"tokenize with num_image_tokens={N}"
                )
            image_embeds = self.projector(image_features)  # (n, N, D)
            embeds = embeds.masked_scatter(is_image[..., None], image_embeds.to(embeds.dtype))
        if refs and "ref_rows" in refs:
            embeds = self.add_ref_features(embeds, input_ids, image_features, refs)
        return embeds

    def add_ref_features(
        self,
        embeds: torch.Tensor,
        input_ids: torch.Tensor,
        feats: torch.Tensor,
        refs: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Add the projected place feature of every reference token to its embedding (R, L, D)."""
        is_ref = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in self.ref_token_ids:
            is_ref |= input_ids == token_id
        n_refs = int(is_ref.sum())
        rows = refs["ref_rows"]
        if n_refs != (int(rows.max()) + 1 if len(rows) else 0):
            raise ValueError(f"{n_refs} reference tokens in input_ids but weights for {int(rows.max()) + 1}")
        picked = gather_patches(feats, refs["ref_images"], refs["ref_patches"])
        picked = picked * refs["ref_vals"][:, None].to(feats.dtype)
        pooled = feats.new_zeros(n_refs, feats.shape[-1]).index_add_(0, rows, picked)  # (T, D_enc)
        added = embeds[is_ref] + self.projector(pooled).to(embeds.dtype)
        return embeds.masked_scatter(is_ref[..., None], added)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        seq_ids: torch.Tensor | None = None,
        return_logits: bool = True,
        image_features: torch.Tensor | None = None,
        **extra: object,
    ) -> VLMOutput:
        """Padded batches: ``attention_mask`` (R, L). Packed batches: ``seq_ids`` (R, L) + ``position_ids``.

        ``return_logits=False`` (training): with labels, only the labelled positions go through the LM
        head (``labelled_lm_loss``) and ``logits`` is None; same loss, less work. Reference weights come in
        ``extra`` (the collator's ``ref_*`` keys); other extra keys (``turns``) are ignored.
        """
        refs = {k: v for k, v in extra.items() if k.startswith("ref_")}
        anchor = None
        if self.cls_anchor and self.training and image_features is None and pixel_values is not None:
            out = self.encoder.forward_features(pixel_values)
            anchor = cls_anchor_loss(self.encoder, pixel_values, out.cls)
            image_features = out.patch  # embed zeroes it when blind
        embeds = self.embed(input_ids, pixel_values, refs, image_features)
        attention_mask, varlen = self.packed_attention(seq_ids, attention_mask, embeds.dtype)
        llm_inputs = dict(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        if labels is not None and not return_logits and type(self.llm).__name__ in _PLAIN_LM_HEAD:
            hidden = self.llm.get_decoder()(**llm_inputs, **varlen).last_hidden_state  # (R, L, D)
            loss, count = labelled_lm_loss(hidden, labels, self.llm.get_output_embeddings())
            return VLMOutput(loss, None, count, anchor)
        out = self.llm(**llm_inputs, **varlen)
        if labels is None:
            return VLMOutput(None, out.logits, 0, anchor)
        loss, count = causal_lm_loss(out.logits, labels)
        return VLMOutput(loss, out.logits, count, anchor)

    def packed_attention(
        self, seq_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor | None, dict]:
        """The LLM's mask and extra kwargs for a packed batch (``seq_ids`` (R, L)); as given if unpacked.

        Varlen attention: the boundaries go in ``cu_seq_lens`` kwargs and the 2D mask is all True, so the
        LLM builds no (L, L) mask at all. Otherwise an explicit (R, 1, L, L) block-diagonal mask.
        """
        if seq_ids is None:
            return attention_mask, {}
        if supports_varlen(self.llm):
            return torch.ones_like(seq_ids, dtype=torch.bool), varlen_kwargs(seq_ids)
        return block_causal_mask(seq_ids, dtype), {}

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        eos_token_id: int | list[int] | None = None,
        refs: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Greedy continuation of one prompt (1, L) -> new token ids (1, T)."""
        if input_ids.shape[0] != 1:
            raise ValueError("generate takes one prompt at a time (batch size 1)")
        embeds = self.embed(input_ids, pixel_values, refs)
        return self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_token_id,
            pad_token_id=self.llm.config.pad_token_id or 0,
        )


def encoder_from_config(
    cfg: VLMConfig, seed: int = 0, boosted: bool = False, check_boost_layers: bool = False
) -> VisionEncoder:
    """The encoder alone, as ``SpatialVLM.from_config`` builds it (``boosted``: with its adapter).

    ``check_boost_layers``: refuse ``cfg.boost.layers`` the encoder lacks even when not boosting now
    (a run that boosts in a later stage fails before its first stage trains)."""
    encoder = create_encoder(cfg.encoder, seed=seed)
    if check_boost_layers:
        check_layers(encoder, cfg.boost.layers)
    if boosted:
        with seeded(seed + 1):  # LoRA inits draw random numbers
            boost_encoder(encoder, cfg.boost)
    return encoder


def _out_scale(cfg: VLMConfig, llm: nn.Module) -> float | None:
    """``projector_norm``: the projector's output starts at the RMS of the LLM's token embeddings."""
    if not cfg.projector_norm:
        return None
    return float(llm.get_input_embeddings().weight.detach().pow(2).mean().sqrt())

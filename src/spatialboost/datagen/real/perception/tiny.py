"""Tiny random-initialised checkpoints of every model backend, built in code (no downloads).

``save_tiny(name, directory)`` writes a loadable checkpoint (config + safetensors weights + preprocessor
config + tokenizer where needed) that the real backends load by path. Used by tests and the benchmark; the
numbers they produce are meaningless, the plumbing (loading, batching, shapes, coordinates) is real.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from spatialboost.datagen.real.perception.hf import transformers_module

WORDS = (
    "a",
    "photo",
    "of",
    "chair",
    "table",
    "cup",
    "lamp",
    "box",
    "sphere",
    "cone",
    "cylinder",
    "red",
    "dog",
)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def _word_tokenizer(vocab: dict[str, int], cls: str, sep: str, pad: str, unk: str, lowercase: bool = True):
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])]
    )
    return transformers_module().PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=cls,
        eos_token=sep,
        cls_token=cls,
        sep_token=sep,
        pad_token=pad,
        unk_token=unk,
    )


def tiny_depth_pro(directory: Path, seed: int = 0) -> None:
    transformers = transformers_module()
    _seed(seed)
    sub = dict(
        model_type="dinov2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        patch_size=4, image_size=16,
    )  # fmt: skip
    cfg = transformers.DepthProConfig(
        patch_size=16, fusion_hidden_size=16, intermediate_hook_ids=[1, 0], intermediate_feature_dims=[16, 16],
        scaled_images_ratios=[0.5, 1], scaled_images_overlap_ratios=[0.0, 0.5], scaled_images_feature_dims=[16, 16],
        merge_padding_value=1, use_fov_model=True, num_fov_head_layers=1,
        image_model_config=dict(sub), patch_model_config=dict(sub), fov_model_config=dict(sub),
    )  # fmt: skip
    transformers.DepthProForDepthEstimation(cfg).save_pretrained(directory)
    _preprocessor(directory, "DepthProImageProcessor", 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def tiny_sam2(directory: Path, seed: int = 0) -> None:
    transformers = transformers_module()
    _seed(seed)
    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[64, 64],
        blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2],
    )  # fmt: skip
    cfg = transformers.Sam2Config(
        vision_config=dict(
            model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=16),
    )  # fmt: skip
    transformers.Sam2Model(cfg).save_pretrained(directory)
    _preprocessor(directory, "Sam2ImageProcessor", 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def tiny_owlv2(directory: Path, seed: int = 0) -> None:
    transformers = transformers_module()
    _seed(seed)
    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = _word_tokenizer(vocab, "<bos>", "<eos>", "<pad>", "<unk>")
    text = dict(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=2, eos_token_id=3, pad_token_id=0,
    )  # fmt: skip
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    transformers.Owlv2ForObjectDetection(
        transformers.Owlv2Config(text_config=text, vision_config=vision, projection_dim=16)
    ).save_pretrained(directory)
    transformers.Owlv2ImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    tok.save_pretrained(directory)


def tiny_grounding_dino(directory: Path, seed: int = 0) -> None:
    transformers = transformers_module()
    _seed(seed)
    # Grounding DINO hard-codes BERT's special ids: [CLS] 101, [SEP] 102, "." 1012, "?" 1029
    vocab = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, ".": 1012, "?": 1029}
    vocab.update({w: 200 + i for i, w in enumerate(WORDS)})
    tok = _word_tokenizer(vocab, "[CLS]", "[SEP]", "[PAD]", "[UNK]")
    cfg = transformers.GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=4,
                             image_size=32, out_features=["stage1", "stage2"]),
        text_config=dict(model_type="bert", vocab_size=1100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, num_feature_levels=2,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32, use_timm_backbone=False, backbone=None,
        use_pretrained_backbone=False,
    )  # fmt: skip
    transformers.GroundingDinoForObjectDetection(cfg).save_pretrained(directory)
    transformers.GroundingDinoImageProcessorPil(
        size={"shortest_edge": 32, "longest_edge": 48}
    ).save_pretrained(directory)
    tok.save_pretrained(directory)


def _preprocessor(directory: Path, cls_name: str, size: int, mean, std) -> None:
    cfg = {"image_processor_type": cls_name, "size": {"height": size, "width": size}, "image_mean": list(mean),
           "image_std": list(std)}  # fmt: skip
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))


TINY_BUILDERS = {
    "depth-pro": tiny_depth_pro,
    "sam2": tiny_sam2,
    "owlv2": tiny_owlv2,
    "grounding-dino": tiny_grounding_dino,
}


def save_tiny(name: str, directory: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint of backend ``name`` into ``directory`` and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    TINY_BUILDERS[name](directory, seed)
    return directory

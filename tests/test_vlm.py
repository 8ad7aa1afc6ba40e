"""SpatialVLM: image tokens, loss normalisation, packing, the three LLM families; training's freezing
(``train.stages``) and checkpoints (``train.checkpoint``) on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from spatialboost.constants import LM_IGNORE_INDEX
from spatialboost.data.collate import PackedCollator, PaddedCollator
from spatialboost.data.conversation import (
    EmptyLabelsError,
    prompt_ids,
    record_messages,
    tokenize_conversation,
)
from spatialboost.data.tokenizer import train_tokenizer
from spatialboost.models.attention import supports_varlen
from spatialboost.models.dual_channel import adapter_state_dict
from spatialboost.models.encoder_base import EncoderOutput, EncoderSpec, VisionEncoder
from spatialboost.models.encoders import create_encoder
from spatialboost.models.llm import TINY_LLMS, build_llm
from spatialboost.models.preprocess import image_transform_for
from spatialboost.models.projector import MLPProjector
from spatialboost.models.vlm import SpatialVLM, causal_lm_loss
from spatialboost.train import checkpoint as ckpt
from spatialboost.train.config import AlignStage, EncoderStage, InstructStage
from spatialboost.train.stages import load_trainable, set_stage_trainable, trainable_named

IMAGE_SIZE, PATCH = 8, 4
N_IMG = (IMAGE_SIZE // PATCH) ** 2


class StubEncoder(VisionEncoder):
    """A one-block patch embedding that follows the encoder contract (fast, deterministic).

    Kept instead of a registered tiny encoder because these tests need only an 8 px image of 4 tokens and run
    many VLM steps; it validates layers and sizes as ``HFEncoder`` does (``test_stub_follows_the_contract``).
    """

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.spec = EncoderSpec("stub", "stub", dim, PATCH, IMAGE_SIZE, num_layers=1, num_heads=1)
        self.patch_embed = nn.Conv2d(3, dim, PATCH, PATCH)
        self.norm = nn.LayerNorm(dim)

    def forward_intermediates(self, pixels, layers=None):
        wanted = [-1] if layers is None else layers
        if bad := [i for i in wanted if not -1 <= i < 1]:
            raise IndexError(f"layer {bad[0]} out of range for an encoder with 1 blocks")
        if pixels.shape[-2] % PATCH or pixels.shape[-1] % PATCH:
            raise ValueError(f"input {tuple(pixels.shape[-2:])} is not a multiple of the patch size {PATCH}")
        x = self.norm(self.patch_embed(pixels).flatten(2).transpose(1, 2))  # (B, N, D)
        h, w = pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH
        return [EncoderOutput(x.mean(1), x, (h, w)) for _ in wanted]  # one output per requested layer


def test_stub_follows_the_contract():
    """Same layer and size rules as the registered encoders: one output per requested layer, in order,
    duplicates kept; an index past the blocks raises rather than wraps; sizes are multiples of the patch."""
    enc, pixels = StubEncoder(), torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert len(enc.forward_intermediates(pixels, [0, -1, 0])) == 3
    for layer in (1, -2):
        with pytest.raises(IndexError):
            enc.forward_intermediates(pixels, [layer])
    with pytest.raises(ValueError):
        enc.forward_intermediates(torch.zeros(1, 3, IMAGE_SIZE + 1, IMAGE_SIZE))


def make_record(i: int, n_images: int) -> dict:
    conv = []
    for t in range(2 + i % 3):
        prefix = "<image>\n" * n_images if t == 0 else ""
        conv.append({"from": "human", "value": f"{prefix}How far is object {t} from object {i}?"})
        conv.append({"from": "gpt", "value": f"About {i}.{t}{i * 7} m." + " Yes." * (i % 4)})
    return {"id": f"s{i}", "image": [f"{i}_{v}.png" for v in range(n_images)], "conversations": conv}


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [t["value"] for i in range(12) for t in make_record(i, 1)["conversations"]]
    return train_tokenizer(corpus, vocab_size=300)


def make_vlm(tokenizer, llm_name: str = "tiny-qwen2", attn: str = "sdpa") -> SpatialVLM:
    """``attn``: an HF implementation, or ``"sdpa-mask"`` (sdpa with the explicit block-diagonal mask)."""
    torch.manual_seed(0)
    llm = build_llm(llm_name, tokenizer, attn_implementation=attn.removesuffix("-mask"))
    varlen = not attn.endswith("-mask")
    return SpatialVLM(StubEncoder(), llm, tokenizer.convert_tokens_to_ids("<image>"), varlen_attention=varlen)


def make_samples(tokenizer, n: int = 6) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    samples = []
    for i in range(n):
        n_images = i % 3  # 0, 1 or 2 views
        t = tokenize_conversation(make_record(i, n_images), tokenizer, N_IMG)
        pixels = torch.randn(n_images, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
        samples.append(
            {
                "id": t.id,
                "input_ids": torch.tensor(t.input_ids),
                "labels": torch.tensor(t.labels),
                "pixel_values": pixels,
            }
        )
    return samples


def batch_loss(vlm, batch) -> torch.Tensor:
    return vlm(**batch).loss


@pytest.mark.parametrize("attn", ["sdpa", "sdpa-mask", "eager"])
def test_packed_loss_equals_unpacked(tokenizer, attn):
    vlm = make_vlm(tokenizer, attn=attn)
    assert supports_varlen(vlm.llm) == (attn == "sdpa")  # the default is varlen for packed rows
    samples = make_samples(tokenizer)
    padded = PaddedCollator(tokenizer.pad_token_id)(samples)
    packed = PackedCollator(tokenizer.pad_token_id, max_length=320)(samples)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # really packed
    assert packed["pixel_values"].shape[0] == padded["pixel_values"].shape[0] > 0
    with torch.no_grad():
        out_padded = vlm(**padded)
        loss_padded = out_padded.loss
        loss_packed = batch_loss(vlm, packed)
        rows = [
            causal_lm_loss(out_padded.logits[r : r + 1], padded["labels"][r : r + 1])
            for r in range(len(samples))
        ]
        # without the block-diagonal mask the conversations would see each other: the loss differs
        leaky = {k: v for k, v in packed.items() if k != "seq_ids"}
        loss_leaky = batch_loss(vlm, leaky)
    assert abs(loss_packed.item() - loss_padded.item()) < 1e-5
    # normalisation: mean over all answer tokens of the batch (token-weighted, not a mean of sample means)
    weighted = sum(loss * n for loss, n in rows) / sum(n for _, n in rows)
    assert abs(weighted.item() - torch.stack([loss for loss, _ in rows]).mean().item()) > 1e-4  # they differ
    assert abs(weighted.item() - loss_padded.item()) < 1e-5
    assert abs(loss_leaky.item() - loss_packed.item()) > 1e-5


@pytest.mark.parametrize("attn", ["sdpa", "sdpa-mask"])
def test_packed_gradients_equal_unpacked(tokenizer, attn):
    samples = make_samples(tokenizer)
    grads = []
    for collate in (PaddedCollator(tokenizer.pad_token_id), PackedCollator(tokenizer.pad_token_id, 320)):
        vlm = make_vlm(tokenizer, attn=attn)
        batch_loss(vlm, collate(samples)).backward()
        grads.append({n: p.grad.clone() for n, p in vlm.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "projector.fc1.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("llm_name", TINY_LLMS.names())
def test_every_tiny_llm_trains_and_grads_reach_projector(tokenizer, llm_name):
    vlm = make_vlm(tokenizer, llm_name)
    batch = PackedCollator(tokenizer.pad_token_id, 320)(make_samples(tokenizer, 4))
    out = vlm(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape and out.logits.shape[-1] == len(tokenizer)
    assert torch.isfinite(out.loss) and out.num_label_tokens == int(
        (batch["labels"][:, 1:] != LM_IGNORE_INDEX).sum()
    )
    out.loss.backward()
    for name in ("fc1", "fc2"):
        assert getattr(vlm.projector, name).weight.grad.abs().sum() > 0
    assert vlm.encoder.patch_embed.weight.grad.abs().sum() > 0


def test_image_tokens_carry_the_image(tokenizer):
    vlm = make_vlm(tokenizer)
    sample = make_samples(tokenizer, 3)[2]  # two views
    batch = PaddedCollator(tokenizer.pad_token_id)([sample])
    first = int((batch["input_ids"][0] == vlm.image_token_id).nonzero()[0])
    with torch.no_grad():
        a = vlm(**batch).logits
        batch["pixel_values"] = batch["pixel_values"].flip(0)  # swap the two views
        b = vlm(**batch).logits
    assert torch.equal(a[0, :first], b[0, :first])  # causal: nothing before the images changes
    assert (a[0, first:] - b[0, first:]).abs().max() > 1e-4


def test_image_count_mismatch_raises(tokenizer):
    vlm = make_vlm(tokenizer)
    batch = PaddedCollator(tokenizer.pad_token_id)(make_samples(tokenizer, 3))
    with pytest.raises(ValueError, match="image tokens"):
        vlm(**{**batch, "pixel_values": batch["pixel_values"][:-1]})
    with pytest.raises(ValueError, match="no pixel_values"):
        vlm(**{**batch, "pixel_values": None})


def test_empty_label_mask_raises_in_forward(tokenizer):
    vlm = make_vlm(tokenizer)
    batch = PaddedCollator(tokenizer.pad_token_id)(make_samples(tokenizer, 2))
    with pytest.raises(EmptyLabelsError):
        vlm(**{**batch, "labels": torch.full_like(batch["labels"], LM_IGNORE_INDEX)})


def test_frozen_llm_is_bit_identical_after_projector_step(tokenizer):
    vlm = make_vlm(tokenizer)
    summary = set_stage_trainable(vlm, "align", AlignStage())
    assert list(summary) == ["projector"]
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    batch = PackedCollator(tokenizer.pad_token_id, 320)(make_samples(tokenizer))
    for _ in range(2):
        batch_loss(vlm, batch).backward()
        opt.step()
        opt.zero_grad()
    after = vlm.state_dict()
    for key, value in before.items():
        if key.startswith("projector."):
            assert not torch.equal(value, after[key]), key
        else:
            assert torch.equal(value, after[key]), key


def test_checkpointed_parts_reload_into_a_fresh_vlm(tokenizer, tmp_path):
    """A stage's checkpoint holds what it trains and nothing else; loading it reproduces the model."""
    vlm = make_vlm(tokenizer)
    set_stage_trainable(vlm, "align", AlignStage())
    with torch.no_grad():
        vlm.projector.fc2.bias.add_(1.0)
    path = ckpt.save_checkpoint(tmp_path / "stage1", 1, trainable_named(vlm), {}, {"done": True})
    assert all(k.startswith("projector.") for k in ckpt.load_weights(path))  # frozen LLM never duplicated

    fresh = make_vlm(tokenizer)
    fresh.projector = MLPProjector(16, fresh.llm.config.hidden_size)  # different random init
    load_trainable(fresh, ckpt.load_weights(path), source=str(path))
    for key, value in vlm.projector.state_dict().items():
        assert torch.equal(value, fresh.projector.state_dict()[key])

    set_stage_trainable(vlm, "instruct", InstructStage())
    with torch.no_grad():
        vlm.llm.get_input_embeddings().weight.mul_(2.0)
    path = ckpt.save_checkpoint(tmp_path / "stage2", 1, trainable_named(vlm), {}, {"done": True})
    other = make_vlm(tokenizer)
    load_trainable(other, ckpt.load_weights(path), source=str(path))
    batch = PaddedCollator(tokenizer.pad_token_id)(make_samples(tokenizer, 3))
    with torch.no_grad():
        torch.testing.assert_close(vlm(**batch).logits, other(**batch).logits, atol=0, rtol=0)


def test_generate_greedy_matches_argmax(tokenizer):
    vlm = make_vlm(tokenizer)
    record = make_record(1, 1)
    ids = torch.tensor([prompt_ids(record_messages(record)[:1], tokenizer, N_IMG)])
    pixels = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    new = vlm.generate(ids, pixels, max_new_tokens=4)
    assert new.shape == (1, 4)
    with torch.no_grad():
        first = vlm(input_ids=ids, pixel_values=pixels).logits[0, -1].argmax()
        two = vlm(input_ids=torch.cat([ids, new[:, :1]], 1), pixel_values=pixels).logits[0, -1].argmax()
    assert new[0, 0] == first and new[0, 1] == two


def test_stage3_with_boosted_tiny_vit(tokenizer):
    """The real registry encoder + dual-channel adapter: only Attn+/gates and the projector move."""
    from spatialboost import boost_encoder

    encoder = boost_encoder(create_encoder("tiny-vit", seed=0))
    torch.manual_seed(0)
    vlm = SpatialVLM(encoder, build_llm("tiny-qwen2", tokenizer), tokenizer.convert_tokens_to_ids("<image>"))
    n_tokens = vlm.num_image_tokens()
    assert n_tokens == (encoder.spec.image_size // encoder.spec.patch_size) ** 2
    set_stage_trainable(vlm, "align", AlignStage())  # stage 1 froze everything ...
    summary = set_stage_trainable(vlm, "encoder", EncoderStage())  # ... stage 3 re-opens the adapter
    adapter = set(adapter_state_dict(vlm.encoder))
    assert set(summary) == {"projector", "adapter", "gates"}
    assert 0 < summary["adapter"]["params"] < sum(p.numel() for p in vlm.encoder.parameters())
    assert {n for n, p in vlm.encoder.named_parameters() if p.requires_grad} == adapter

    transform = image_transform_for(encoder)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)) for _ in range(2)]
    samples = []
    for i, n_images in enumerate((1, 2)):
        t = tokenize_conversation(make_record(i, n_images), tokenizer, n_tokens)
        pixels = transform(images[:n_images])
        samples.append(
            {
                "id": t.id,
                "input_ids": torch.tensor(t.input_ids),
                "labels": torch.tensor(t.labels),
                "pixel_values": pixels,
            }
        )
    assert transform([]).shape[0] == 0
    batch = PackedCollator(tokenizer.pad_token_id, 1024)(samples)
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        vlm(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    after = vlm.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = {f"encoder.{n}" for n in adapter} | {f"projector.{n}" for n in vlm.projector.state_dict()}
    assert moved <= trainable and any(k.startswith("encoder.") for k in moved)


@pytest.mark.parametrize("llm_name", TINY_LLMS.names())
def test_labelled_positions_loss_equals_full_logits_loss(tokenizer, llm_name):
    """return_logits=False (the training loop's call) projects only answer positions: same loss, same grads."""
    vlm = make_vlm(tokenizer, llm_name)
    vlm.requires_grad_(True)
    samples = make_samples(tokenizer)
    for batch in (
        PaddedCollator(tokenizer.pad_token_id)(samples),
        PackedCollator(tokenizer.pad_token_id, 320)(samples),
    ):
        results = []
        for return_logits in (True, False):
            vlm.zero_grad(set_to_none=True)
            out = vlm(**batch, return_logits=return_logits)
            out.loss.backward()
            grads = {n: p.grad.clone() for n, p in vlm.named_parameters() if p.grad is not None}
            results.append((out, grads))
        (full, full_grads), (fast, fast_grads) = results
        assert fast.logits is None and full.logits is not None
        assert fast.num_label_tokens == full.num_label_tokens
        torch.testing.assert_close(fast.loss, full.loss, atol=1e-6, rtol=1e-6)
        assert fast_grads.keys() == full_grads.keys()
        for name, g in full_grads.items():
            torch.testing.assert_close(fast_grads[name], g, atol=1e-6, rtol=1e-5, msg=name)

"""Dual-channel attention invariants (paper Eq. 1), parametrised over every registered tiny family."""

from __future__ import annotations

import pytest
import torch

from spatialboost.models.dual_channel import (
    DualChannelAttention,
    adapter_state_dict,
    add_dual_channel,
    load_adapter_state_dict,
    trainable_parameters,
)
from spatialboost.models.encoders import create_encoder, list_encoders

FAMILIES = list_encoders(tiny_only=True)


def pixels(encoder, batch: int = 2, seed: int = 0) -> torch.Tensor:
    s = encoder.spec.image_size
    return torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(seed))


def pair(name: str, **boost):
    base = create_encoder(name, seed=0)
    boosted = add_dual_channel(create_encoder(name, seed=0), **boost)
    return base, boosted


def perturb_adapter(encoder, seed: int = 1, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainable_parameters(encoder).values():
            p.add_(
                torch.randn(p.shape, generator=g)
                * scale
                * (p.std() if p.numel() > 1 and p.std() > 0 else 1.0)
            )


def dummy_loss(out) -> torch.Tensor:
    return out.patch.pow(2).mean() + out.cls.sin().mean() + out.patch[:, :3].mean()


def max_diff(a, b) -> float:
    return max((x.patch - y.patch).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("gate", ["channel", "head", "scalar"])
@pytest.mark.parametrize("name", FAMILIES)
def test_identity_at_init(name, gate):
    base, boosted = pair(name, gate=gate)
    x = pixels(base)
    with torch.no_grad():
        assert max_diff([base.forward_features(x)], [boosted.forward_features(x)]) <= 1e-6
        layers = [0, -1]
        a, b = base.forward_intermediates(x, layers), boosted.forward_intermediates(x, layers)
        assert max_diff(a, b) <= 1e-6
        assert max((u.cls - v.cls).abs().max().item() for u, v in zip(a, b, strict=True)) <= 1e-6


@pytest.mark.parametrize("name", FAMILIES)
def test_only_attn_plus_and_gates_train(name):
    _, boosted = pair(name)
    names = set(trainable_parameters(boosted))
    wrappers = [m for m in boosted.modules() if isinstance(m, DualChannelAttention)]
    assert len(wrappers) == boosted.spec.num_layers
    expected = {n for n, _ in boosted.named_parameters() if ".plus." in n or n.endswith(".gate")}
    assert names == expected and len(names) > 0
    for w in wrappers:
        assert all(p.requires_grad for p in w.plus.parameters())
        assert not any(p.requires_grad for p in w.base.parameters())
        assert torch.equal(w.gate, torch.zeros_like(w.gate))
    assert set(adapter_state_dict(boosted)) == expected


@pytest.mark.parametrize("name", FAMILIES)
def test_step0_gradients_then_frozen_unchanged(name):
    _, boosted = pair(name)
    boosted.train()
    x = pixels(boosted)
    dummy_loss(boosted(x)).backward()
    params = trainable_parameters(boosted)
    gates = {n: p for n, p in params.items() if n.endswith(".gate")}
    plus = {n: p for n, p in params.items() if ".plus." in n}
    assert all(torch.count_nonzero(p.grad) == 0 for p in gates.values()), "d out / d a must vanish at init"
    assert sum(p.grad.abs().sum().item() for p in plus.values()) > 0, "Attn+ must receive gradient at step 0"

    frozen = {n: p.detach().clone() for n, p in boosted.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-2, weight_decay=0.0)
    for step in range(3):
        opt.zero_grad()
        dummy_loss(boosted(pixels(boosted, seed=step))).backward()
        opt.step()
    for n, p in boosted.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen tensor {n} changed"
    assert all(not torch.equal(p, before[n]) for n, p in gates.items()), "gates did not move"
    assert any(not torch.equal(p, before[n]) for n, p in plus.items()), "Attn+ did not move"


@pytest.mark.parametrize("gate", ["channel", "head", "scalar"])
@pytest.mark.parametrize("name", FAMILIES)
def test_fused_equals_naive_reference(name, gate):
    _, boosted = pair(name, gate=gate)
    perturb_adapter(boosted)
    x = pixels(boosted)
    wrappers = [m for m in boosted.modules() if isinstance(m, DualChannelAttention)]

    def run(fused: bool):
        for w in wrappers:
            w.fused = fused
        boosted.zero_grad()
        out = boosted(x)
        dummy_loss(out).backward()
        grads = {n: p.grad.clone() for n, p in trainable_parameters(boosted).items()}
        return out.patch.detach(), grads

    fused_out, fused_grads = run(True)
    naive_out, naive_grads = run(False)
    base_out = create_encoder(name, seed=0)(x).patch.detach()
    assert (fused_out - base_out).abs().max() > 1e-3, "perturbation should change the output"
    torch.testing.assert_close(fused_out, naive_out, atol=2e-5, rtol=1e-4)
    with torch.no_grad():  # the inference path (one (6D, D) matmul) too
        for w in wrappers:
            w.fused = True
        torch.testing.assert_close(boosted(x).patch, naive_out, atol=2e-5, rtol=1e-4)
    for n, g in fused_grads.items():
        torch.testing.assert_close(g, naive_grads[n], atol=1e-5, rtol=1e-3, msg=n)


@pytest.mark.parametrize("gate, shape", [("channel", "dim"), ("head", "heads"), ("scalar", 1)])
def test_gate_shapes(gate, shape):
    _, boosted = pair("tiny-dinov3", gate=gate)
    expected = {"dim": boosted.spec.embed_dim, "heads": boosted.spec.num_heads, 1: 1}[shape]
    for w in boosted.modules():
        if isinstance(w, DualChannelAttention):
            assert w.gate.shape == (expected,)
            assert w.alpha().shape == (boosted.spec.embed_dim,)


def test_layer_subset():
    _, boosted = pair("tiny-vit", layers=[-1, 1])
    kinds = [isinstance(b.attention, DualChannelAttention) for b in boosted.blocks]
    assert kinds == [False, True, False, True]
    assert all(".layer.1." in n or ".layer.3." in n for n in trainable_parameters(boosted))
    with pytest.raises(ValueError, match="out of range"):
        add_dual_channel(create_encoder("tiny-vit"), layers=[4])


def test_bad_options_and_double_boost():
    enc = create_encoder("tiny-dinov2")
    with pytest.raises(ValueError, match="gate"):
        add_dual_channel(enc, gate="row")
    add_dual_channel(enc)
    with pytest.raises(ValueError, match="already boosted"):
        add_dual_channel(enc)


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_mode_trains_only_lora(name):
    base, boosted = pair(name, mode="lora", lora_rank=2)
    x = pixels(base)
    with torch.no_grad():  # LoRA's B starts at zero: identity at init too
        assert max_diff([base(x)], [boosted(x)]) <= 1e-6
    params = trainable_parameters(boosted)
    assert params and all("lora_" in n for n in params)
    assert len(params) == 2 * 4 * boosted.spec.num_layers  # A and B on q, k, v, out of every block
    frozen = {n: p.detach().clone() for n, p in boosted.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        dummy_loss(boosted(x)).backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in boosted.named_parameters() if n in frozen)
    assert max_diff([base(x)], [boosted(x)]) > 0
    state = adapter_state_dict(boosted)
    assert set(state) == set(params)
    load_adapter_state_dict(boosted, state)


def test_full_mode_trains_everything():
    _, boosted = pair("tiny-clip", mode="full")
    assert set(trainable_parameters(boosted)) == {n for n, _ in boosted.named_parameters()}
    assert not any(isinstance(m, DualChannelAttention) for m in boosted.modules())


def test_load_adapter_rejects_wrong_keys():
    _, boosted = pair("tiny-dinov2")
    state = adapter_state_dict(boosted)
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="missing"):
        load_adapter_state_dict(boosted, state)

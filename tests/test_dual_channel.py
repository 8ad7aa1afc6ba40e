"""Dual-channel attention invariants (paper Eq. 1), parametrised over every registered tiny family."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
import torch.nn.functional as F

from spatialboost.config import ConfigError
from spatialboost.models import dual_channel
from spatialboost.models.config import GATES, BoostConfig
from spatialboost.models.dual_channel import (
    ADAPTER,
    GATE,
    LINEAR_KERNELS,
    DualChannelAttention,
    adapter_keys,
    adapter_state_dict,
    base_state_dict,
    boost_encoder,
    load_adapter_state_dict,
    mark_only_adapter_trainable,
    onednn_linear_works,
    pick_inference_kernel,
    trainable_parameters,
)
from spatialboost.models.encoders import create_encoder, list_encoders

FAMILIES = list_encoders(tiny_only=True)


def pixels(encoder, batch: int = 2, seed: int = 0) -> torch.Tensor:
    s = encoder.spec.image_size
    return torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(seed))


def pair(name: str, **boost):
    base = create_encoder(name, seed=0)
    boosted = boost_encoder(create_encoder(name, seed=0), **boost)
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


def wrappers(encoder) -> list[DualChannelAttention]:
    return [m for m in encoder.modules() if isinstance(m, DualChannelAttention)]


def naive_patch(encoder, x) -> torch.Tensor:
    """The copy-and-call reference (no derived weights involved), under no_grad."""
    for w in wrappers(encoder):
        w.fused = False
    try:
        with torch.no_grad():
            return encoder(x).patch
    finally:
        for w in wrappers(encoder):
            w.fused = True


def close(a, b, tol: float = 1e-6, msg: str = "") -> None:
    """Equal to ``tol`` of the reference's scale: float32 rounding only (the folded inference path sums
    W_o h and W_o+ h+ in one matmul, a few ulp away from two matmuls and a lerp)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    err, scale = (a - b).abs().max().item(), max(b.abs().max().item(), 1.0)
    assert err <= tol * scale, f"{msg}: max |a - b| = {err:.3g} > {tol:g} x {scale:.3g}"


# the gate kinds at the paper's zero init, and the channel gate at -2 (Attn+ weighted 0.88; study.DEFAULT_ARM): the
# channels are mixed by lerp, so equal channels give the base exactly whatever the gates hold
@pytest.mark.parametrize(
    "boost",
    [{"gate": "channel"}, {"gate": "head"}, {"gate": "scalar"}, {"gate": "channel", "gate_init": -2.0}],
    ids=["channel", "head", "scalar", "channel-init-2"],
)
@pytest.mark.parametrize("name", FAMILIES)
def test_identity_at_init(name, boost):
    base, boosted = pair(name, **boost)
    x = pixels(base)
    layers = [0, -1]
    with torch.no_grad():  # inference: the folded path, equal up to float32 rounding
        assert max_diff([base.forward_features(x)], [boosted.forward_features(x)]) <= 1e-6
        a, b = base.forward_intermediates(x, layers), boosted.forward_intermediates(x, layers)
        for u, v in zip(a, b, strict=True):
            close(v.patch, u.patch)
            close(v.cls, u.cls)
    # under autograd (training) both channels run the same kernels on equal weights: exactly the base
    base.requires_grad_(False)  # frozen like the boosted one's (SigLIP2's pooling MHA has a frozen fast path)
    a, b = base.forward_intermediates(x, layers), boosted.forward_intermediates(x, layers)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u.patch, v.patch) and torch.equal(u.cls, v.cls)


@pytest.mark.parametrize("name", FAMILIES)
def test_only_attn_plus_and_gates_train(name):
    _, boosted = pair(name)
    names = set(trainable_parameters(boosted))
    ws = wrappers(boosted)
    assert len(ws) == boosted.spec.num_layers
    expected = {n for n, _ in boosted.named_parameters() if ".plus." in n or n.endswith(".gate")}
    assert names == expected and len(names) > 0
    for w in ws:
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

    def run(fused: bool):
        for w in wrappers(boosted):
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
    close(fused_out, naive_out)
    with torch.no_grad():  # the inference path (cached (6D, D) QKV, gate folded into the output matmul)
        for w in wrappers(boosted):
            w.fused = True
        close(boosted(x).patch, naive_out)
    for n, g in fused_grads.items():
        torch.testing.assert_close(g, naive_grads[n], atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize("gate, shape", [("channel", "dim"), ("head", "heads"), ("scalar", 1)])
def test_gate_shapes(gate, shape):
    _, boosted = pair("tiny-dinov3", gate=gate)
    expected = {"dim": boosted.spec.embed_dim, "heads": boosted.spec.num_heads, 1: 1}[shape]
    for w in wrappers(boosted):
        assert w.gate.shape == (expected,)
        assert w.alpha().shape == (boosted.spec.embed_dim,)


@pytest.mark.parametrize("gate", GATES)
def test_folded_weights_equal_the_unfolded_channels(gate):
    """[diag(a) W_o | diag(1 - a) W_o+] [h; h+] + b == lerp(W_o+ h+ + b_o+, W_o h + b_o, a); the (6D, D)
    QKV rows are q, q+, k, k+, v, v+ (DINOv3: no k bias, zeros fill in)."""
    _, boosted = pair("tiny-dinov3", gate=gate)
    perturb_adapter(boosted)
    w = wrappers(boosted)[0]
    assert w.gate.abs().min() > 0, "the gate must be away from init for the fold to matter"
    d = w.dim
    w_qkv, b_qkv, w_out, b_out = w.folded_weights()
    assert w_qkv.shape == (6 * d, d) and w_out.shape == (d, 2 * d)
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 5, 2 * d, generator=g)
    with torch.no_grad():
        folded = F.linear(h, w_out, b_out)
        unfolded = torch.lerp(w.plus.o_proj(h[..., d:]), w.base.o_proj(h[..., :d]), w.alpha())
        close(folded, unfolded)
        x = torch.randn(2, 5, d, generator=g)
        qkv = F.linear(x, w_qkv, b_qkv).view(2, 5, 3, 2, d)
        for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            for c, channel in enumerate((w.base, w.plus)):
                close(qkv[:, :, i, c], getattr(channel, proj)(x))


def test_inference_cache_reused_while_weights_hold():
    _, boosted = pair("tiny-dinov2")
    x = pixels(boosted)
    w = wrappers(boosted)[0]
    with torch.inference_mode():
        boosted(x)
    built = w._folded._value
    with torch.no_grad():
        boosted.train()  # the mode does not matter, only whether autograd needs the weights
        boosted(x)
    assert w._folded._value is built, "unchanged weights must not rebuild the derived weights"
    keys = set(boosted.state_dict())
    assert not any("_folded" in k or "cache" in k for k in keys)
    clone = copy.deepcopy(boosted)  # copies start empty and build from their own weights
    assert wrappers(clone)[0]._folded._value is None
    close(clone(x).patch.detach(), naive_patch(boosted, x))


def test_inference_cache_follows_optimizer_steps():
    """Backward, then an evaluation (builds the cache), then the step: the next evaluation must see it."""
    _, boosted = pair("tiny-dinov3", gate="head")
    x = pixels(boosted)
    opt = torch.optim.AdamW(trainable_parameters(boosted).values(), lr=1e-2)
    with torch.no_grad():
        before = boosted(x).patch
    for step in range(2):
        opt.zero_grad()
        dummy_loss(boosted(pixels(boosted, seed=step))).backward()
        with torch.no_grad():
            evaluated = boosted(x).patch  # the weights the cache is built from
        opt.step()  # in-place update of Attn+ and the gates
        with torch.no_grad():
            after = boosted(x).patch
        assert (after - evaluated).abs().max() > 1e-4, "a stale cache: the step is not visible"
        close(after, naive_patch(boosted, x))
    assert (after - before).abs().max() > 1e-3


def test_inference_cache_follows_load_state_dict():
    _, boosted = pair("tiny-clip")
    _, trained = pair("tiny-clip")
    perturb_adapter(trained)
    x = pixels(boosted)
    with torch.no_grad():
        boosted(x)  # cache built from the init weights
        load_adapter_state_dict(boosted, adapter_state_dict(trained))
        close(boosted(x).patch, trained(x).patch)
        other = create_encoder("tiny-clip", seed=5).state_dict()  # the frozen base weights too
        base_keys = {k.replace(".self_attn.", ".self_attn.base."): v for k, v in other.items()}
        missing, _ = boosted.load_state_dict(base_keys, strict=False)
        assert not any(".base." in k for k in missing)
        close(boosted(x).patch, naive_patch(boosted, x))


def test_inference_cache_follows_in_place_edits_and_conversions():
    _, boosted = pair("tiny-dinov3")
    x = pixels(boosted)
    w = wrappers(boosted)[-1]

    def check(msg: str) -> None:
        with torch.no_grad():
            got = boosted(x).patch
        close(got, naive_patch(boosted, x), msg=msg)

    check("init")
    with torch.no_grad():
        w.base.q_proj.weight.mul_(1.5)  # a frozen weight, edited in place
    check("base weight edited in place")
    with torch.no_grad():
        w.gate.fill_(2.0)
    check("gate edited in place")
    w.plus.v_proj.weight.data = w.plus.v_proj.weight.detach() * 0.5  # storage swapped, version kept
    check("weight storage swapped")
    boosted.double()  # dtype (and device, on GPUs) conversions go through Module._apply
    x = x.double()
    check("converted to float64")
    boosted.float()
    x = x.float()
    check("converted back to float32")
    w.plus.k_proj.weight.data.mul_(3.0)  # .data writes bypass version counters: the documented escape
    w.drop_weight_cache()
    check("after drop_weight_cache")


def test_inference_cache_never_serves_a_view_laid_out_otherwise():
    """A square weight replaced by its own transpose keeps address, shape, dtype and version counter: only
    its strides tell the cache that the source changed (without them the old folded weights are served)."""
    _, boosted = pair("tiny-dinov2")
    x = pixels(boosted)
    w = wrappers(boosted)[0]
    with torch.no_grad():
        boosted(x)  # cache built
    old = w.plus.o_proj.weight
    w.plus.o_proj.weight = torch.nn.Parameter(old.detach().t())  # the same storage, transposed
    assert w.plus.o_proj.weight.data_ptr() == old.data_ptr() and w.plus.o_proj.weight._version == old._version
    with torch.no_grad():
        close(boosted(x).patch, naive_patch(boosted, x), msg="stale folded weights served")


def test_inference_cache_keeps_its_sources_alive_until_rebuilt():
    """The cache key holds addresses and version counters: were a source's storage freed while its entry is
    cached, another tensor could be allocated at that address with an equal counter (a fresh tensor and an
    untouched weight both count 0) and be served the old folded weights. The cache pins the sources'
    storages so no address can come back while it is a key, and lets them go once rebuilt."""
    _, boosted = pair("tiny-dinov2")
    x = pixels(boosted)
    w = wrappers(boosted)[0]
    with torch.no_grad():
        boosted(x)  # cache built from the init weights
    old = w.plus.o_proj.weight.untyped_storage()._weak_ref()
    try:
        w.plus.o_proj.weight = torch.nn.Parameter(torch.randn_like(w.plus.o_proj.weight) * 0.1)
        gc.collect()
        assert not torch.UntypedStorage._expired(old), "a cached source was freed: its address may come back"
        with torch.no_grad():
            close(boosted(x).patch, naive_patch(boosted, x), msg="stale folded weights served")
        gc.collect()
        assert torch.UntypedStorage._expired(old), "the rebuilt cache still holds the replaced weight"
    finally:
        torch.UntypedStorage._free_weak_ref(old)


def _cached_kernel(w: DualChannelAttention) -> str:
    return w._folded._key[0]  # the tag the folded weights were built for


@pytest.mark.parametrize("kernel", ["aten", "onednn"])
@pytest.mark.parametrize("name", ["tiny-dinov2", "tiny-dinov3"])  # biased k / no k bias
def test_inference_kernels_equal_the_naive_reference(name, kernel):
    if kernel == "onednn" and not onednn_linear_works():
        pytest.skip("this torch build has no working oneDNN linear")
    _, boosted = pair(name, inference_kernel=kernel)
    perturb_adapter(boosted)
    x = pixels(boosted)
    with torch.inference_mode():
        got = boosted(x).patch
    assert {_cached_kernel(w) for w in wrappers(boosted)} == {kernel}
    close(got.clone(), naive_patch(boosted, x), msg=kernel)
    if kernel == "onednn":  # a packed weight is a oneDNN tensor, not the dense one
        (w_qkv, _), _ = wrappers(boosted)[0]._folded._value
        assert w_qkv.is_mkldnn


def test_auto_kernel_choice_follows_device_dtype_autograd_platform_and_width(monkeypatch):
    x = torch.zeros(2, dual_channel.ONEDNN_MIN_DIM)
    monkeypatch.setattr(dual_channel, "onednn_linear_works", lambda: True)
    monkeypatch.setattr(dual_channel.platform, "machine", lambda: "x86_64")
    with torch.no_grad():
        assert pick_inference_kernel("auto", x) is LINEAR_KERNELS["onednn"]
        assert pick_inference_kernel("aten", x) is LINEAR_KERNELS["aten"]
        assert (
            pick_inference_kernel("auto", x.double()) is LINEAR_KERNELS["aten"]
        )  # oneDNN path: float32 only
        narrow = x[:, : dual_channel.ONEDNN_MIN_DIM - 1]
        assert pick_inference_kernel("auto", narrow) is LINEAR_KERNELS["aten"], (
            "small maps: aten measured faster"
        )
        assert pick_inference_kernel("onednn", narrow) is LINEAR_KERNELS["onednn"]  # asked for explicitly
    assert pick_inference_kernel("onednn", x) is LINEAR_KERNELS["aten"], "autograd needs the aten op"
    monkeypatch.setattr(dual_channel.platform, "machine", lambda: "aarch64")
    with torch.no_grad():
        assert pick_inference_kernel("auto", x) is LINEAR_KERNELS["aten"]  # measured on x86 only
        assert pick_inference_kernel("onednn", x) is LINEAR_KERNELS["onednn"]  # asked for explicitly
    monkeypatch.setattr(dual_channel, "onednn_linear_works", lambda: False)
    with torch.no_grad():
        assert pick_inference_kernel("onednn", x) is LINEAR_KERNELS["aten"]


def test_inference_kernel_option_is_checked(monkeypatch):
    with pytest.raises(ConfigError, match="inference_kernel"):
        BoostConfig(inference_kernel="mkl").validate()
    monkeypatch.setattr(dual_channel, "onednn_linear_works", lambda: False)
    with pytest.raises(ConfigError, match="oneDNN"):
        boost_encoder(create_encoder("tiny-vit", seed=0), inference_kernel="onednn")
    boost_encoder(
        create_encoder("tiny-vit", seed=0), inference_kernel="onednn", mode="lora"
    )  # dual mode only


def test_encoder_built_under_inference_mode():
    """Inference tensors carry no version counter: the cache must still build (and key on the rest)."""
    with torch.inference_mode():
        _, boosted = pair("tiny-dinov2")
        assert wrappers(boosted)[0].base.q_proj.weight.is_inference()
        perturb_adapter(boosted)
        x = pixels(boosted)
        close(boosted(x).patch, naive_patch(boosted, x))
        boosted(x)  # the second call reuses what the first built
        assert all(w._folded._value is not None for w in wrappers(boosted))


def test_frozen_encoder_backprops_to_its_input_after_inference_mode():
    """Cache built under inference_mode, then used with an input that requires grad (saliency, attacks)."""
    _, boosted = pair("tiny-siglip2")
    x = pixels(boosted)
    with torch.inference_mode():
        boosted(x)
    boosted.requires_grad_(False)
    grads = []
    for fused in (True, False):
        for w in wrappers(boosted):
            w.fused = fused
        xg = x.clone().requires_grad_(True)
        dummy_loss(boosted(xg)).backward()
        grads.append(xg.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    assert {_cached_kernel(w) for w in wrappers(boosted)} == {"aten"}, (
        "autograd to the input runs aten's linear"
    )


def test_layer_subset():
    _, boosted = pair("tiny-vit", layers=[-1, 1])
    kinds = [isinstance(b.attention, DualChannelAttention) for b in boosted.blocks]
    assert kinds == [False, True, False, True]
    assert all(".layer.1." in n or ".layer.3." in n for n in trainable_parameters(boosted))
    with pytest.raises(ValueError, match="out of range"):
        boost_encoder(create_encoder("tiny-vit"), layers=[4])


def test_bad_options_and_double_boost():
    enc = create_encoder("tiny-dinov2")
    with pytest.raises(ValueError, match="gate"):
        boost_encoder(enc, gate="row")
    boost_encoder(enc)
    with pytest.raises(ValueError, match="already boosted"):
        boost_encoder(enc)


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


@pytest.mark.parametrize("boost", [dict(), dict(mode="lora", lora_rank=2), dict(mode="full")])
def test_adapter_keys_drive_freezing_state_dicts_and_base(boost):
    """One declaration: what trains, what the adapter state dict holds and what the base leaves out."""
    base, boosted = pair("tiny-dinov2", **boost)
    keys = adapter_keys(boosted)
    assert set(trainable_parameters(boosted)) == {n for n, _ in boosted.named_parameters() if n in keys}
    assert set(adapter_state_dict(boosted)) == set(keys)
    gates = {k for k, role in keys.items() if role == GATE}
    if boosted.boost_config.mode == "dual":
        assert gates == {
            f"{n}.gate" for n, m in boosted.named_modules() if isinstance(m, DualChannelAttention)
        }
        assert all(".plus." in k for k, role in keys.items() if role == ADAPTER)
    else:
        assert not gates
    boosted.requires_grad_(False)  # an earlier stage froze everything: re-opened by name
    assert set(mark_only_adapter_trainable(boosted)) == set(trainable_parameters(boosted))
    assert set(trainable_parameters(boosted)) <= set(keys)
    assert set(base_state_dict(boosted)) == set(base_state_dict(base))


def test_mode_aliases_and_a_config_object():
    assert (
        BoostConfig(mode="dual_channel").mode == "dual" and BoostConfig(mode="full_finetune").mode == "full"
    )
    with pytest.raises(ConfigError, match="full_finetune"):
        BoostConfig(mode="finetune")
    enc = boost_encoder(create_encoder("tiny-vit", seed=0), BoostConfig(mode="full_finetune"))
    assert enc.boost_config == BoostConfig(mode="full")
    with pytest.raises(TypeError, match="either"):
        boost_encoder(create_encoder("tiny-vit", seed=0), BoostConfig(), gate="head")


def test_the_former_name_is_the_same_function():
    import spatialboost
    from spatialboost.models import dual_channel

    assert spatialboost.add_dual_channel is dual_channel.boost_encoder is spatialboost.boost_encoder


@pytest.mark.parametrize("name", FAMILIES)
def test_original_only_runs_the_encoder_before_boosting(name):
    base, boosted = pair(name)
    perturb_adapter(boosted)
    x = pixels(base)
    base.requires_grad_(False)
    with torch.no_grad():
        want = base.forward_features(x)
        moved = boosted.forward_features(x)
        assert not torch.allclose(moved.cls, want.cls), "the perturbed adapter must change the output"
        with dual_channel.original_only(boosted):
            got = boosted.forward_features(x)
        again = boosted.forward_features(x)  # the block restores the boosted encoder
    close(got.cls, want.cls, msg="cls")
    close(got.patch, want.patch, msg="patch")
    assert torch.equal(again.cls, moved.cls)


def test_original_only_needs_a_dual_channel_encoder():
    _, lora = pair(FAMILIES[0], mode="lora")
    with pytest.raises(ValueError, match="dual-channel"):
        with dual_channel.original_only(lora):
            pass

